"""Prompts, the one place: geometry, validation, decoder query content, attention-mask modes.

Shape shorthand: B = images, N = prompts per image, K = tokens per prompt (granularity content
queries), Q = N * K queries, query q = i * K + k is prompt i, token k ("click-major"), C = hidden dim.

Coordinate frames: clicks are pixel (x, y) and boxes pixel xyxy, both in the image frame (H, W);
the decoder takes prompt boxes as cxcywh normalized by the padded frame (Hp, Wp) (training
normalizes by the image frame instead, as the reference; 1024 x 1024 SA-1B crops make the two equal).

Every prompt becomes K queries that share one anchor box (the prompt box). Query (i, k) has the
content ``label_enc[0] + pb_embedding[pb_i] + mask_tokens[k]`` where ``pb`` is the prompt-type flag
(the reference trains points with pb = 1 and infers with pb = 0).

Readers: the training prompt sampler (``semantic_sam.data.prompt_sampling``), the decoder, the
meta-architecture and the predictor. The geometry and validation functions use torch only.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ...utils.box_ops import box_xyxy_to_cxcywh
from .layers import inverse_sigmoid

__all__ = [
    "ATTN_MASK_MODES",
    "CLICK_BOX_HALF_SIZE",
    "DEMO_CLICK_SIZE",
    "POINT_CONVENTIONS",
    "anchor_queries",
    "as_prompt_tensor",
    "block_diagonal_attn_mask",
    "box_to_prompt",
    "check_attn_mask_mode",
    "check_boxes_in_image",
    "check_decoder_prompts",
    "check_pixel_prompts",
    "check_point_convention",
    "check_points_in_image",
    "check_token_indices",
    "click_boxes",
    "content_queries",
    "noise_anchor_boxes",
    "point_to_box",
    "self_attn_mask",
]

# ------------------------------------------------------------------------------------------------
# Constants and modes
# ------------------------------------------------------------------------------------------------
# A click (x, y) becomes the pixel box (x - 3, y - 3, x + 3, y + 3) in the reference's training and
# COCO evaluation ("eval" convention).
CLICK_BOX_HALF_SIZE = 3.0
# The reference's demo, predictor and automatic generation use (x / W, y / H, 0.005, 0.005) ("demo").
DEMO_CLICK_SIZE = 0.005
POINT_CONVENTIONS = ("eval", "demo")
# "block": each prompt's K queries attend only to each other (training, COCO evaluation);
# "none": every query attends to every query (the reference's demo and automatic generation).
ATTN_MASK_MODES = ("block", "none")


def check_attn_mask_mode(mode: str) -> str:
    """Return ``mode`` if it is one of :data:`ATTN_MASK_MODES`, else raise ``ValueError``."""
    if mode not in ATTN_MASK_MODES:
        raise ValueError(f"attn_mask must be one of {ATTN_MASK_MODES}, got {mode!r}")
    return mode


def check_point_convention(convention: str, name: str = "convention") -> str:
    """Return ``convention`` if it is one of :data:`POINT_CONVENTIONS`, else raise ``ValueError``."""
    if convention not in POINT_CONVENTIONS:
        raise ValueError(f"{name} must be one of {POINT_CONVENTIONS}, got {convention!r}")
    return convention


# ------------------------------------------------------------------------------------------------
# Geometry: clicks and boxes -> prompt boxes
# ------------------------------------------------------------------------------------------------
def click_boxes(points_xy: Tensor, image_size: Sequence[int], convention: str = "eval") -> Tensor:
    """Clicks -> prompt boxes, cxcywh normalized by the image (W, H).

    Args:
        points_xy: (N, 2) pixel (x, y) in the image frame (computed in float32).
        image_size: (H, W).
        convention: ``"eval"``: the 6-pixel box (x-3, y-3, x+3, y+3), i.e. (x/W, y/H, 6/W, 6/H), as the
            reference's training and COCO evaluation; ``"demo"``: (x/W, y/H, 0.005, 0.005), as its demo,
            predictor and automatic mask generation.

    Returns:
        (N, 4) float32.
    """
    if points_xy.dim() != 2 or points_xy.shape[-1] != 2:
        raise ValueError(f"points_xy must be (N, 2) (x, y), got shape {tuple(points_xy.shape)}")
    check_point_convention(convention)
    h, w = (float(s) for s in image_size)
    pts = points_xy.float()
    whwh = pts.new_tensor([w, h, w, h])
    if convention == "eval":
        r = CLICK_BOX_HALF_SIZE
        return box_xyxy_to_cxcywh(torch.cat([pts - r, pts + r], dim=-1)) / whwh
    size = pts.new_full((pts.shape[0], 2), DEMO_CLICK_SIZE)
    return torch.cat([pts / whwh[:2], size], dim=-1)


def point_to_box(
    points_xy: Tensor, image_size: Sequence[int], padded_size: Sequence[int], convention: str = "eval"
) -> Tensor:
    """Clicks -> prompt boxes, cxcywh normalized to the padded frame (see :func:`click_boxes`).

    Args:
        points_xy: (N, 2) pixel (x, y) in the image frame.
        image_size: (H, W).
        padded_size: (Hp, Wp).
        convention: ``"eval"`` or ``"demo"``.

    Returns:
        (N, 4) cxcywh normalized by (Wp, Hp), float32.
    """
    boxes = click_boxes(points_xy, image_size, convention)
    h, w = (float(s) for s in image_size)
    hp, wp = (float(s) for s in padded_size)
    return boxes * boxes.new_tensor([w, h, w, h]) / boxes.new_tensor([wp, hp, wp, hp])


def box_to_prompt(boxes_xyxy: Tensor, frame_size: Sequence[int]) -> Tensor:
    """(M, 4) xyxy pixel boxes -> (M, 4) float32 cxcywh normalized by the frame (W, H).

    ``frame_size`` is (Hp, Wp) for the decoder's prompts, (H, W) for the training GT boxes.
    """
    h, w = (float(s) for s in frame_size)
    b = boxes_xyxy.float()
    return box_xyxy_to_cxcywh(b) / b.new_tensor([w, h, w, h])


# ------------------------------------------------------------------------------------------------
# Validation of user prompts (pixel frame) and of decoder prompts (normalized)
# ------------------------------------------------------------------------------------------------
def as_prompt_tensor(value: Any, width: int, name: str, expected: str) -> Tensor:
    """Pixel prompts (None, a tensor or nested sequence) -> a finite (P, width) float32 tensor.

    None or an empty value gives (0, width). Raises ``TypeError`` for non-numeric data and
    ``ValueError`` for another shape or NaN / infinite values; ``expected`` describes the shape.
    """
    if value is None:
        return torch.zeros(0, width)
    t = torch.as_tensor(value) if not torch.is_tensor(value) else value
    integer = t.dtype in (torch.int16, torch.int32, torch.int64, torch.uint8)
    if t.dtype == torch.bool or not (t.is_floating_point() or integer):
        raise TypeError(f"{name} must be a numeric tensor {expected}, got dtype {t.dtype}")
    if t.numel() == 0:
        return torch.zeros(0, width)
    if t.dim() != 2 or t.shape[1] != width:
        raise ValueError(f"{name} must have shape {expected}, got {tuple(t.shape)}")
    t = t.float()
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return t


def check_points_in_image(points: Tensor, image_size: Sequence[int], prefix: str = "") -> None:
    """Raise ``ValueError`` unless every (x, y) of (P, 2) ``points`` is finite and in [0, W] x [0, H]."""
    h, w = (int(s) for s in image_size)
    x, y = points[:, 0], points[:, 1]
    bad = ~torch.isfinite(points).all(1) | (x < 0) | (x > w) | (y < 0) | (y > h)
    if bad.any():
        j = int(bad.nonzero()[0])
        raise ValueError(
            f"{prefix}point {j} (x={float(x[j]):g}, y={float(y[j]):g}) is outside the image "
            f"(width {w}, height {h}); points are pixel (x, y) in the image frame"
        )


def check_boxes_in_image(
    boxes: Tensor, image_size: Sequence[int], prefix: str = "", allow_degenerate: bool = True
) -> None:
    """Raise ``ValueError`` unless every row of (M, 4) ``boxes`` is a finite xyxy box inside the image.

    ``allow_degenerate``: accept x0 == x1 or y0 == y1 (the model accepts such boxes, e.g. annotation
    boxes in evaluation; the predictor refuses them as a user error).
    """
    h, w = (int(s) for s in image_size)
    x0, y0, x1, y1 = boxes.unbind(-1)
    if allow_degenerate:
        op, ordered = "<=", (x0 <= x1) & (y0 <= y1)
    else:
        op, ordered = "<", (x0 < x1) & (y0 < y1)
    bad = ~torch.isfinite(boxes).all(1) | ~ordered
    if bad.any():
        j = int(bad.nonzero()[0])
        raise ValueError(f"{prefix}box {j} {boxes[j].tolist()} must be xyxy with x0 {op} x1 and y0 {op} y1")
    bad = (x0 < 0) | (y0 < 0) | (x1 > w) | (y1 > h)
    if bad.any():
        j = int(bad.nonzero()[0])
        raise ValueError(f"{prefix}box {j} {boxes[j].tolist()} is outside the image (width {w}, height {h})")


def check_pixel_prompts(
    points: Any, boxes: Any, image_size: Sequence[int], prefix: str = ""
) -> tuple[Tensor, Tensor]:
    """Validate one image's clicks and boxes (pixel frame) for the model.

    Args:
        points: (P, 2) pixel (x, y), or None.
        boxes: (M, 4) pixel xyxy, or None; P + M > 0.
        image_size: (H, W).
        prefix: prepended to error messages (e.g. ``"input 3: "``).

    Returns:
        (points (P, 2), boxes (M, 4)) float32 tensors.
    """
    points = as_prompt_tensor(points, 2, f"{prefix}points", "(P, 2) pixel (x, y)")
    boxes = as_prompt_tensor(boxes, 4, f"{prefix}boxes", "(M, 4) pixel xyxy")
    if points.shape[0] + boxes.shape[0] == 0:
        raise ValueError(f"{prefix}no prompts: give 'points' (P, 2) and/or 'boxes' (M, 4)")
    check_points_in_image(points, image_size, prefix)
    check_boxes_in_image(boxes, image_size, prefix)
    return points, boxes


def check_token_indices(tokens: Sequence[int] | None, num_tokens: int, name: str = "tokens") -> list[int]:
    """Token indices into a prompt's K outputs (None = all K in order), checked to lie in [0, K)."""
    if tokens is None:
        return list(range(num_tokens))
    if torch.is_tensor(tokens):
        tokens = tokens.tolist()
    tokens = list(tokens)
    if len(tokens) == 0:
        raise ValueError(f"{name} must name at least one token index")
    for t in tokens:
        if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < num_tokens:
            raise ValueError(f"{name} must be token indices in [0, {num_tokens}), got {tokens}")
    return tokens


