"""Generic queries (Mask DINO / OpenSeeD): two-stage query selection, denoising queries and their decoding.

Shape shorthand: B = images, S = memory tokens (all feature levels, coarsest first), C = hidden dim,
D = text-embedding dim, Q = generic queries (``NUM_OBJECT_QUERIES``, 300), G = denoising groups, m = the largest
GT count of the batch, P = G * m denoising queries, C_o / C_p = object / part classes, L = decoder layers,
h, w = the mask-feature size (1/4 of the padded image). Boxes are cxcywh normalized to the padded frame.

The generic queries run in their own pass of the shared decoder (the interactive queries' pass is unchanged,
so a model with generic queries gives the interactive outputs of a model without them; SEMANTIC_SPEC §9 G2):

1. **Selection** (§5.2): ``mem' = enc_output_norm(enc_output(memory))``; each token gets a proposal box (its
   cell's centre, side ``0.05 * 2 ** feature_level`` in memory order; tokens whose proposal leaves (0.01, 0.99)
   are invalid and their ``mem'`` is zeroed); tokens are scored by the object head *without* ``decoder_norm``
   (max over classes, and over parts on part data) and the top Q are kept: content ``mem'`` and anchor
   ``_bbox_embed(mem') + proposal``, both detached. The heads on the undetached selection are the
   ``interm_outputs``.
2. **Denoising** (training, §5.3): G = DN_NUM // m groups, each a noised copy of every GT box (each coordinate
   jittered by U(-1, 1) * (w/2, h/2, w, h) * noise_scale, clamped to [0, 1]) with content
   ``(T_object[o] (+ T_part[p])) @ lang_mapper``; queries ``[P denoising | Q generic]``, generic rows do not see
   denoising rows and a group does not see the other groups.
3. **Decoding**: the heads run on the initial content (the initial prediction, boxes = the anchors) and on every
   layer's output: L + 1 output sets, the last one the final output.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import torch
from torch import Tensor, nn

from .layers import inverse_sigmoid

__all__ = [
    "denoising_queries",
    "encoder_output_proposals",
    "generic_heads",
    "generic_self_attn_mask",
    "select_queries",
]

_PROPOSAL_LOW, _PROPOSAL_HIGH = 0.01, 0.99


def encoder_output_proposals(memory: Tensor, spatial_shapes: Tensor) -> tuple[Tensor, Tensor]:
    """One proposal box per memory token, and the memory with invalid tokens zeroed.

    Args:
        memory: (B, S, C) flattened memory, feature levels in the order of ``spatial_shapes``.
        spatial_shapes: (L_f, 2) int64 (H, W) of each feature level.

    Returns:
        ``(memory (B, S, C), proposals (B, S, 4))``: proposals unsigmoided (``log(p / (1 - p))``), +inf where
        any coordinate is outside (0.01, 0.99); the memory is zero at those tokens.
    """
    b = memory.shape[0]
    boxes = []
    for feature_level, (h, w) in enumerate(spatial_shapes.tolist()):
        ys, xs = torch.meshgrid(
            torch.arange(h, dtype=torch.float32, device=memory.device),
            torch.arange(w, dtype=torch.float32, device=memory.device),
            indexing="ij",
        )
        centre = torch.stack([(xs.flatten() + 0.5) / w, (ys.flatten() + 0.5) / h], dim=-1)
        side = torch.full_like(centre, 0.05 * 2.0**feature_level)
        boxes.append(torch.cat([centre, side], dim=-1))
    proposals = torch.cat(boxes)[None].expand(b, -1, -1)
    valid = ((proposals > _PROPOSAL_LOW) & (proposals < _PROPOSAL_HIGH)).all(-1, keepdim=True)
    proposals = torch.log(proposals / (1 - proposals)).masked_fill(~valid, float("inf"))
    return memory.masked_fill(~valid, 0.0), proposals


def generic_heads(
    decoder: nn.Module,
    queries: Tensor,
    reference: Tensor,
    mask_features: Tensor,
    class_embeddings: Mapping[str, Tensor],
    box_from_reference: bool = False,
) -> dict[str, Tensor]:
    """Class logits, masks and boxes of generic (or denoising) queries.

    Args:
        decoder: the :class:`~.interactive_decoder.InteractiveDecoder` (its ``decoder_norm``, ``mask_embed``,
            ``_bbox_embed`` and :meth:`class_logits`).
        queries: (B, N, C) outputs (a layer's normed output, or the initial content).
        reference: (B, N, 4) sigmoid anchors the queries were decoded from.
        mask_features: (B, C_mask, h, w).
        class_embeddings: ``{"object": (C_o, D), "part": (C_p, D)}``.
        box_from_reference: the boxes are the anchors themselves (the initial prediction and the two-stage
            selection) instead of the box head's refinement of them.

    Returns:
        ``pred_logits`` (B, N, C_o), ``pred_logits_part`` (B, N, C_p) with parts, ``pred_masks`` (B, N, h, w),
        ``pred_boxes`` (B, N, 4).
    """
    out = decoder.decoder_norm(queries)
    masks = torch.einsum("bqc,bchw->bqhw", decoder.mask_embed(out), mask_features)
    if box_from_reference:
        boxes = reference
    else:
        boxes = (decoder._bbox_embed(out) + inverse_sigmoid(reference)).sigmoid()
    return {**decoder.class_logits(out, class_embeddings), "pred_masks": masks, "pred_boxes": boxes}


def select_queries(
    decoder: nn.Module,
    memory: Tensor,
    spatial_shapes: Tensor,
    mask_features: Tensor,
    class_embeddings: Mapping[str, Tensor],
    num_queries: int,
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """Two-stage selection of the top-``num_queries`` memory tokens (see the module docstring).

    Returns:
        ``(content (B, Q, C) detached, anchors (B, Q, 4) unsigmoided, detached, interm_outputs)``; Q is
        ``num_queries`` or S when the memory has fewer tokens.
    """
    memory, proposals = encoder_output_proposals(memory, spatial_shapes)
    selected_memory = decoder.enc_output_norm(decoder.enc_output(memory))
    scores = decoder.class_logits(selected_memory, class_embeddings)  # no decoder_norm here (§5.2)
    score = scores["pred_logits"].max(-1).values
    if "pred_logits_part" in scores:
        score = torch.maximum(score, scores["pred_logits_part"].max(-1).values)
    score = score.masked_fill(torch.isinf(proposals).any(-1), float("-inf"))
    k = min(int(num_queries), score.shape[1])
    top = score.topk(k, dim=1).indices  # (B, Q)
    gather = lambda x: torch.gather(x, 1, top[..., None].expand(-1, -1, x.shape[-1]))  # noqa: E731
    anchors = gather(decoder._bbox_embed(selected_memory) + proposals)  # unsigmoided
    content = gather(selected_memory)
    interm = generic_heads(
        decoder, content, anchors.sigmoid(), mask_features, class_embeddings, box_from_reference=True
    )
    return content.detach(), anchors.detach(), interm


def denoising_queries(
    targets: Sequence[Mapping[str, Tensor]],
    class_embeddings: Mapping[str, Tensor],
    lang_mapper: Tensor,
    num_denoising: int,
    noise_scale: float,
    generator: Optional[torch.Generator] = None,
) -> Optional[tuple[Tensor, Tensor, dict[str, int]]]:
    """Denoising queries of a training batch (SEMANTIC_SPEC §5.3), or None when there are none.

    Args:
        targets: per image ``"labels"`` (G_i,) object classes, optional ``"part_labels"`` (G_i,) (-1: none),
            ``"boxes"`` (G_i, 4) cxcywh normalized.
        class_embeddings: the step's ``{"object": (C_o, D), "part": (C_p, D)}``.
        lang_mapper: (D, C) text -> query content projection.
        num_denoising: ``DN_NUM`` (100): G = num_denoising // m groups.
        noise_scale: ``DN_NOISE_SCALE`` (0.4).
        generator: source of the box noise (default: torch's global generator).

    Returns:
        ``(content (B, P, C), anchors (B, P, 4) unsigmoided, meta {"num_groups": G, "max_gt": m})``; query
        ``g * m + j`` is group g's copy of GT j; rows with j >= G_i (padding) hold zeros and a centred box.
    """
    counts = [int(t["labels"].numel()) for t in targets]
    max_gt = max(counts, default=0)
    if max_gt == 0 or num_denoising < max_gt:
        return None
    groups = num_denoising // max_gt
    device = lang_mapper.device
    b = len(targets)
    content = lang_mapper.new_zeros(b, groups * max_gt, lang_mapper.shape[1])
    anchors = torch.full((b, groups * max_gt, 4), 0.5, device=device)
    for i, t in enumerate(targets):
        n = counts[i]
        if n == 0:
            continue
        text = class_embeddings["object"][t["labels"].to(device)]
        parts = t.get("part_labels")
        if parts is not None and "part" in class_embeddings:
            parts = parts.to(device)
            has_part = (parts >= 0)[:, None]
            text = text + torch.where(has_part, class_embeddings["part"][parts.clamp(min=0)], torch.zeros_like(text))
        group_content = (text.to(lang_mapper.dtype) @ lang_mapper).repeat(groups, 1)  # (G * n, C)
        boxes = t["boxes"].to(device).float().repeat(groups, 1)
        diff = torch.cat([boxes[:, 2:] / 2, boxes[:, 2:]], dim=-1)
        noise = torch.rand(boxes.shape, generator=generator, device=device) * 2 - 1
        noised = (boxes + noise * diff * noise_scale).clamp(0.0, 1.0)
        rows = (torch.arange(groups, device=device)[:, None] * max_gt + torch.arange(n, device=device)[None]).flatten()
        content[i, rows] = group_content
        anchors[i, rows] = noised
    return content, inverse_sigmoid(anchors), {"num_groups": groups, "max_gt": max_gt}


def generic_self_attn_mask(num_denoising: int, num_groups: int, num_queries: int, device: torch.device) -> Tensor:
    """(P + Q, P + Q) bool self-attention mask of ``[P denoising | Q generic]`` queries, True = blocked:
    generic rows do not see denoising columns; a denoising group sees itself and the generic queries only."""
    total = num_denoising + num_queries
    mask = torch.zeros(total, total, dtype=torch.bool, device=device)
    if num_denoising == 0:
        return mask
    mask[num_denoising:, :num_denoising] = True
    size = num_denoising // num_groups
    group = torch.arange(num_denoising, device=device) // size
    mask[:num_denoising, :num_denoising] = group[:, None] != group[None, :]
    return mask
