"""Initialize a Swin backbone from an ImageNet Swin checkpoint file (the official release format).

The official files (e.g. ``swin_tiny_patch4_window7_224.pth``) hold ``{"model": state_dict}``
with the classification model's keys (``patch_embed.*``, ``layers.*``, ``norm.*``, ``head.*``).
Keys that exist in the backbone are loaded; relative position bias tables of another window
size are resized bicubically; ``relative_position_index`` and ``attn_mask`` buffers are
skipped (they are recomputed). Nothing is ever downloaded: a URL or a missing file is logged
and the backbone keeps its random initialization.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PretrainedLoadReport", "load_imagenet_swin_weights", "load_pretrained_from_config"]

logger = logging.getLogger(__name__)

_SKIPPED_BUFFERS = ("relative_position_index", "attn_mask")


@dataclass
class PretrainedLoadReport:
    """What :func:`load_imagenet_swin_weights` did, key by key (backbone key names)."""

    loaded: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # in the backbone, not (usably) in the file
    unexpected: list[str] = field(default_factory=list)  # in the file, not in the backbone
    mismatched: list[str] = field(default_factory=list)  # same key, incompatible shape


def _resize_bias_table(table: Tensor, num_rows: int) -> Tensor:
    """((2a-1)^2, nH) -> (num_rows, nH): bicubic interpolation of each head's (2a-1)^2 grid."""
    side_in, side_out = round(table.shape[0] ** 0.5), round(num_rows**0.5)
    if side_in**2 != table.shape[0] or side_out**2 != num_rows:
        raise ValueError(
            f"bias tables of {table.shape[0]} and {num_rows} rows are not square grids"
        )
    nh = table.shape[1]
    grid = table.float().permute(1, 0).reshape(1, nh, side_in, side_in)
    grid = F.interpolate(grid, size=(side_out, side_out), mode="bicubic", align_corners=False)
    return grid.reshape(nh, num_rows).permute(1, 0).to(table.dtype)


def _resize_abs_pos_embed(embed: Tensor, target: Tensor) -> Tensor:
    """Absolute position embedding as (1, L, C) or (1, C, h, w) -> target's (1, C, H, W)."""
    if embed.dim() == 3:
        side = round(embed.shape[1] ** 0.5)
        embed = embed.transpose(1, 2).reshape(1, embed.shape[2], side, side)
    return F.interpolate(
        embed.float(), size=target.shape[-2:], mode="bicubic", align_corners=False
    ).to(target.dtype)


def _channels(abs_pos_embed: Tensor) -> int:
    return abs_pos_embed.shape[-1] if abs_pos_embed.dim() == 3 else abs_pos_embed.shape[1]


def _selected(key: str, pretrained_layers: Sequence[str]) -> bool:
    return "*" in pretrained_layers or key.split(".")[0] in pretrained_layers


def load_imagenet_swin_weights(
    model: nn.Module,
    checkpoint: Mapping[str, Tensor],
    pretrained_layers: Sequence[str] = ("*",),
) -> PretrainedLoadReport:
    """Copy the usable entries of an ImageNet Swin state dict into ``model`` (in place).

    Args:
        model: a :class:`~semantic_sam.modeling.backbone.swin.SwinTransformer` (or subclass).
        checkpoint: the file's state dict (``{"model": ...}`` already unwrapped).
        pretrained_layers: top-level module names to load (``patch_embed``, ``layers``, ...);
            ``"*"`` loads everything.

    Returns:
        A :class:`PretrainedLoadReport`.
    """
    own = model.state_dict()
    report = PretrainedLoadReport()
    to_load: dict[str, Tensor] = {}
    for key, value in checkpoint.items():
        if any(name in key for name in _SKIPPED_BUFFERS) or not _selected(key, pretrained_layers):
            continue
        if key not in own:
            report.unexpected.append(key)
            continue
        target = own[key]
        if value.shape != target.shape:
            if key.endswith("relative_position_bias_table") and value.shape[1] == target.shape[1]:
                value = _resize_bias_table(value, target.shape[0])
                report.resized.append(key)
            elif key.endswith("absolute_pos_embed") and _channels(value) == target.shape[1]:
                value = _resize_abs_pos_embed(value, target)
                report.resized.append(key)
            else:
                report.mismatched.append(
                    f"{key}: file {tuple(value.shape)} vs model {tuple(target.shape)}"
                )
                continue
        to_load[key] = value
        report.loaded.append(key)
    report.missing = [
        k for k in own if k not in to_load and not any(n in k for n in _SKIPPED_BUFFERS)
    ]
    model.load_state_dict(to_load, strict=False)
    return report


def load_pretrained_from_config(model: nn.Module, cfg) -> PretrainedLoadReport | None:
    """Apply ``MODEL.BACKBONE.LOAD_PRETRAINED``, ``PRETRAINED``, ``SWIN.PRETRAINED_LAYERS``.

    Only local files are read. A URL or a missing path logs one line and leaves the random
    initialization (the released Semantic-SAM checkpoints overwrite these weights anyway).

    Returns:
        The load report, or None when nothing was loaded.
    """
    bb = cfg.MODEL.BACKBONE
    if not bb.LOAD_PRETRAINED:
        return None
    path = bb.PRETRAINED
    if not path or "://" in path or not os.path.isfile(path):
        logger.info(
            "MODEL.BACKBONE.PRETRAINED=%r is not a local file; Swin keeps its random init "
            "(nothing is downloaded)",
            path,
        )
        return None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a corrupt or foreign file: name it
        raise RuntimeError(f"cannot read ImageNet Swin weights from {path}: {e}") from e
    if isinstance(ckpt, Mapping) and isinstance(ckpt.get("model"), Mapping):
        ckpt = ckpt["model"]
    if not isinstance(ckpt, Mapping):
        raise ValueError(
            f"{path}: expected a state dict (or {{'model': state_dict}}), got {type(ckpt).__name__}"
        )
    layers = list(bb.SWIN.get("PRETRAINED_LAYERS", ["*"]))
    report = load_imagenet_swin_weights(model, ckpt, layers)
    logger.info(
        "Loaded ImageNet Swin weights from %s: %d tensors (%d bias tables resized), "
        "%d backbone tensors not in the file, %d file entries unused, %d shape mismatches",
        path,
        len(report.loaded),
        len(report.resized),
        len(report.missing),
        len(report.unexpected),
        len(report.mismatched),
    )
    if not report.loaded:
        logger.warning(
            "%s holds no tensor of this Swin (keys like 'patch_embed.proj.weight' expected): "
            "is it an ImageNet Swin checkpoint? First keys: %s",
            path,
            ", ".join(list(ckpt)[:3]),
        )
    if report.missing:
        logger.info("Swin tensors left at random init: %s", ", ".join(report.missing))
    if report.mismatched:
        logger.warning("Swin tensors skipped for shape mismatch: %s", "; ".join(report.mismatched))
    return report
