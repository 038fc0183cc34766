"""Registries that map the config's names to builders, as the reference's configs select them,
and :func:`get_registered`, their lookup.

==========================  =====================  ==========================================
config key                  registry               builder signature
==========================  =====================  ==========================================
``MODEL.NAME``              ``META_ARCH``          ``fn(cfg) -> nn.Module``
``MODEL.HEAD``              ``HEAD``               ``fn(cfg, input_shape: dict[str, ShapeSpec])``
``MODEL.BACKBONE.NAME``     ``BACKBONE``           ``fn(cfg) -> detectron2 Backbone``
``MODEL.ENCODER.NAME``      ``PIXEL_DECODER``      ``fn(cfg, input_shape: dict[str, ShapeSpec])``
``MODEL.DECODER.NAME``      ``DECODER``            ``fn(cfg, in_channels: int)``
==========================  =====================  ==========================================

The built-in parts register themselves when their modules are imported; ``semantic_sam.modeling``
imports each of them (explicitly, in its ``__init__``), so every name is registered once the package
is imported. This module imports nothing of the model, so every part can import it.
"""
from __future__ import annotations

from typing import Callable, TypeVar

from detectron2.utils.registry import Registry

from ..config import ConfigError

__all__ = ["META_ARCH", "HEAD", "BACKBONE", "PIXEL_DECODER", "DECODER", "get_registered", "register"]

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


def get_registered(registry: Registry, name: str, key: str) -> Callable:
    """``registry.get(name)`` with a config-level error naming ``key`` and the known names.

    Raises:
        ConfigError: ``name`` is not registered in ``registry``.
    """
    try:
        return registry.get(name)
    except KeyError:
        known = ", ".join(sorted(k for k, _ in registry))
        raise ConfigError(f"{key}: unknown name {name!r}; registered names: {known}") from None