def check_decoder_prompts(boxes: Tensor, pb: Tensor) -> None:
    """Check the decoder's prompts: (B, N, 4) floating-point boxes with N >= 1 and (B, N) flags ``pb``."""
    if not torch.is_tensor(boxes) or boxes.dim() != 3 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must be a (B, N, 4) tensor, got {getattr(boxes, 'shape', type(boxes))}")
    if not boxes.is_floating_point():
        raise TypeError(f"boxes must be floating point (normalized cxcywh), got {boxes.dtype}")
    if boxes.shape[1] == 0:
        raise ValueError("boxes: at least one prompt per image is required (N = 0)")
    if not torch.is_tensor(pb) or pb.shape != boxes.shape[:2]:
        raise ValueError(
            f"pb must be a (B, N) = {tuple(boxes.shape[:2])} tensor, got {getattr(pb, 'shape', type(pb))}"
        )


# ------------------------------------------------------------------------------------------------
# Decoder queries: content, anchors, training jitter, self-attention mask
# ------------------------------------------------------------------------------------------------
def block_diagonal_attn_mask(num_prompts: int, num_tokens: int, device: torch.device | None = None) -> Tensor:
    """Self-attention mask in which each prompt's K queries attend only to each other.

    Returns:
        (Q, Q) bool, True = may not attend (``nn.MultiheadAttention`` convention).
    """
    owner = torch.arange(num_prompts, device=device).repeat_interleave(num_tokens)
    return owner[:, None] != owner[None, :]


