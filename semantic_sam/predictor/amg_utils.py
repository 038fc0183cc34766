"""Mask, RLE, point-grid and crop utilities for the automatic mask generator and the predictor.

Conventions (the same as SAM's records, so that tools written for SAM read ours):

* masks are boolean (N, H, W) arrays or tensors;
* boxes are ``xyxy`` pixel boxes whose ``x1, y1`` are the *last* covered column/row (inclusive),
  and record boxes are ``xywh`` = (x0, y0, x1 - x0, y1 - y0);
* ``coco_rle`` = pycocotools' compressed RLE ``{"size": [H, W], "counts": str}``;
  ``uncompressed_rle`` = ``{"size": [H, W], "counts": [int, ...]}``, run lengths in column-major
  order starting with a run of zeros (what ``pycocotools.mask.frPyObjects`` accepts);
* point grids are normalized (x, y) in [0, 1], at the centres of an n x n cell grid.
"""
from __future__ import annotations

import itertools
import math
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from pycocotools import mask as mask_utils
from torch import Tensor

__all__ = [
    "MaskData",
    "area_from_rle",
    "batch_iterator",
    "batched_mask_to_box",
    "box_xyxy_to_xywh",
    "boxes_from_rles",
    "build_all_layer_point_grids",
    "build_point_grid",
    "calculate_stability_score",
    "coco_rle_to_mask",
    "generate_crop_boxes",
    "is_box_near_crop_edge",
    "mask_iou",
    "masks_to_coco_rle",
    "remove_small_regions",
    "rle_to_uncompressed",
    "uncompressed_rle_to_coco",
    "uncrop_boxes_xyxy",
    "uncrop_masks",
    "uncrop_points",
]


class MaskData:
    """Columns of per-mask values (tensors, arrays or lists) that are filtered and concatenated together.

    >>> d = MaskData(iou=torch.tensor([0.9, 0.1]), rles=["a", "b"])
    >>> d.filter(d["iou"] > 0.5); d["rles"]
    ['a']
    """

    def __init__(self, **columns: Any) -> None:
        self._columns: dict[str, Any] = {}
        for k, v in columns.items():
            self[k] = v

    def __setitem__(self, key: str, value: Any) -> None:
        if not isinstance(value, (list, np.ndarray, Tensor)):
            raise TypeError(f"MaskData column {key!r} must be a list, numpy array or tensor, got {type(value)}")
        self._columns[key] = value

    def __getitem__(self, key: str) -> Any:
        return self._columns[key]

    def __delitem__(self, key: str) -> None:
        del self._columns[key]

    def __contains__(self, key: str) -> bool:
        return key in self._columns

    def keys(self):
        return self._columns.keys()

    def __len__(self) -> int:
        for v in self._columns.values():
            return len(v)
        return 0

    def filter(self, keep: Tensor | np.ndarray | Sequence[int]) -> None:
        """Keep the rows selected by ``keep`` (bool mask or indices) in every column, in place."""
        keep_t = torch.as_tensor(keep)
        if keep_t.dtype == torch.bool:
            idx = torch.nonzero(keep_t.cpu(), as_tuple=False).flatten()
        else:
            idx = keep_t.cpu().long().flatten()
        for k, v in self._columns.items():
            if isinstance(v, Tensor):
                self._columns[k] = v[idx.to(v.device)]
            elif isinstance(v, np.ndarray):
                self._columns[k] = v[idx.numpy()]
            else:
                self._columns[k] = [v[i] for i in idx.tolist()]

    def cat(self, other: "MaskData") -> None:
        """Append the rows of ``other``; both must have the same columns (or ``self`` be empty)."""
        if not self._columns:
            self._columns = dict(other._columns)
            return
        if set(self._columns) != set(other._columns):
            raise KeyError(f"MaskData.cat: columns differ: {sorted(self._columns)} vs {sorted(other._columns)}")
        for k, v in other._columns.items():
            mine = self._columns[k]
            if isinstance(v, Tensor):
                self._columns[k] = torch.cat([mine, v.to(mine.device)], dim=0)
            elif isinstance(v, np.ndarray):
                self._columns[k] = np.concatenate([mine, v], axis=0)
            else:
                self._columns[k] = list(mine) + list(v)

    def to_numpy(self) -> None:
        """Convert every tensor column to a numpy array, in place."""
        for k, v in self._columns.items():
            if isinstance(v, Tensor):
                self._columns[k] = v.detach().cpu().numpy()


