"""Public builders: ``build_model(cfg)`` dispatches on ``cfg.MODEL.NAME`` through the registries."""
from __future__ import annotations

import logging

import torch
from torch import nn

from .config import ConfigError
from .modeling.registry import META_ARCH

__all__ = ["build_model", "get_registered"]

logger = logging.getLogger(__name__)


def get_registered(registry, name: str, key: str):
    """``registry.get(name)`` with a config-level error naming ``key`` and the known names."""
    from . import modeling  # noqa: F401  (registers every part)

    try:
        return registry.get(name)
    except KeyError:
        known = ", ".join(sorted(k for k, _ in registry))
        raise ConfigError(f"{key}: unknown name {name!r}; registered names: {known}") from None


def build_model(cfg, device: str | torch.device = "cpu") -> nn.Module:
    """Build the meta-architecture named by ``cfg.MODEL.NAME`` (``interactive_mask_dino``).

    The model is built on ``device`` (CPU by default) with random or ``PRETRAINED``-file
    initialization; nothing is downloaded. Load released or trained weights with
    :func:`semantic_sam.checkpoint.load_checkpoint`.
    """
    model = get_registered(META_ARCH, cfg.MODEL.NAME, "MODEL.NAME")(cfg)
    model.to(device)
    n = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    logger.info("Built %s with %d parameters", type(model).__name__, n)
    return model
