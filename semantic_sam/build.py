"""Public builders: ``build_model(cfg)`` dispatches on ``cfg.MODEL.NAME`` through the registries."""
from __future__ import annotations

import logging

import torch
from torch import nn

# Importing the modeling package registers every built-in part (see semantic_sam/modeling/__init__.py).
from .modeling.registry import META_ARCH, get_registered

__all__ = ["build_model"]

logger = logging.getLogger(__name__)


def build_model(cfg, device: str | torch.device = "cpu") -> nn.Module:
    """Build the meta-architecture named by ``cfg.MODEL.NAME`` (``interactive_mask_dino``).

    The model is built on ``device`` (CPU by default) with random or ``PRETRAINED``-file
    initialization; nothing is downloaded. Load released or trained weights with
    :func:`semantic_sam.checkpoint.load_checkpoint`.

    Raises:
        ConfigError: a name the registries do not know, or a value a part refuses (criterion options
            included: the criterion is built with the model).
    """
    model = get_registered(META_ARCH, cfg.MODEL.NAME, "MODEL.NAME")(cfg)
    model.to(device)
    n = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    logger.info("Built %s with %d parameters", type(model).__name__, n)
    return model
