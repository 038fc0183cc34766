"""Registries that map the config's names to builders, as the reference's configs select them.

==========================  =====================  ==========================================
config key                  registry               builder signature
==========================  =====================  ==========================================
``MODEL.NAME``              ``META_ARCH``          ``fn(cfg) -> nn.Module``
``MODEL.HEAD``              ``HEAD``               ``fn(cfg, input_shape: dict[str, ShapeSpec])``
``MODEL.BACKBONE.NAME``     ``BACKBONE``           ``fn(cfg) -> detectron2 Backbone``
``MODEL.ENCODER.NAME``      ``PIXEL_DECODER``      ``fn(cfg, input_shape: dict[str, ShapeSpec])``
``MODEL.DECODER.NAME``      ``DECODER``            ``fn(cfg, in_channels: int)``
==========================  =====================  ==========================================
"""
from __future__ import annotations

from typing import Callable, TypeVar

from detectron2.utils.registry import Registry

__all__ = ["META_ARCH", "HEAD", "BACKBONE", "PIXEL_DECODER", "DECODER", "register"]

META_ARCH = Registry("SEMANTIC_SAM_META_ARCH")
HEAD = Registry("SEMANTIC_SAM_HEAD")
BACKBONE = Registry("SEMANTIC_SAM_BACKBONE")
PIXEL_DECODER = Registry("SEMANTIC_SAM_PIXEL_DECODER")
DECODER = Registry("SEMANTIC_SAM_DECODER")

T = TypeVar("T", bound=Callable)


def register(registry: Registry, name: str) -> Callable[[T], T]:
    """Decorator: register ``obj`` in ``registry`` under the config name ``name``."""

    def deco(obj: T) -> T:
        registry._do_register(name, obj)
        return obj

    return deco