def self_attn_mask(
    mode: str, num_prompts: int, num_tokens: int, device: torch.device | None = None
) -> Tensor | None:
    """``"block"`` -> (Q, Q) block-diagonal bool mask (True = blocked); ``"none"`` -> None (all see all)."""
    if check_attn_mask_mode(mode) == "block":
        return block_diagonal_attn_mask(num_prompts, num_tokens, device)
    return None


def noise_anchor_boxes(
    boxes: Tensor,
    noise_scale: float,
    num_point_prompts: Sequence[int] | Tensor | None = None,
    point_noise_factor: float = 0.01,
    uniform: Tensor | None = None,
) -> Tensor:
    """DN-style jitter of prompt boxes (training only in the reference).

    ``box + (2u - 1) * diff * noise_scale`` clamped to [0, 1], where ``diff = (w/2, h/2, w, h)`` and, for
    point prompts (the first ``num_point_prompts[b]`` of image b), ``diff`` is multiplied by
    ``point_noise_factor`` (0.01 in the reference, i.e. far below a pixel).

    Args:
        boxes: (B, N, 4) cxcywh normalized.
        noise_scale: ``MODEL.DECODER.DN_NOISE_SCALE`` (0.4).
        num_point_prompts: per image, how many leading prompts are points; None = all of them.
        point_noise_factor: scale of the jitter of point prompts.
        uniform: (B, N, 4) draws in [0, 1) to use instead of ``torch.rand_like(boxes)``.

    Returns:
        (B, N, 4) jittered boxes.
    """
    b, n, _ = boxes.shape
    diff = torch.cat([boxes[..., 2:] / 2, boxes[..., 2:]], dim=-1)
    if num_point_prompts is None:
        num_point_prompts = [n] * b
    is_point = torch.arange(n, device=boxes.device)[None, :] < torch.as_tensor(
        list(num_point_prompts) if not isinstance(num_point_prompts, Tensor) else num_point_prompts,
        device=boxes.device,
    ).view(b, 1)
    diff = torch.where(is_point[..., None], diff * point_noise_factor, diff)
    if uniform is None:
        uniform = torch.rand_like(boxes)
    elif uniform.shape != boxes.shape:
        raise ValueError(f"uniform noise must have the boxes' shape {tuple(boxes.shape)}, got {tuple(uniform.shape)}")
    noised = boxes + torch.mul(uniform * 2 - 1.0, diff) * noise_scale
    return noised.clamp(min=0.0, max=1.0)


