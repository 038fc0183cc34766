"""The segmentation head: pixel decoder + interactive query decoder (the reference's ``IMaskDINOHead``).

It only groups the two modules under the names the released checkpoints use
(``sem_seg_head.pixel_decoder.*`` and ``sem_seg_head.predictor.*``).
"""
from __future__ import annotations

from typing import Mapping

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from torch import Tensor, nn

from ..config import ConfigError
from .registry import DECODER, HEAD, PIXEL_DECODER, get_registered, register

__all__ = ["GeneralHead"]


@register(HEAD, "general_head")
class GeneralHead(nn.Module):
    """Holds ``pixel_decoder`` (backbone features -> mask and multi-scale features) and ``predictor``.

    It has no ``forward``: the meta-architecture calls :meth:`encode` once per image and
    ``predictor`` once per prompt batch.
    """

    @configurable
    def __init__(self, *, pixel_decoder: nn.Module, predictor: nn.Module) -> None:
        super().__init__()
        self.pixel_decoder = pixel_decoder
        self.predictor = predictor

    @classmethod
    def from_config(cls, cfg, input_shape: Mapping[str, ShapeSpec]) -> dict:
        in_features = list(cfg.MODEL.ENCODER.IN_FEATURES)
        missing = [f for f in in_features if f not in input_shape]
        if missing:
            raise ConfigError(
                f"MODEL.ENCODER.IN_FEATURES names {missing}, which the backbone does not output "
                f"(it outputs {sorted(input_shape)})"
            )
        shapes = {k: v for k, v in input_shape.items() if k in in_features}
        pixel_decoder = get_registered(PIXEL_DECODER, cfg.MODEL.ENCODER.NAME, "MODEL.ENCODER.NAME")(cfg, shapes)
        predictor = get_registered(DECODER, cfg.MODEL.DECODER.NAME, "MODEL.DECODER.NAME")(
            cfg, in_channels=cfg.MODEL.ENCODER.CONVS_DIM
        )
        return {"pixel_decoder": pixel_decoder, "predictor": predictor}

    def encode(self, features: Mapping[str, Tensor]) -> dict:
        """Backbone features -> ``{"mask_features": (B, C, H/4, W/4), "multi_scale_features": [4 x (B, C, h, w)]}``
        (strides 8, 16, 32, 64)."""
        mask_features, _, multi_scale_features = self.pixel_decoder.forward_features(features)
        return {"mask_features": mask_features, "multi_scale_features": list(multi_scale_features)}
