"""Encoder-only deformable transformer over multi-scale feature maps (Deformable DETR's encoder).

Shape shorthand: B = batch, L = feature levels, S = sum over feature levels of H_l * W_l positions,
d = model width.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor, nn

from semantic_sam.ops import MSDeformAttn

from ..row_chunks import chunk_rows, rowwise_in_chunks

__all__ = [
    "DeformableEncoderLayer",
    "DeformableEncoder",
    "DeformableEncoderOnly",
    "encoder_reference_points",
]


class DeformableEncoderLayer(nn.Module):
    """Post-norm layer: deformable self-attention, add & norm, ReLU FFN, add & norm."""

    def __init__(
        self,
        d_model: int = 256,
        d_ffn: int = 1024,
        dropout: float = 0.1,
        num_feature_levels: int = 4,
        n_heads: int = 8,
        n_points: int = 4,
    ):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, num_feature_levels, n_heads, n_points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.dropout2 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout3 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(
        self,
        src: Tensor,
        pos: Tensor,
        reference_points: Tensor,
        spatial_shapes: Tensor,
        feature_level_start_index: Tensor,
        padding_mask: Tensor | None = None,
    ) -> Tensor:
        """
        Args:
            src: (B, S, d) positions of all feature levels; pos: (B, S, d) their position + feature-level
                embedding.
            reference_points: (B, S, L, 2) normalized (x, y) of each position on every feature level.
            spatial_shapes: (L, 2) int64 (H_l, W_l); feature_level_start_index: (L,) int64.
            padding_mask: (B, S) bool, True = padding, or None.

        Returns:
            (B, S, d).
        """
        if self.training:
            attn = self.self_attn(
                src + pos, reference_points, src, spatial_shapes, feature_level_start_index, padding_mask
            )
            src = self.norm1(src + self.dropout1(attn))
            ffn = self.linear2(self.dropout2(F.relu(self.linear1(src), inplace=True)))
            return self.norm2(src + self.dropout3(ffn))
        block = chunk_rows(self.linear1.out_features)
        device = src.device.type
        if torch.is_grad_enabled() or device != "cpu" or src.shape[1] <= block or torch.is_autocast_enabled(device):
            # (under autocast, blocks would re-cast every weight per block: only the FFN tail is blocked)
            attn = self.self_attn(
                src + pos, reference_points, src, spatial_shapes, feature_level_start_index, padding_mask
            )
            return rowwise_in_chunks(self._add_norm_ffn, attn.float().add_(src), self.linear1.out_features)
        # Inference on CPU: everything but the value projection is row-wise, so the layer runs in
        # blocks of query rows (see row_chunks): same numbers, fewer large temporaries.
        value = self.self_attn.project_value(src, padding_mask)
        out = torch.empty_like(src)
        for start in range(0, src.shape[1], block):
            rows = slice(start, start + block)
            attn = self.self_attn.attend(
                src[:, rows] + pos[:, rows],
                reference_points[:, rows],
                value,
                spatial_shapes,
                feature_level_start_index,
            )
            out[:, rows] = self._add_norm_ffn(attn.float().add_(src[:, rows]))
        return out

    def _add_norm_ffn(self, x: Tensor) -> Tensor:
        """Eval-mode tail of the layer on rows of src + attention: add & norm, FFN, add & norm."""
        x = self.norm1(x)
        return self.norm2(x + self.linear2(F.relu(self.linear1(x), inplace=True)))


def encoder_reference_points(
    spatial_shapes: Sequence[tuple[int, int]], device: torch.device, batch_size: int = 1
) -> Tensor:
    """Pixel centres of every feature level, normalized to [0, 1] (valid ratios 1: no padding masks).

    Returns:
        (B, S, L, 2) (x, y), the same point repeated for each of the L feature levels.
    """
    points = []
    for h, w in spatial_shapes:
        ref_y, ref_x = torch.meshgrid(
            torch.linspace(0.5, h - 0.5, h, dtype=torch.float32, device=device),
            torch.linspace(0.5, w - 0.5, w, dtype=torch.float32, device=device),
            indexing="ij",
        )
        points.append(torch.stack((ref_x.reshape(-1) / w, ref_y.reshape(-1) / h), -1))
    points = torch.cat(points, 0)  # (S, 2)
    return points[None, :, None, :].expand(batch_size, -1, len(spatial_shapes), -1)


class DeformableEncoder(nn.Module):
    """A stack of :class:`DeformableEncoderLayer` (no final norm), optionally checkpointed."""

    def __init__(self, layers: Sequence[DeformableEncoderLayer], use_checkpoint: bool = False):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.use_checkpoint = use_checkpoint

    def forward(
        self,
        src: Tensor,
        pos: Tensor,
        reference_points: Tensor,
        spatial_shapes: Tensor,
        feature_level_start_index: Tensor,
        padding_mask: Tensor | None = None,
    ) -> Tensor:
        """Same arguments as :meth:`DeformableEncoderLayer.forward`; returns (B, S, d)."""
        out = src
        for layer in self.layers:
            if self.use_checkpoint and self.training and torch.is_grad_enabled():
                out = torch.utils.checkpoint.checkpoint(
                    layer,
                    out,
                    pos,
                    reference_points,
                    spatial_shapes,
                    feature_level_start_index,
                    padding_mask,
                    use_reentrant=False,
                )
            else:
                out = layer(
                    out, pos, reference_points, spatial_shapes, feature_level_start_index, padding_mask
                )
        return out


class DeformableEncoderOnly(nn.Module):
    """Flattens L feature maps, adds feature-level embeddings to their positions, runs the encoder.

    Args:
        d_model: model width d.
        nhead: attention heads.
        num_encoder_layers: encoder depth.
        dim_feedforward: FFN hidden width.
        dropout: dropout in attention output and FFN.
        num_feature_levels: L.
        enc_n_points: sampling points per head and feature level.
        use_checkpoint: activation checkpointing of each layer while training.
    """

    def __init__(
        self,
        d_model: int = 256,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        dim_feedforward: int = 1024,
        dropout: float = 0.1,
        num_feature_levels: int = 4,
        enc_n_points: int = 4,
        use_checkpoint: bool = False,
    ):
        super().__init__()
        self.encoder = DeformableEncoder(
            [
                DeformableEncoderLayer(
                    d_model, dim_feedforward, dropout, num_feature_levels, nhead, enc_n_points
                )
                for _ in range(num_encoder_layers)
            ],
            use_checkpoint,
        )
        # one embedding per feature level (the reference's parameter name, a state-dict key)
        self.level_embed = nn.Parameter(torch.empty(num_feature_levels, d_model))
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m._reset_parameters()
        nn.init.normal_(self.level_embed)

    def forward(
        self, srcs: Sequence[Tensor], pos_embeds: Sequence[Tensor]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """
        Args:
            srcs: L maps (B, d, H_l, W_l).
            pos_embeds: L position embeddings (B or 1, d, H_l, W_l).

        Returns:
            memory (B, S, d), spatial_shapes (L, 2) int64 (H_l, W_l), feature_level_start_index (L,) int64.
        """
        if len(srcs) != self.level_embed.shape[0] or len(pos_embeds) != len(srcs):
            raise ValueError(
                f"deformable encoder expects {self.level_embed.shape[0]} feature levels, "
                f"got {len(srcs)} maps "
                f"and {len(pos_embeds)} position embeddings"
            )
        b = srcs[0].shape[0]
        shapes = [tuple(s.shape[-2:]) for s in srcs]
        src_flatten = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
        pos_flatten = torch.cat(
            [
                p.flatten(2).transpose(1, 2) + self.level_embed[feature_level].view(1, 1, -1)
                for feature_level, p in enumerate(pos_embeds)
            ],
            1,
        ).expand(b, -1, -1)
        device = src_flatten.device
        spatial_shapes = torch.as_tensor(shapes, dtype=torch.long, device=device)
        feature_level_start_index = torch.cat(
            (spatial_shapes.new_zeros((1,)), spatial_shapes.prod(1).cumsum(0)[:-1])
        )
        reference_points = encoder_reference_points(shapes, device, b)
        memory = self.encoder(
            src_flatten, pos_flatten, reference_points, spatial_shapes, feature_level_start_index
        )
        return memory, spatial_shapes, feature_level_start_index
