"""Post-processing of one image's generic queries: semantic, panoptic, instance and part-instance results.

Shape shorthand: Q = generic queries, C = classes, K = object:part classes of a part dataset,
C_o / C_p = object / part vocabulary sizes, H, W = output size. Class logits are raw (sigmoid scores,
no background class); mask logits are raw and already resized to the output frame (upsampled to the
padded input, cropped to the image, resized to the original size). Boxes entering the instance
functions are absolute xyxy in the output frame (see :func:`to_output_boxes`).

The rules are Mask DINO's (SEMANTIC_SPEC §6), with its defaults: object mask threshold 0.25, overlap
threshold 0.8, score transform ``softmax(sigmoid(z) / 0.06)`` on, 100 detections per image. Every
function works on the device of its inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from detectron2.structures import Boxes, Instances
from torch import Tensor

from semantic_sam.utils.box_ops import box_cxcywh_to_xyxy

__all__ = [
    "instance_inference",
    "panoptic_inference",
    "part_instance_inference",
    "semantic_inference",
    "to_output_boxes",
]

BoolVector = Sequence[bool] | Tensor
IndexVector = Sequence[int] | Tensor


def semantic_inference(
    class_logits: Tensor, mask_logits: Tensor, transform_eval: bool = True, temperature: float = 0.06
) -> Tensor:
    """Per-class soft semantic map: ``semseg[c] = sum_q p_qc * sigmoid(m_q)``.

    ``p_q = softmax_c(sigmoid(z_q) / temperature)`` with ``transform_eval``, else ``p_q = sigmoid(z_q)``.
    The argmax over classes is left to the evaluator.

    Args:
        class_logits: (Q, C) raw class logits.
        mask_logits: (Q, H, W) raw mask logits in the output frame.
        transform_eval: apply the temperature softmax to the sigmoid scores.
        temperature: the softmax temperature T (> 0).

    Returns:
        (C, H, W) float32 class scores.
    """
    _check_logits(class_logits, mask_logits)
    _check_temperature(temperature)
    probs = _class_probs(class_logits, transform_eval, temperature)
    return torch.einsum("qc,qhw->chw", probs, mask_logits.float().sigmoid())


def panoptic_inference(
    class_logits: Tensor,
    mask_logits: Tensor,
    is_thing: BoolVector,
    object_mask_threshold: float = 0.25,
    overlap_threshold: float = 0.8,
    transform_eval: bool = True,
    temperature: float = 0.06,
) -> tuple[Tensor, list[dict[str, int | bool]]]:
    """Panoptic segmentation by Mask DINO's rules.

    1. ``(s_q, l_q) = max_c sigmoid(z_q)``; keep the queries with ``s_q > object_mask_threshold``
       (the sigmoid score, before any transform).
    2. With ``transform_eval``, ``s_q = max_c softmax(sigmoid(z_q) / temperature)``; the label stays.
    3. Per pixel, ``id = argmax_q s_q * sigmoid(m_q)`` over the kept queries.
    4. Segment of query k = ``{id = k} and {sigmoid(m_k) >= 0.5}``. It is dropped when it is empty, when
       ``{sigmoid(m_k) >= 0.5}`` is empty, or when ``|id = k| / |sigmoid(m_k) >= 0.5| < overlap_threshold``.
    5. The kept segments of one stuff class merge into one (the first one's id); thing segments stay
       separate. Ids are 1, 2, ... in query order; 0 is void.

    Args:
        class_logits: (Q, C) raw class logits.
        mask_logits: (Q, H, W) raw mask logits in the output frame.
        is_thing: (C,) whether each contiguous class is a thing (else stuff).
        object_mask_threshold: minimum sigmoid class score of a kept query (strict).
        overlap_threshold: minimum ratio of a query's argmax area to its binary-mask area.
        transform_eval: rank the kept queries by the temperature-softmax score.
        temperature: the softmax temperature T (> 0).

    Returns:
        ``(panoptic_seg, segments_info)``: panoptic_seg is an (H, W) int32 tensor of segment ids on the
        device of ``mask_logits`` (0 = void); segments_info lists ``{"id", "category_id", "isthing", "score"}``
        per segment, ``category_id`` being the contiguous class id and ``score`` the sigmoid class score
        of the segment's first query (before the transform). This is the ``panoptic_seg`` pair
        that detectron2's ``COCOPanopticEvaluator`` reads.
    """
    _, num_classes, height, width = _check_logits(class_logits, mask_logits)
    _check_temperature(temperature)
    thing_of_class = _as_bool_list(is_thing, num_classes, "is_thing")

    probs = class_logits.float().sigmoid()
    scores, labels = probs.max(-1)
    class_scores = scores
    keep = scores > object_mask_threshold
    if transform_eval:
        scores = F.softmax(probs / temperature, dim=-1).max(-1).values

    panoptic_seg = torch.zeros((height, width), dtype=torch.int32, device=mask_logits.device)
    if not bool(keep.any()):
        return panoptic_seg, []
    masks = mask_logits[keep].float().sigmoid()  # (N, H, W), N kept queries
    scores, labels, class_scores = scores[keep], labels[keep], class_scores[keep].tolist()
    num_kept = masks.shape[0]

    winner = (scores[:, None, None] * masks).argmax(0)  # (H, W) index into the kept queries
    binary = masks >= 0.5
    in_own_mask = binary.gather(0, winner[None])[0]  # (H, W): sigmoid(m_winner) >= 0.5
    argmax_area = torch.bincount(winner.flatten(), minlength=num_kept).tolist()
    mask_area = binary.flatten(1).sum(1).tolist()
    segment_area = torch.bincount(winner[in_own_mask], minlength=num_kept).tolist()

    # Kept query -> segment id; the pixels of dropped queries' segments become void.
    segment_of_query = [0] * num_kept
    segments_info: list[dict[str, int | bool]] = []
    stuff_segment: dict[int, int] = {}
    for k, label in enumerate(labels.tolist()):
        if argmax_area[k] == 0 or mask_area[k] == 0 or segment_area[k] == 0:
            continue
        if argmax_area[k] / mask_area[k] < overlap_threshold:
            continue
        isthing = thing_of_class[label]
        if not isthing and label in stuff_segment:
            segment_of_query[k] = stuff_segment[label]
            continue
        segment_id = len(segments_info) + 1
        segment_of_query[k] = segment_id
        if not isthing:
            stuff_segment[label] = segment_id
        segments_info.append(
            {"id": segment_id, "category_id": label, "isthing": isthing, "score": float(class_scores[k])}
        )

    lookup = torch.tensor(segment_of_query, dtype=torch.int32, device=panoptic_seg.device)
    panoptic_seg = torch.where(in_own_mask, lookup[winner], panoptic_seg)
    return panoptic_seg, segments_info


def instance_inference(
    class_logits: Tensor,
    mask_logits: Tensor,
    boxes_xyxy: Tensor,
    topk: int = 100,
    keep_classes: BoolVector | None = None,
) -> Instances:
    """Instance segmentation by Mask DINO's rules.

    The Q * C sigmoid scores ``s`` are flattened (query-major: index ``i`` is query ``i // C``, class
    ``i % C``) and the ``topk`` highest are taken, in descending order (ties in index order). Of those,
    the ones whose class is not in ``keep_classes`` are then dropped, so fewer than ``topk`` may remain.
    Each result has mask ``m > 0``, its query's box and score
    ``s * sum(sigmoid(m) * mask) / (sum(mask) + 1e-6)`` (0 for an empty mask).

    Args:
        class_logits: (Q, C) raw class logits.
        mask_logits: (Q, H, W) raw mask logits in the output frame.
        boxes_xyxy: (Q, 4) absolute xyxy boxes in the output frame.
        topk: number of (query, class) pairs taken (at most Q * C).
        keep_classes: (C,) classes that may appear (e.g. the thing classes when panoptic is also on);
            None keeps all.

    Returns:
        ``Instances((H, W))`` with N <= topk entries: ``pred_masks`` (N, H, W) bool, ``pred_boxes``
        ``Boxes`` (N, 4), ``scores`` (N,) float32, ``pred_classes`` (N,) int64 contiguous class ids.
    """
    _check_logits(class_logits, mask_logits)
    return _instances_from_scores(class_logits.float().sigmoid(), mask_logits, boxes_xyxy, topk, keep_classes)


def part_instance_inference(
    object_logits: Tensor,
    part_logits: Tensor,
    mask_logits: Tensor,
    boxes_xyxy: Tensor,
    class_to_object: IndexVector,
    class_to_part: IndexVector,
    topk: int = 100,
) -> Instances:
    """Instance segmentation over the K object:part classes of a part dataset.

    Fusion rule (SEMANTIC_SPEC §6 "Part AP", a design choice: no released code fuses the two heads):
    the score of class k for query q is
    ``sigmoid(z_obj[q, class_to_object[k]]) * sigmoid(z_part[q, class_to_part[k]])``; a class whose part
    is -1 (the object as a whole) scores ``sigmoid(z_obj[q, class_to_object[k]])`` alone. The (Q, K)
    scores then go through the rules of :func:`instance_inference` with C = K.

    Args:
        object_logits: (Q, C_o) raw object logits.
        part_logits: (Q, C_p) raw part logits.
        mask_logits: (Q, H, W) raw mask logits in the output frame.
        boxes_xyxy: (Q, 4) absolute xyxy boxes in the output frame.
        class_to_object: (K,) object index of each dataset class, in [0, C_o).
        class_to_part: (K,) part index of each dataset class, in [0, C_p), or -1 for object only.
        topk: number of (query, class) pairs taken (at most Q * K).

    Returns:
        ``Instances((H, W))`` as :func:`instance_inference`, ``pred_classes`` being dataset class ids k.
    """
    num_queries, num_objects, _, _ = _check_logits(object_logits, mask_logits, "object_logits")
    if part_logits.dim() != 2 or part_logits.shape[0] != num_queries:
        raise ValueError(
            f"part_logits must be (Q, C_p) with Q = {num_queries} (object_logits rows), "
            f"got shape {tuple(part_logits.shape)}"
        )
    device = object_logits.device
    objects = _as_index_tensor(class_to_object, "class_to_object", device)
    parts = _as_index_tensor(class_to_part, "class_to_part", device)
    if objects.numel() == 0 or objects.shape != parts.shape:
        raise ValueError(
            f"class_to_object and class_to_part must be two non-empty (K,) vectors of equal length, got "
            f"shapes {tuple(objects.shape)} and {tuple(parts.shape)}"
        )
    _check_index_range(objects, 0, num_objects, "class_to_object", "C_o")
    _check_index_range(parts, -1, part_logits.shape[1], "class_to_part", "C_p")

    scores = object_logits.float().sigmoid()[:, objects]  # (Q, K)
    has_part = parts >= 0
    part_scores = torch.ones_like(scores)
    part_scores[:, has_part] = part_logits.float().sigmoid()[:, parts[has_part]]
    return _instances_from_scores(scores * part_scores, mask_logits, boxes_xyxy, topk, None)


def to_output_boxes(
    boxes_cxcywh: Tensor,
    padded_size: tuple[int, int],
    image_size: tuple[int, int],
    output_size: tuple[int, int],
) -> Tensor:
    """Normalized boxes of the padded frame -> absolute xyxy boxes of the output frame.

    The padding is at the bottom and right, so a padded-frame pixel is the same image pixel; the image
    (``image_size``, before padding) is then resized to ``output_size``:
    ``x_out = x * W_pad * W_out / W_img`` and ``y_out = y * H_pad * H_out / H_img``. Boxes are not clipped.

    Args:
        boxes_cxcywh: (Q, 4) cxcywh boxes normalized to the padded frame.
        padded_size: (H_pad, W_pad) of the padded network input.
        image_size: (H_img, W_img) of the image inside it.
        output_size: (H_out, W_out) of the output (usually the original image size).

    Returns:
        (Q, 4) float xyxy boxes in output pixels.
    """
    if boxes_cxcywh.dim() != 2 or boxes_cxcywh.shape[1] != 4:
        raise ValueError(f"boxes_cxcywh must be (Q, 4), got shape {tuple(boxes_cxcywh.shape)}")
    pad_h, pad_w = _check_size(padded_size, "padded_size")
    img_h, img_w = _check_size(image_size, "image_size")
    out_h, out_w = _check_size(output_size, "output_size")
    if img_h > pad_h or img_w > pad_w:
        raise ValueError(f"image_size {tuple(image_size)} does not fit in padded_size {tuple(padded_size)}")
    sx = pad_w * out_w / img_w
    sy = pad_h * out_h / img_h
    scale = torch.tensor([sx, sy, sx, sy], dtype=torch.float32, device=boxes_cxcywh.device)
    return box_cxcywh_to_xyxy(boxes_cxcywh.float()) * scale


def _instances_from_scores(
    scores: Tensor, mask_logits: Tensor, boxes_xyxy: Tensor, topk: int, keep_classes: BoolVector | None
) -> Instances:
    """The instance rules on (Q, C) probabilities ``scores`` (see :func:`instance_inference`)."""
    num_queries, num_classes = scores.shape
    height, width = mask_logits.shape[-2:]
    if boxes_xyxy.shape != (num_queries, 4):
        raise ValueError(
            f"boxes_xyxy must be (Q, 4) with Q = {num_queries}, got shape {tuple(boxes_xyxy.shape)}"
        )
    if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
        raise ValueError(f"topk must be a positive int, got {topk!r}")

    flat = scores.flatten()
    order = torch.sort(flat, descending=True, stable=True).indices[: min(topk, flat.numel())]
    top_scores = flat[order]
    classes = order % num_classes
    queries = order // num_classes
    if keep_classes is not None:
        allowed = _as_bool_list(keep_classes, num_classes, "keep_classes")
        keep = torch.tensor(allowed, dtype=torch.bool, device=classes.device)[classes]
        top_scores, classes, queries = top_scores[keep], classes[keep], queries[keep]

    logits = mask_logits[queries].float()
    masks = logits > 0
    mask_scores = (logits.sigmoid() * masks).flatten(1).sum(1) / (masks.flatten(1).sum(1) + 1e-6)
    result = Instances((int(height), int(width)))
    result.pred_masks = masks
    result.pred_boxes = Boxes(boxes_xyxy[queries].float())
    result.scores = top_scores * mask_scores
    result.pred_classes = classes
    return result


def _check_logits(
    class_logits: Tensor, mask_logits: Tensor, name: str = "class_logits"
) -> tuple[int, int, int, int]:
    """Validate (Q, C) class logits against (Q, H, W) mask logits; return (Q, C, H, W)."""
    if class_logits.dim() != 2:
        raise ValueError(f"{name} must be (Q, C), got shape {tuple(class_logits.shape)}")
    if mask_logits.dim() != 3:
        raise ValueError(f"mask_logits must be (Q, H, W), got shape {tuple(mask_logits.shape)}")
    if class_logits.shape[0] != mask_logits.shape[0]:
        raise ValueError(
            f"{name} {tuple(class_logits.shape)} and mask_logits {tuple(mask_logits.shape)} "
            "disagree on the number of queries Q"
        )
    if class_logits.shape[1] == 0:
        raise ValueError(f"{name} has no classes (shape {tuple(class_logits.shape)})")
    num_queries, num_classes = class_logits.shape
    _, height, width = mask_logits.shape
    return num_queries, num_classes, height, width


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")


def _class_probs(class_logits: Tensor, transform_eval: bool, temperature: float) -> Tensor:
    """(Q, C) sigmoid scores, or their temperature softmax over classes with ``transform_eval``."""
    probs = class_logits.float().sigmoid()
    return F.softmax(probs / temperature, dim=-1) if transform_eval else probs


def _as_bool_list(values: BoolVector, length: int, name: str) -> list[bool]:
    flags = values.tolist() if isinstance(values, Tensor) else list(values)
    if len(flags) != length:
        raise ValueError(f"{name} must have one flag per class ({length}), got {len(flags)}")
    return [bool(flag) for flag in flags]


def _as_index_tensor(values: IndexVector, name: str, device: torch.device) -> Tensor:
    indices = torch.as_tensor(values, device=device)
    if indices.dim() != 1 or (indices.numel() > 0 and indices.is_floating_point()):
        raise ValueError(
            f"{name} must be a (K,) vector of ints, got {indices.dtype} shape {tuple(indices.shape)}"
        )
    return indices.long()


def _check_index_range(indices: Tensor, low: int, high: int, name: str, size_name: str) -> None:
    bad = (indices < low) | (indices >= high)
    if bool(bad.any()):
        raise ValueError(
            f"{name} has index {int(indices[bad][0])} outside [{low}, {high}) ({size_name} = {high})"
        )


def _check_size(size: tuple[int, int], name: str) -> tuple[int, int]:
    if len(size) != 2 or any(int(v) <= 0 for v in size):
        raise ValueError(f"{name} must be two positive ints (H, W), got {tuple(size)}")
    return int(size[0]), int(size[1])