def batch_iterator(batch_size: int, *arrays: Sequence) -> Iterator[list]:
    """Yield ``[a[i:i+batch_size] for a in arrays]`` over equally long sequences."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError("batch_iterator: all inputs must have the same length")
    for start in range(0, n, batch_size):
        yield [a[start : start + batch_size] for a in arrays]


# ---------------------------------------------------------------- point grids and crops


def build_point_grid(n_per_side: int) -> np.ndarray:
    """(n*n, 2) normalized (x, y) points at the cell centres of an n x n grid, rows (y) outer, x inner."""
    if n_per_side < 1:
        raise ValueError(f"points_per_side must be >= 1, got {n_per_side}")
    centres = (np.arange(n_per_side, dtype=np.float64) + 0.5) / n_per_side
    ys, xs = np.meshgrid(centres, centres, indexing="ij")
    return np.stack([xs.reshape(-1), ys.reshape(-1)], axis=1)


def build_all_layer_point_grids(n_per_side: int, n_layers: int, scale_per_layer: int) -> list[np.ndarray]:
    """Point grids for crop layers 0..n_layers; layer i has ``int(n_per_side / scale_per_layer**i)`` points per side."""
    return [build_point_grid(max(1, int(n_per_side / scale_per_layer**i))) for i in range(n_layers + 1)]


def generate_crop_boxes(
    im_size: tuple[int, int], n_layers: int, overlap_ratio: float
) -> tuple[list[list[int]], list[int]]:
    """Crop boxes (xyxy, pixels) and their layer indices: layer 0 is the whole image, layer i > 0 is a
    (2^i x 2^i) grid of overlapping crops whose overlap is ``overlap_ratio * min(H, W) * 2 / 2^i`` pixels.

    Args:
        im_size: (H, W) of the image.
    """
    im_h, im_w = im_size
    boxes: list[list[int]] = [[0, 0, im_w, im_h]]
    layers = [0]
    short = min(im_h, im_w)
    for layer in range(1, n_layers + 1):
        n = 2**layer
        overlap = int(overlap_ratio * short * (2 / n))
        crop_w = math.ceil((overlap * (n - 1) + im_w) / n)
        crop_h = math.ceil((overlap * (n - 1) + im_h) / n)
        x0s = [int((crop_w - overlap) * i) for i in range(n)]
        y0s = [int((crop_h - overlap) * i) for i in range(n)]
        for x0, y0 in itertools.product(x0s, y0s):
            boxes.append([x0, y0, min(x0 + crop_w, im_w), min(y0 + crop_h, im_h)])
            layers.append(layer)
    return boxes, layers


def uncrop_boxes_xyxy(boxes: Tensor, crop_box: Sequence[int]) -> Tensor:
    """Shift (N, 4) xyxy boxes from crop coordinates to image coordinates."""
    x0, y0 = crop_box[0], crop_box[1]
    return boxes + torch.tensor([x0, y0, x0, y0], dtype=boxes.dtype, device=boxes.device)


def uncrop_points(points: Tensor, crop_box: Sequence[int]) -> Tensor:
    """Shift (N, 2) xy points from crop coordinates to image coordinates."""
    return points + torch.tensor([crop_box[0], crop_box[1]], dtype=points.dtype, device=points.device)


def uncrop_masks(masks: Tensor, crop_box: Sequence[int], orig_h: int, orig_w: int) -> Tensor:
    """Zero-pad (N, h, w) crop masks into (N, orig_h, orig_w) image masks."""
    x0, y0, x1, y1 = crop_box
    if x0 == 0 and y0 == 0 and x1 == orig_w and y1 == orig_h:
        return masks
    pad = (x0, orig_w - x1, y0, orig_h - y1)  # left, right, top, bottom
    return torch.nn.functional.pad(masks, pad, value=0)


def is_box_near_crop_edge(
    boxes: Tensor, crop_box: Sequence[int], orig_box: Sequence[int], atol: float = 20.0
) -> Tensor:
    """(N,) bool: the crop-frame xyxy box lies within ``atol`` pixels of a crop edge that is not an image edge."""
    crop_t = torch.as_tensor(crop_box, dtype=torch.float, device=boxes.device)
    orig_t = torch.as_tensor(orig_box, dtype=torch.float, device=boxes.device)
    b = uncrop_boxes_xyxy(boxes, crop_box).float()
    near_crop = torch.isclose(b, crop_t[None, :], atol=atol, rtol=0)
    near_image = torch.isclose(b, orig_t[None, :], atol=atol, rtol=0)
    return (near_crop & ~near_image).any(dim=1)


# ---------------------------------------------------------------- mask statistics


def calculate_stability_score(logits: Tensor, mask_threshold: float, offset: float) -> Tensor:
    """IoU between the masks binarized at ``threshold + offset`` and at ``threshold - offset``.

    Args:
        logits: (N, ...) mask logits.
    Returns:
        (N,) float scores; 0 for a mask that is empty at the lower cutoff.
    """
    flat = logits.flatten(1)
    inter = (flat > (mask_threshold + offset)).sum(1, dtype=torch.int64)
    union = (flat > (mask_threshold - offset)).sum(1, dtype=torch.int64)
    return torch.where(union > 0, inter.float() / union.clamp(min=1).float(), torch.zeros_like(inter, dtype=torch.float))


def batched_mask_to_box(masks: Tensor) -> Tensor:
    """(..., H, W) bool masks -> (..., 4) xyxy boxes with inclusive max corner; [0, 0, 0, 0] for empty masks."""
    if masks.numel() == 0:
        return torch.zeros(*masks.shape[:-2], 4, device=masks.device, dtype=torch.long)
    h, w = masks.shape[-2:]
    rows = masks.any(dim=-1)  # (..., H)
    cols = masks.any(dim=-2)  # (..., W)
    ar_h = torch.arange(h, device=masks.device)
    ar_w = torch.arange(w, device=masks.device)
    y1 = torch.where(rows, ar_h, -1).amax(dim=-1)
    y0 = torch.where(rows, ar_h, h).amin(dim=-1)
    x1 = torch.where(cols, ar_w, -1).amax(dim=-1)
    x0 = torch.where(cols, ar_w, w).amin(dim=-1)
    boxes = torch.stack([x0, y0, x1, y1], dim=-1)
    empty = ~rows.any(dim=-1)
    return torch.where(empty[..., None], torch.zeros_like(boxes), boxes)


def box_xyxy_to_xywh(box: Tensor | np.ndarray) -> Tensor | np.ndarray:
    """(..., 4) inclusive xyxy -> (..., 4) xywh with w = x1 - x0 (SAM's record convention)."""
    out = box.clone() if isinstance(box, Tensor) else np.array(box, copy=True)
    out[..., 2] = out[..., 2] - out[..., 0]
    out[..., 3] = out[..., 3] - out[..., 1]
    return out


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean (H, W) masks (0 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def remove_small_regions(mask: np.ndarray, area_thresh: float, mode: str) -> tuple[np.ndarray, bool]:
    """Fill holes (``mode="holes"``) or delete islands (``mode="islands"``) smaller than ``area_thresh`` pixels.

    Connectivity is 8. When every island is small, the largest one is kept. Returns the mask and
    whether it changed. The work is done on the mask's bounding box plus a 1-pixel ring, which gives
    the same result as on the whole image (see :func:`_small_regions_in_box`).
    """
    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}")
    mask = np.asarray(mask, dtype=bool)
    rows = np.flatnonzero(mask.any(axis=1))
    if len(rows) == 0:
        return _small_regions_full(mask, area_thresh, mode)
    cols = np.flatnonzero(mask.any(axis=0))
    return _small_regions_in_box(mask, area_thresh, mode, (cols[0], rows[0], cols[-1], rows[-1]))


def _small_regions_full(mask: np.ndarray, area_thresh: float, mode: str) -> tuple[np.ndarray, bool]:
    """:func:`remove_small_regions` on the whole image."""
    import cv2

    fill_holes = mode == "holes"
    work = (mask ^ fill_holes).astype(np.uint8)  # holes: background becomes foreground
    n_labels, labels, stats, _ = cv2.connectedComponentsWithStats(work, connectivity=8)
    sizes = stats[1:, cv2.CC_STAT_AREA]
    small = np.nonzero(sizes < area_thresh)[0] + 1
    if len(small) == 0:
        return mask, False
    if fill_holes:
        # pixels of small background components become foreground
        return mask | np.isin(labels, small), True
    keep = np.setdiff1d(np.arange(1, n_labels), small)
    if len(keep) == 0:
        keep = np.array([int(np.argmax(sizes)) + 1])
    return np.isin(labels, keep), True


def _small_regions_in_box(
    mask: np.ndarray, area_thresh: float, mode: str, box: tuple[int, int, int, int]
) -> tuple[np.ndarray, bool]:
    """:func:`remove_small_regions` computed inside ``box`` (inclusive xyxy of the mask) plus a ring.

    Islands lie inside the box, so their components are exact there. A background component that
    does not reach the ring around the box is enclosed by it, so its area is exact too. One that
    reaches the ring belongs to a component of the whole image containing at least one full strip
    of the image outside the box (above, below, left or right of it): if the smallest such strip
    has ``area_thresh`` pixels or more, that component is never small. Otherwise the whole image is
    processed.
    """
    import cv2

    h, w = mask.shape
    x0, y0, x1, y1 = (int(v) for v in box)
    fill_holes = mode == "holes"
    if fill_holes:
        strips = [a for a in (y0 * w, (h - 1 - y1) * w, x0 * h, (w - 1 - x1) * h) if a > 0]
        if strips and min(strips) < area_thresh:
            return _small_regions_full(mask, area_thresh, mode)
    cy0, cx0, cy1, cx1 = max(0, y0 - 1), max(0, x0 - 1), min(h, y1 + 2), min(w, x1 + 2)
    crop = mask[cy0:cy1, cx0:cx1]
    work = (crop ^ fill_holes).astype(np.uint8)
    n_labels, labels, stats, _ = cv2.connectedComponentsWithStats(work, connectivity=8)
    sizes = stats[1:, cv2.CC_STAT_AREA]
    small = np.nonzero(sizes < area_thresh)[0] + 1
    if fill_holes and len(small):
        inner = np.zeros(crop.shape, dtype=bool)
        inner[y0 - cy0 : y1 - cy0 + 1, x0 - cx0 : x1 - cx0 + 1] = True
        outside_labels = np.unique(labels[~inner])
        small = np.setdiff1d(small, outside_labels)
    if len(small) == 0:
        return mask, False
    out = mask.copy()
    if fill_holes:
        out[cy0:cy1, cx0:cx1] |= np.isin(labels, small)
        return out, True
    keep = np.setdiff1d(np.arange(1, n_labels), small)
    if len(keep) == 0:
        keep = np.array([int(np.argmax(sizes)) + 1])
    out[cy0:cy1, cx0:cx1] = np.isin(labels, keep)
    return out, True


# ---------------------------------------------------------------- run-length encoding


def masks_to_coco_rle(masks: Tensor | np.ndarray, transposed: bool = False) -> list[dict]:
    """(N, H, W) bool masks -> N pycocotools compressed RLEs ``{"size": [H, W], "counts": str}``.

    With ``transposed=True`` the input is (N, W, H), each mask transposed: that is the column-major
    layout pycocotools reads, so no copy is made when it is contiguous.
    """
    m = masks.detach().cpu().numpy() if isinstance(masks, Tensor) else np.asarray(masks)
    if m.ndim != 3:
        raise ValueError(f"masks must be (N, H, W), got shape {m.shape}")
    m = m.view(np.uint8) if m.dtype == bool else m.astype(np.uint8)
    rles = []
    for mask in m:
        column_major = mask.T if transposed else np.asfortranarray(mask)  # (H, W), Fortran order
        rle = mask_utils.encode(np.asfortranarray(column_major))
        rle["counts"] = rle["counts"].decode("ascii")
        rles.append(rle)
    return rles


def boxes_from_rles(rles: Sequence[dict]) -> Tensor:
    """(N, 4) inclusive xyxy boxes of RLE masks (SAM's convention; [0, 0, 0, 0] for empty masks)."""
    if len(rles) == 0:
        return torch.zeros(0, 4, dtype=torch.long)
    xywh = torch.from_numpy(mask_utils.toBbox([_as_pycoco(r) for r in rles])).long().reshape(-1, 4)
    boxes = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:] - 1], dim=1)
    empty = (xywh[:, 2] == 0) | (xywh[:, 3] == 0)
    return torch.where(empty[:, None], torch.zeros_like(boxes), boxes)