def content_queries(
    label_enc: nn.Embedding, pb_embedding: nn.Embedding, mask_tokens: nn.Embedding, pb: Tensor
) -> Tensor:
    """Content query of prompt i, token k: ``label_enc[0] + mask_tokens[k] + pb_embedding[pb_i]``.

    Args:
        label_enc, pb_embedding, mask_tokens: the decoder's embeddings (C columns; K = mask tokens).
        pb: (B, N) prompt-type flags (0 or 1; float or integer).

    Returns:
        (B, N * K, C), click-major.
    """
    if pb.dim() != 2:
        raise ValueError(f"pb must be (B, N), got shape {tuple(pb.shape)}")
    b, n = pb.shape
    k = mask_tokens.weight.shape[0]
    labels = torch.zeros(b, n, dtype=torch.long, device=pb.device)
    content = label_enc(labels).repeat_interleave(k, dim=1)
    content = content + mask_tokens.weight[None].repeat(1, n, 1)
    return content + pb_embedding(pb.long()).repeat_interleave(k, dim=1)


def anchor_queries(boxes: Tensor, num_tokens: int) -> Tensor:
    """(B, N, 4) cxcywh normalized -> (B, N * K, 4) anchors before the sigmoid, shared by a prompt's K queries."""
    return inverse_sigmoid(boxes).repeat_interleave(num_tokens, dim=1)
