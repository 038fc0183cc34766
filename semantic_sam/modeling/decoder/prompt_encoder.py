"""Prompts (points as tiny boxes, or boxes) -> decoder queries: content, anchors, attention mask.

Shape shorthand: B = images, N = prompts per image, K = tokens per prompt (granularity content
queries), Q = N * K queries, query q = i * K + k is prompt i, token k ("click-major"), C = hidden dim.

Every prompt becomes K queries that share one anchor box (the prompt box, normalized cxcywh of the
padded frame). Query (i, k) has the content ``label_enc[0] + pb_embedding[pb_i] + mask_tokens[k]``
where ``pb`` is the prompt-type flag (the reference trains points with pb = 1 and infers with pb = 0).
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import Tensor, nn

from .layers import inverse_sigmoid

__all__ = [
    "ATTN_MASK_MODES",
    "anchor_queries",
    "block_diagonal_attn_mask",
    "content_queries",
    "noise_anchor_boxes",
    "self_attn_mask",
]

ATTN_MASK_MODES = ("block", "none")


def block_diagonal_attn_mask(num_prompts: int, num_tokens: int, device: Optional[torch.device] = None) -> Tensor:
    """Self-attention mask in which each prompt's K queries attend only to each other.

    Returns:
        (Q, Q) bool, True = may not attend (``nn.MultiheadAttention`` convention).
    """
    owner = torch.arange(num_prompts, device=device).repeat_interleave(num_tokens)
    return owner[:, None] != owner[None, :]


def noise_anchor_boxes(
    boxes: Tensor,
    noise_scale: float,
    num_point_prompts: Union[Sequence[int], Tensor, None] = None,
    point_noise_factor: float = 0.01,
    uniform: Optional[Tensor] = None,
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


def self_attn_mask(
    mode: str, num_prompts: int, num_tokens: int, device: Optional[torch.device] = None
) -> Optional[Tensor]:
    """``"block"`` -> (Q, Q) block-diagonal bool mask (True = blocked); ``"none"`` -> None (all see all)."""
    if mode == "block":
        return block_diagonal_attn_mask(num_prompts, num_tokens, device)
    if mode == "none":
        return None
    raise ValueError(f"attn_mask must be one of {ATTN_MASK_MODES}, got {mode!r}")
