"""Pixel decoder ``encoder_deform``: deformable transformer encoder + light FPN (MaskDINO encoder).

From backbone features res2..res5 it produces
* ``multi_scale_features``: 4 maps of d channels at strides 8, 16, 32, 64 (res3, res4, res5
  projected and refined by the deformable encoder; stride 64 is a 3x3 stride-2 conv of res5);
* ``mask_features``: d' channels at stride 4,
  ``mask_features(layer_1(adapter_1(res2) + upsample(stride-8 feature level)))``.

Shape shorthand: B = batch, d = ``conv_dim``, H, W = padded image size.
"""

from __future__ import annotations

import contextlib
import math
from typing import Mapping, Sequence

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from torch import Tensor, nn

from ...utils.precision import pixel_decoder_autocast_allowed
from ..position_encoding import PositionEmbeddingSine
from ..registry import PIXEL_DECODER, register
from .deformable_encoder import DeformableEncoderOnly

__all__ = ["MSDeformAttnPixelDecoder", "build_encoder_deform"]

_FEATURE_ORDERS = ("low2high",)


class MSDeformAttnPixelDecoder(nn.Module):
    """Multi-scale deformable-attention pixel decoder with the reference's module names.

    Args:
        input_shape: backbone features used (name -> ShapeSpec), e.g. res2..res5.
        transformer_dropout: dropout in the encoder layers.
        transformer_nheads: attention heads of the encoder.
        transformer_dim_feedforward: FFN width of the encoder.
        transformer_enc_layers: encoder depth.
        conv_dim: width d of every feature level.
        mask_dim: channels of ``mask_features``.
        norm: detectron2 norm name of the FPN convs ("GN" = GroupNorm(32, d)); the input
            projections always use GroupNorm(32, d).
        transformer_in_features: backbone features fed to the encoder (res3, res4, res5).
        common_stride: stride of ``mask_features`` (4).
        total_num_feature_levels: encoder feature levels; the ones beyond ``transformer_in_features``
            are made by 3x3 stride-2 convs on the coarsest feature.
        feature_order: feature-level order; only "low2high" (the reference's value, which orders the
            encoder feature levels from stride 8 to 64) is supported.
        use_checkpoint: activation checkpointing of the encoder layers while training.
        enc_n_points: deformable sampling points per head and feature level.
    """

    @configurable
    def __init__(
        self,
        input_shape: Mapping[str, ShapeSpec],
        *,
        transformer_dropout: float,
        transformer_nheads: int,
        transformer_dim_feedforward: int,
        transformer_enc_layers: int,
        conv_dim: int,
        mask_dim: int,
        norm: str | None,
        transformer_in_features: Sequence[str],
        common_stride: int,
        total_num_feature_levels: int = 4,
        feature_order: str = "low2high",
        use_checkpoint: bool = False,
        enc_n_points: int = 4,
    ):
        super().__init__()
        if feature_order not in _FEATURE_ORDERS:
            raise ValueError(
                f"MODEL.ENCODER.FEATURE_ORDER {feature_order!r} is not supported; "
                f"use one of {_FEATURE_ORDERS}"
            )
        missing = [f for f in transformer_in_features if f not in input_shape]
        if missing:
            raise ValueError(
                f"MODEL.ENCODER.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES {missing} not among the "
                f"backbone features {sorted(input_shape)}"
            )
        if conv_dim % 32:
            raise ValueError(
                f"MODEL.ENCODER.CONVS_DIM={conv_dim} must be a multiple of 32 (GroupNorm(32, d))"
            )
        # High resolution first: encoder feature level l has stride 8 * 2**l.
        enc_shapes = sorted(
            ((k, input_shape[k]) for k in transformer_in_features), key=lambda kv: kv[1].stride
        )
        self.transformer_in_features = [k for k, _ in enc_shapes]
        num_enc_inputs = len(enc_shapes)
        if total_num_feature_levels < num_enc_inputs:
            raise ValueError(
                f"MODEL.ENCODER.TOTAL_NUM_FEATURE_LEVELS={total_num_feature_levels} is below the "
                f"{num_enc_inputs} encoder input features"
            )
        self.total_num_feature_levels = total_num_feature_levels

        proj = [
            nn.Sequential(nn.Conv2d(s.channels, conv_dim, 1), nn.GroupNorm(32, conv_dim))
            for _, s in enc_shapes
        ]
        in_ch = enc_shapes[-1][1].channels
        for _ in range(total_num_feature_levels - num_enc_inputs):
            proj.append(
                nn.Sequential(
                    nn.Conv2d(in_ch, conv_dim, 3, stride=2, padding=1), nn.GroupNorm(32, conv_dim)
                )
            )
            in_ch = conv_dim
        self.input_proj = nn.ModuleList(proj)
        for p in self.input_proj:
            nn.init.xavier_uniform_(p[0].weight, gain=1)
            nn.init.constant_(p[0].bias, 0)

        self.transformer = DeformableEncoderOnly(
            d_model=conv_dim,
            nhead=transformer_nheads,
            num_encoder_layers=transformer_enc_layers,
            dim_feedforward=transformer_dim_feedforward,
            dropout=transformer_dropout,
            num_feature_levels=total_num_feature_levels,
            enc_n_points=enc_n_points,
            use_checkpoint=use_checkpoint,
        )
        self.pe_layer = PositionEmbeddingSine(conv_dim // 2, normalize=True)

        self.mask_dim = mask_dim
        self.mask_features = Conv2d(conv_dim, mask_dim, kernel_size=1, stride=1, padding=0)
        weight_init.c2_xavier_fill(self.mask_features)

        # FPN from the finest encoder feature level (stride 8) down to common_stride, finest feature first:
        # adapter_1 / layer_1 work on the highest-resolution backbone feature.
        finest_enc_stride = enc_shapes[0][1].stride
        self.num_fpn_feature_levels = max(int(math.log2(finest_enc_stride) - math.log2(common_stride)), 0)
        fpn_shapes = sorted(input_shape.items(), key=lambda kv: kv[1].stride)[: self.num_fpn_feature_levels]
        self.fpn_in_features = [k for k, _ in fpn_shapes]
        use_bias = not norm
        for i, (_, shape) in enumerate(fpn_shapes):
            adapter = Conv2d(
                shape.channels,
                conv_dim,
                kernel_size=1,
                bias=use_bias,
                norm=get_norm(norm, conv_dim),
            )
            layer = Conv2d(
                conv_dim,
                conv_dim,
                kernel_size=3,
                stride=1,
                padding=1,
                bias=use_bias,
                norm=get_norm(norm, conv_dim),
                activation=F.relu,
            )
            weight_init.c2_xavier_fill(adapter)
            weight_init.c2_xavier_fill(layer)
            self.add_module(f"adapter_{i + 1}", adapter)
            self.add_module(f"layer_{i + 1}", layer)

    @classmethod
    def from_config(cls, cfg, input_shape: Mapping[str, ShapeSpec]) -> dict:
        enc, dec = cfg.MODEL.ENCODER, cfg.MODEL.DECODER
        missing = [k for k in enc.IN_FEATURES if k not in input_shape]
        if missing:
            raise ValueError(
                f"MODEL.ENCODER.IN_FEATURES {missing} not among the backbone features "
                f"{sorted(input_shape)}"
            )
        return {
            "input_shape": {k: v for k, v in input_shape.items() if k in enc.IN_FEATURES},
            "transformer_dropout": dec.DROPOUT,
            "transformer_nheads": dec.NHEADS,
            "transformer_dim_feedforward": dec.DIM_FEEDFORWARD,
            "transformer_enc_layers": enc.TRANSFORMER_ENC_LAYERS,
            "conv_dim": enc.CONVS_DIM,
            "mask_dim": enc.MASK_DIM,
            "norm": enc.NORM,
            "transformer_in_features": list(enc.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES),
            "common_stride": enc.COMMON_STRIDE,
            "total_num_feature_levels": enc.TOTAL_NUM_FEATURE_LEVELS,
            "feature_order": enc.FEATURE_ORDER,
            "use_checkpoint": enc.USE_CKPT,
        }

    def forward_features(
        self, features: Mapping[str, Tensor]
    ) -> tuple[Tensor, Tensor, list[Tensor]]:
        """
        Args:
            features: backbone maps ``{name: (B, C_name, H / stride, W / stride)}``.

        Returns:
            mask_features (B, mask_dim, H/4, W/4), the stride-8 encoder output (B, d, H/8, W/8),
            multi_scale_features: ``total_num_feature_levels`` maps (B, d, h_l, w_l), strides 8..64.
        """
        missing = [
            k for k in self.transformer_in_features + self.fpn_in_features if k not in features
        ]
        if missing:
            raise KeyError(
                f"pixel decoder needs backbone features {missing}; got {sorted(features)}"
            )
        device_type = features[self.transformer_in_features[0]].device.type
        if pixel_decoder_autocast_allowed(device_type):
            # opt-in reduced precision: products in the autocast dtype, outputs back to float32
            low = torch.get_autocast_dtype(device_type)
            mask_features, enc, multi_scale = self._forward(features, fpn_dtype=low)
            return mask_features.float(), enc.float(), [f.float() for f in multi_scale]
        # Deformable attention runs in float32 (the reference disables autocast here).
        with torch.autocast(device_type=device_type, enabled=False):
            return self._forward({k: v.float() for k, v in features.items()})

    forward = forward_features

    def _forward(
        self, features: Mapping[str, Tensor], fpn_dtype: torch.dtype | None = None
    ) -> tuple[Tensor, Tensor, list[Tensor]]:
        srcs, pos = [], []
        for feature_level, name in enumerate(self.transformer_in_features):
            x = features[name]
            srcs.append(self.input_proj[feature_level](x))
            pos.append(self.pe_layer(x))
        last = features[self.transformer_in_features[-1]]
        for feature_level in range(len(srcs), self.total_num_feature_levels):
            last = self.input_proj[feature_level](last)
            srcs.append(last)
            pos.append(self.pe_layer(last))

        memory, spatial_shapes, feature_level_start_index = self.transformer(srcs, pos)
        b = memory.shape[0]
        sizes = [int(h) * int(w) for h, w in spatial_shapes.tolist()]
        outs = [
            z.transpose(1, 2).reshape(b, -1, h, w)
            for z, (h, w) in zip(memory.split(sizes, dim=1), spatial_shapes.tolist())
        ]
        multi_scale_features = outs[: self.total_num_feature_levels]

        if not torch.is_grad_enabled():
            low = fpn_dtype if memory.device.type == "cpu" else None
            return self._fpn_inference(features, outs[0], low), outs[0], multi_scale_features
        fpn = outs[0].contiguous()  # bilinear upsampling is ~4x faster on a contiguous map
        for i in reversed(range(self.num_fpn_feature_levels)):
            lateral = getattr(self, f"adapter_{i + 1}")(features[self.fpn_in_features[i]])
            up = F.interpolate(fpn, size=lateral.shape[-2:], mode="bilinear", align_corners=False)
            fpn = getattr(self, f"layer_{i + 1}")(lateral + up)
        return self.mask_features(fpn), outs[0], multi_scale_features

    def _fpn_inference(self, features: Mapping[str, Tensor], top: Tensor, dtype: torch.dtype | None) -> Tensor:
        """The FPN without autograd; returns mask_features. Its maps are the largest tensors of the
        model, so sums and ReLUs run in place. With ``dtype`` (bf16 on CPU) it runs in that dtype,
        channels-last (oneDNN's bf16 convolutions are ~2.8x faster on it; under autocast every norm
        would convert the 1/4-resolution maps to float32 and back, costing more than the convolutions
        save), and mask_features comes back channels-last."""
        fmt = torch.contiguous_format if dtype is None else torch.channels_last
        # with dtype, the casts are explicit; otherwise the caller's autocast setting stands
        no_autocast = torch.autocast(device_type=top.device.type, enabled=False)
        with contextlib.nullcontext() if dtype is None else no_autocast:
            # contiguous: bilinear upsampling is ~4x faster than on the strided encoder output
            fpn = top.to(dtype or top.dtype).contiguous(memory_format=fmt)
            for i in reversed(range(self.num_fpn_feature_levels)):
                x = features[self.fpn_in_features[i]]
                if dtype is not None:
                    x = x.to(dtype).contiguous(memory_format=fmt)
                lateral = _conv_norm_act(getattr(self, f"adapter_{i + 1}"), x, dtype)
                up = F.interpolate(fpn, size=lateral.shape[-2:], mode="bilinear", align_corners=False)
                lateral.add_(up)
                del up, fpn, x
                fpn = _conv_norm_act(getattr(self, f"layer_{i + 1}"), lateral, dtype)
                del lateral
            return _conv_norm_act(self.mask_features, fpn, dtype)


def _conv_norm_act(layer: Conv2d, x: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """``layer(x)`` for a detectron2 ``Conv2d`` (conv, norm, activation) at inference: a ReLU applied in
    place, and with ``dtype``, the layer's parameters cast to it (channels-last weights for a
    channels-last ``x``). Without ``dtype`` it computes what ``layer(x)`` computes."""

    def cast(t: Tensor | None) -> Tensor | None:
        return t if t is None or dtype is None else t.to(dtype)

    weight = cast(layer.weight)
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        weight = weight.contiguous(memory_format=torch.channels_last)
    y = layer._conv_forward(x, weight, cast(layer.bias))
    norm = layer.norm
    if isinstance(norm, nn.GroupNorm):
        y = F.group_norm(y, norm.num_groups, cast(norm.weight), cast(norm.bias), norm.eps)
    elif norm is not None:
        y = norm(y)
    if layer.activation is F.relu:
        return y.relu_()
    return y if layer.activation is None else layer.activation(y)


@register(PIXEL_DECODER, "encoder_deform")
def build_encoder_deform(cfg, input_shape: Mapping[str, ShapeSpec]) -> MSDeformAttnPixelDecoder:
    """Build the ``encoder_deform`` pixel decoder from ``cfg.MODEL.ENCODER`` (+ heads, FFN and
    dropout from ``cfg.MODEL.DECODER``) for the backbone's ``output_shape()``."""
    return MSDeformAttnPixelDecoder(cfg, input_shape)
