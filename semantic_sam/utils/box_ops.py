"""Box format conversions and (generalized) IoU.

Formats: ``cxcywh`` = (center x, center y, width, height); ``xyxy`` = (x0, y0, x1, y1).
All functions work on the last dimension and keep the leading ones, so they apply to (N, 4),
(B, N, 4), ... alike, and are differentiable.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "box_cxcywh_to_xyxy",
    "box_xyxy_to_cxcywh",
    "box_area",
    "box_iou",
    "generalized_box_iou",
    "masks_to_boxes",
]


def box_cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """(..., 4) cxcywh -> (..., 4) xyxy."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


def box_xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """(..., 4) xyxy -> (..., 4) cxcywh."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1)


def box_area(boxes: Tensor) -> Tensor:
    """(..., 4) xyxy -> (...) areas (negative extents are not clamped)."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-6) -> tuple[Tensor, Tensor]:
    """Pairwise IoU of two sets of xyxy boxes.

    Args:
        boxes1: (N, 4) xyxy.
        boxes2: (M, 4) xyxy.
        eps: added to the union (the reference's 1e-6) so that empty boxes give 0, not NaN.

    Returns:
        ``(iou, union)``, both (N, M).
    """
    area1 = box_area(boxes1)
    area2 = box_area(boxes2)
    lt = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[:, None] + area2[None, :] - inter
    return inter / (union + eps), union


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-6) -> Tensor:
    """Pairwise generalized IoU (Rezatofighi et al. 2019) of xyxy boxes.

    ``GIoU = IoU - (A_c - U) / (A_c + eps)`` with ``A_c`` the area of the smallest enclosing box,
    ``IoU = I / (U + eps)``, as the reference computes it.

    Args:
        boxes1: (N, 4) xyxy.
        boxes2: (M, 4) xyxy.

    Returns:
        (N, M) values in [-1, 1].

    Raises:
        ValueError: if a box has x1 < x0 or y1 < y0 (degenerate boxes give wrong GIoU silently).
    """
    for name, b in (("boxes1", boxes1), ("boxes2", boxes2)):
        if not (b[:, 2:] >= b[:, :2]).all():
            raise ValueError(f"generalized_box_iou: {name} has boxes with x1 < x0 or y1 < y0 (expected xyxy)")
    iou, union = box_iou(boxes1, boxes2, eps)
    lt = torch.min(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.max(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    area_c = wh[..., 0] * wh[..., 1]
    return iou - (area_c - union) / (area_c + eps)


def masks_to_boxes(masks: Tensor) -> Tensor:
    """Tight boxes of binary masks, as detectron2's ``BitMasks.get_bounding_boxes``.

    Args:
        masks: (N, H, W) bool.

    Returns:
        (N, 4) float xyxy pixel boxes ``(x_min, y_min, x_max + 1, y_max + 1)``; all zeros for an empty mask.
    """
    boxes = torch.zeros(masks.shape[0], 4, dtype=torch.float32, device=masks.device)
    x_any = masks.any(dim=1)
    y_any = masks.any(dim=2)
    for i in range(masks.shape[0]):
        xs = torch.where(x_any[i])[0]
        ys = torch.where(y_any[i])[0]
        if len(xs) > 0 and len(ys) > 0:
            boxes[i] = torch.stack([xs[0], ys[0], xs[-1] + 1, ys[-1] + 1]).to(boxes.dtype)
    return boxes
