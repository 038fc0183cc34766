"""Building blocks of the query decoder: MLP, anchor sine embedding, deformable decoder layers.

Shape shorthand: B = images, Q = queries (prompts x tokens), C = hidden dim, L = feature levels,
S = flattened memory positions (sum over feature levels of H_l * W_l).

All tensors are batch-first. Anchors ("reference boxes") are normalized cxcywh in [0, 1] of the
padded image frame.
"""
from __future__ import annotations

import copy
import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...ops import MSDeformAttn

__all__ = ["MLP", "inverse_sigmoid", "anchor_sine_embedding", "DeformableDecoderLayer", "DeformableTransformerDecoder"]


class MLP(nn.Module):
    """``num_layers`` Linear layers with ReLU between them (not after the last).

    State-dict names: ``layers.{i}.weight`` / ``layers.{i}.bias``.
    """

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims_in, dims_out))

    def forward(self, x: Tensor) -> Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = F.relu(x)
        return x


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    """``log(x / (1 - x))`` with ``x`` clamped to [0, 1] and both terms clamped below at ``eps``."""
    x = x.clamp(min=0.0, max=1.0)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def anchor_sine_embedding(boxes: Tensor, num_feats: int, temperature: float = 10000.0) -> Tensor:
    """Sine/cosine embedding of normalized cxcywh boxes, as DINO's ``gen_sineembed_for_position``.

    Each coordinate v in [0, 1] is scaled by 2*pi and divided by ``temperature ** (2 * (i // 2) / num_feats)``
    for i in [0, num_feats); even features take the sine and odd ones the cosine, interleaved.

    Args:
        boxes: (..., 4) cxcywh.
        num_feats: features per coordinate (C / 2 so that the result has 2C features).

    Returns:
        (..., 4 * num_feats), coordinate blocks in the order (y, x, w, h).
    """
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=boxes.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)
    embeds = []
    for coord in (1, 0, 2, 3):  # y, x, w, h
        v = boxes[..., coord, None] * (2 * math.pi) / dim_t
        embeds.append(torch.stack((v[..., 0::2].sin(), v[..., 1::2].cos()), dim=-1).flatten(-2))
    return torch.cat(embeds, dim=-1)


