"""Optimizer construction as the reference trains: AdamW, per-module learning-rate multipliers,
no weight decay on norms, embeddings and Swin position tables, full-model gradient clipping."""
from __future__ import annotations

import itertools
import re
from typing import Any

import torch
from detectron2.solver import build_lr_scheduler as _d2_build_lr_scheduler
from detectron2.solver.build import maybe_add_gradient_clipping
from torch import nn

from .config import ConfigError
from .config_checks import CLIP_TYPES

__all__ = ["get_param_groups", "freeze_all_but", "build_optimizer", "build_lr_scheduler"]

_NORM_TYPES = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)
_NO_DECAY_PARAM_NAMES = ("relative_position_bias_table", "absolute_pos_embed")


def get_param_groups(
    model: nn.Module,
    base_lr: float,
    weight_decay: float,
    weight_decay_norm: float = 0.0,
    weight_decay_embed: float = 0.0,
    lr_multiplier: dict[str, float] | None = None,
) -> list[dict[str, Any]]:
    """One parameter group per distinct trainable tensor (shared modules counted once).

    ``lr_multiplier`` maps a substring of the full parameter name to a factor, e.g.
    ``{"backbone": 0.1}`` gives every ``backbone.*`` parameter ``0.1 * base_lr``.
    """
    lr_multiplier = dict(lr_multiplier or {})
    groups: list[dict[str, Any]] = []
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            full = f"{module_name}.{name}" if module_name else name
            lr = base_lr
            for key, factor in lr_multiplier.items():
                if key in full:
                    lr = base_lr * factor
            wd = weight_decay
            if isinstance(module, _NORM_TYPES):
                wd = weight_decay_norm
            elif isinstance(module, nn.Embedding):
                wd = weight_decay_embed
            elif name in _NO_DECAY_PARAM_NAMES:
                wd = 0.0
            groups.append({"params": [param], "lr": lr, "weight_decay": wd, "name": full})
    return groups


def freeze_all_but(model: nn.Module, patterns: list[str] | tuple[str, ...]) -> list[str]:
    """Leave trainable only the parameters whose full name matches one of ``patterns`` (``re.search``);
    ``requires_grad`` is turned off on every other one, so the backward pass skips them and
    :func:`get_param_groups` leaves them out of the optimizer. No patterns: nothing changes.

    Returns the names of the parameters left trainable. Raises :class:`ConfigError` naming a pattern
    that matches no parameter (a typo would otherwise freeze the whole model).
    """
    if not patterns:
        return [name for name, p in model.named_parameters() if p.requires_grad]
    compiled = [re.compile(p) for p in patterns]
    named = list(model.named_parameters())
    matches = {name: [bool(regex.search(name)) for regex in compiled] for name, _ in named}
    for k, pattern in enumerate(patterns):
        if not any(hits[k] for hits in matches.values()):
            raise ConfigError(
                f"SOLVER.TRAINABLE_PARAMS: {pattern!r} matches no parameter of the model "
                f"(names look like {named[0][0]!r})"
            )
    for name, param in named:
        param.requires_grad_(any(matches[name]) and param.requires_grad)
    return [name for name, param in named if param.requires_grad]


def _full_model_clipping(optimizer_cls: type, clip_norm: float, norm_type: float) -> type:
    class FullModelGradientClippingOptimizer(optimizer_cls):  # type: ignore[misc, valid-type]
        def step(self, closure=None):
            params = itertools.chain(*[g["params"] for g in self.param_groups])
            torch.nn.utils.clip_grad_norm_(params, clip_norm, norm_type=norm_type)
            return super().step(closure=closure)

    return FullModelGradientClippingOptimizer


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """AdamW (or SGD) over :func:`get_param_groups`, with ``SOLVER.CLIP_GRADIENTS`` applied.

    ``CLIP_TYPE: full_model`` clips the global norm of all gradients (after the AMP unscale,
    because GradScaler unscales before calling ``step``); ``value``/``norm`` use detectron2's
    per-parameter clipping.
    """
    s = cfg.SOLVER
    groups = get_param_groups(
        model,
        base_lr=s.BASE_LR,
        weight_decay=s.WEIGHT_DECAY,
        weight_decay_norm=s.WEIGHT_DECAY_NORM,
        weight_decay_embed=s.WEIGHT_DECAY_EMBED,
        lr_multiplier=dict(s.LR_MULTIPLIER),
    )
    name = s.OPTIMIZER.upper()
    if name == "ADAMW":
        cls, kwargs = torch.optim.AdamW, {}
    elif name == "SGD":
        cls, kwargs = torch.optim.SGD, {"momentum": s.MOMENTUM, "nesterov": s.NESTEROV}
    else:
        raise ConfigError(f"SOLVER.OPTIMIZER: unknown optimizer {s.OPTIMIZER!r}; expected ADAMW or SGD")
    clip = s.CLIP_GRADIENTS
    if clip.ENABLED and clip.CLIP_TYPE not in CLIP_TYPES:
        raise ConfigError(
            f"SOLVER.CLIP_GRADIENTS.CLIP_TYPE: unknown clip type {clip.CLIP_TYPE!r}; expected one of {CLIP_TYPES}"
        )
    if clip.ENABLED and clip.CLIP_TYPE == "full_model":
        if clip.CLIP_VALUE > 0:  # as the reference: CLIP_VALUE <= 0 means no clipping
            cls = _full_model_clipping(cls, clip.CLIP_VALUE, clip.NORM_TYPE)
        return cls(groups, lr=s.BASE_LR, **kwargs)
    optimizer = cls(groups, lr=s.BASE_LR, **kwargs)
    if clip.ENABLED:
        optimizer = maybe_add_gradient_clipping(cfg, optimizer)
    return optimizer


def build_lr_scheduler(cfg, optimizer: torch.optim.Optimizer):
    """detectron2's scheduler (``WarmupMultiStepLR`` etc. from ``SOLVER.*``)."""
    return _d2_build_lr_scheduler(cfg, optimizer)