def _as_pycoco(rle: dict) -> dict:
    counts = rle["counts"]
    if isinstance(counts, list):
        return uncompressed_rle_to_coco(rle)
    if isinstance(counts, str):
        return {"size": list(rle["size"]), "counts": counts.encode("ascii")}
    return rle


def coco_rle_to_mask(rle: dict) -> np.ndarray:
    """Compressed or uncompressed RLE -> (H, W) bool mask."""
    return mask_utils.decode(_as_pycoco(rle)).astype(bool)


def area_from_rle(rle: dict) -> int:
    """Number of foreground pixels of a compressed or uncompressed RLE."""
    if isinstance(rle["counts"], list):
        return int(sum(rle["counts"][1::2]))
    return int(mask_utils.area(_as_pycoco(rle)))


def rle_to_uncompressed(rle: dict) -> dict:
    """Compressed RLE -> ``{"size": [H, W], "counts": [run lengths]}`` (column-major, starting with zeros)."""
    mask = coco_rle_to_mask(rle)
    h, w = mask.shape
    flat = mask.T.reshape(-1)
    change = np.nonzero(flat[1:] != flat[:-1])[0] + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    return {"size": [h, w], "counts": counts}


def uncompressed_rle_to_coco(rle: dict) -> dict:
    """Uncompressed RLE -> pycocotools compressed RLE (``counts`` as bytes)."""
    h, w = rle["size"]
    return mask_utils.frPyObjects({"size": [h, w], "counts": list(rle["counts"])}, h, w)