class DeformableDecoderLayer(nn.Module):
    """Post-norm DINO decoder layer: self-attention -> deformable cross-attention -> FFN.

    Parameter names follow the reference (in its state-dict order): ``cross_attn`` (MSDeformAttn),
    ``norm1``, ``self_attn`` (``nn.MultiheadAttention``), ``norm2``, ``linear1``, ``linear2``, ``norm3``.
    """

    def __init__(
        self,
        d_model: int = 256,
        d_ffn: int = 2048,
        dropout: float = 0.0,
        num_feature_levels: int = 4,
        n_heads: int = 8,
        n_points: int = 4,
    ) -> None:
        super().__init__()
        self.cross_attn = MSDeformAttn(d_model, num_feature_levels, n_heads, n_points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.self_attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.dropout2 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.dropout3 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout4 = nn.Dropout(dropout)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(
        self,
        tgt: Tensor,
        query_pos: Tensor,
        reference_boxes: Tensor,
        memory: Tensor,
        spatial_shapes: Tensor,
        feature_level_start_index: Tensor,
        memory_padding_mask: Optional[Tensor] = None,
        self_attn_mask: Optional[Tensor] = None,
        value: Optional[Tensor] = None,
    ) -> Tensor:
        """
        Args:
            tgt: (B, Q, C) content queries.
            query_pos: (B, Q, C) positional queries.
            reference_boxes: (B, Q, L, 4) anchors per feature level (cxcywh, normalized).
            memory: (B, S, C) flattened multi-scale features.
            spatial_shapes: (L, 2) int64 (H_l, W_l) of the memory's feature levels.
            feature_level_start_index: (L,) start of each feature level in S.
            memory_padding_mask: (B, S) bool, True = padding, or None.
            self_attn_mask: (Q, Q) or (B * n_heads, Q, Q) bool, True = may not attend; None = no mask.
            value: (B, S, C) ``self.project_memory(memory)`` computed beforehand (it depends only on the
                image, so it can be reused across prompt batches); None = compute it here.

        Returns:
            (B, Q, C) float32 updated queries. Like the reference, the layer always runs in float32
            (autocast disabled), whatever the surrounding mixed-precision context.
        """
        with torch.autocast(device_type=tgt.device.type, enabled=False):
            return self._forward(
                tgt.float(),
                query_pos.float(),
                reference_boxes.float(),
                memory.float(),
                spatial_shapes,
                feature_level_start_index,
                memory_padding_mask,
                self_attn_mask,
                None if value is None else value.float(),
            )

    def project_memory(self, memory: Tensor, memory_padding_mask: Optional[Tensor] = None) -> Tensor:
        """The cross-attention's value projection of the memory: (B, S, C) -> (B, S, C)."""
        with torch.autocast(device_type=memory.device.type, enabled=False):
            return self.cross_attn.project_value(memory.float(), memory_padding_mask)

    def _forward(
        self,
        tgt: Tensor,
        query_pos: Tensor,
        reference_boxes: Tensor,
        memory: Tensor,
        spatial_shapes: Tensor,
        feature_level_start_index: Tensor,
        memory_padding_mask: Optional[Tensor],
        self_attn_mask: Optional[Tensor],
        value: Optional[Tensor],
    ) -> Tensor:
        q = k = tgt + query_pos
        tgt2 = self.self_attn(q, k, tgt, attn_mask=self_attn_mask, need_weights=False)[0]
        tgt = self.norm2(tgt + self.dropout2(tgt2))

        if value is None:
            tgt2 = self.cross_attn(
                tgt + query_pos,
                reference_boxes,
                memory,
                spatial_shapes,
                feature_level_start_index,
                memory_padding_mask,
            )
        else:
            tgt2 = self.cross_attn.attend(
                tgt + query_pos, reference_boxes, value, spatial_shapes, feature_level_start_index
            )
        tgt = self.norm1(tgt + self.dropout1(tgt2))

        tgt2 = self.linear2(self.dropout3(F.relu(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout4(tgt2))


class DeformableTransformerDecoder(nn.Module):
    """A stack of :class:`DeformableDecoderLayer` with DINO-style anchor refinement.

    Before layer l, the positional query is ``ref_point_head(anchor_sine_embedding(anchor_l))``.
    After it, ``anchor_{l+1} = sigmoid(bbox_embed[l](out_l) + inverse_sigmoid(anchor_l))`` computed on
    the raw (un-normed) output, detached before it is used as the next anchor.

    Attributes set by the owner: ``bbox_embed`` (a ModuleList of ``num_layers`` box MLPs, possibly one
    shared module) -- without it the anchors stay fixed.
    """

    def __init__(
        self, decoder_layer: DeformableDecoderLayer, num_layers: int, norm: nn.LayerNorm, d_model: int
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(decoder_layer) for _ in range(num_layers))
        self.num_layers = num_layers
        self.norm = norm
        self.d_model = d_model
        self.ref_point_head = MLP(2 * d_model, d_model, d_model, 2)
        self.bbox_embed: Optional[nn.ModuleList] = None
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m._reset_parameters()

    def forward(
        self,
        tgt: Tensor,
        refpoints_unsigmoid: Tensor,
        memory: Tensor,
        spatial_shapes: Tensor,
        feature_level_start_index: Tensor,
        memory_padding_mask: Optional[Tensor] = None,
        tgt_mask: Optional[Tensor] = None,
        values: Optional[Sequence[Tensor]] = None,
    ) -> tuple[list[Tensor], list[Tensor]]:
        """
        Args:
            tgt: (B, Q, C) initial content queries.
            refpoints_unsigmoid: (B, Q, 4) initial anchors before the sigmoid.
            memory, spatial_shapes, feature_level_start_index, memory_padding_mask: see
                :class:`DeformableDecoderLayer`.
            tgt_mask: (Q, Q) bool self-attention mask (True = blocked) or None.
            values: per layer, the memory's projected values (:meth:`project_memory`), or None.

        Returns:
            ``(hs, references)``: ``hs`` is a list of ``num_layers`` tensors (B, Q, C), ``norm(out_l)``;
            ``references`` is a list of ``num_layers + 1`` tensors (B, Q, 4): the sigmoid anchors before
            each layer and the refined anchor after the last one (not detached, for the box loss).
        """
        num_feature_levels = spatial_shapes.shape[0]
        output = tgt
        reference = refpoints_unsigmoid.sigmoid()
        references = [reference]
        hs = []
        for layer_id, layer in enumerate(self.layers):
            # valid ratios are all 1 (no padding mask is used), so the per-feature-level anchors are equal
            reference_per_feature_level = reference[:, :, None, :].expand(-1, -1, num_feature_levels, -1)
            query_pos = self.ref_point_head(anchor_sine_embedding(reference, self.d_model // 2))
            output = layer(
                output,
                query_pos,
                reference_per_feature_level,
                memory,
                spatial_shapes,
                feature_level_start_index,
                memory_padding_mask,
                tgt_mask,
                None if values is None else values[layer_id],
            )
            if self.bbox_embed is not None:
                new_reference = (self.bbox_embed[layer_id](output) + inverse_sigmoid(reference)).sigmoid()
                references.append(new_reference)
                reference = new_reference.detach()
            hs.append(self.norm(output))
        return hs, references

    def project_memory(self, memory: Tensor, memory_padding_mask: Optional[Tensor] = None) -> list[Tensor]:
        """Every layer's value projection of the memory, (B, S, C) each: reusable for any prompts."""
        return [layer.project_memory(memory, memory_padding_mask) for layer in self.layers]
