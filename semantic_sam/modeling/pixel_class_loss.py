"""Per-pixel object-class loss on labelled images (``MODEL.DECODER.PIXEL_CLASS_WEIGHT``; off by default).

Not in the paper: this project's training aid for small models trained briefly (the built-in model). The click
and generic class losses reach the backbone only through a few query outputs per image; this loss labels every
pixel of the mask features, so the pixel decoder and the backbone learn what is inside the boundaries from the
first iterations. It adds no parameters: the pixel embeddings go through the object head's own projection
(``class_embed``) and are compared with the step's object class embeddings, as the click outputs are::

    z(x) = exp(logit_scale) * normalize(F(x) @ class_embed) @ T^T         F: mask features, T: (C_o, D)
    loss = cross-entropy(z(x), class of the smallest GT mask holding x), mean over the labelled pixels

Pixels outside every GT mask (and the padding) are ignored.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .language.base import l2_normalize

__all__ = ["IGNORE", "pixel_class_targets", "pixel_class_loss"]

IGNORE = -1
"""The target of a pixel that no GT mask covers."""


def pixel_class_targets(masks: Tensor, classes: Tensor, size: Sequence[int]) -> Tensor:
    """The class map of one image at the mask features' resolution.

    Arguments:
        masks: (G, Hp, Wp) bool GT masks in the padded frame; they may nest (parts inside objects).
        classes: (G,) int object class of each mask (-1: unlabelled; such a mask labels nothing).
        size: (h, w) of the mask features; the map samples the masks at the centres of the
            (Hp / h) x (Wp / w) cells, so h and w must divide Hp and Wp.

    Returns:
        (h, w) int64: each pixel's class is that of the smallest mask holding it (ties: the later mask),
        :data:`IGNORE` where no labelled mask does.
    """
    if masks.dim() != 3 or classes.shape != masks.shape[:1]:
        raise ValueError(f"masks must be (G, Hp, Wp) and classes (G,), got {tuple(masks.shape)} and {tuple(classes.shape)}")
    h, w = int(size[0]), int(size[1])
    hp, wp = masks.shape[-2:]
    if h <= 0 or w <= 0 or hp % h or wp % w:
        raise ValueError(f"mask features of size {(h, w)} do not tile the padded masks of size {(hp, wp)}")
    sy, sx = hp // h, wp // w
    sampled = masks[:, sy // 2 :: sy, sx // 2 :: sx].bool()
    target = torch.full((h, w), IGNORE, dtype=torch.long, device=masks.device)
    labelled = classes >= 0
    if not bool(labelled.any()):
        return target
    sampled, classes = sampled[labelled], classes[labelled].long()
    areas = masks[labelled].flatten(1).sum(1)
    # largest first, so that smaller (nested) masks overwrite the masks they lie in
    for i in torch.argsort(areas, descending=True, stable=True).tolist():
        target[sampled[i]] = classes[i]
    return target


def pixel_class_loss(
    mask_features: Tensor,
    class_embed: Tensor,
    class_embeddings: Tensor,
    logit_scale: Tensor,
    targets: Sequence[Tensor],
) -> Tensor:
    """Cross-entropy of every labelled pixel's object class.

    Arguments:
        mask_features: (B, C, h, w) the pixel decoder's mask features.
        class_embed: (C, D) the object head's projection.
        class_embeddings: (C_o, D) unit-norm object class embeddings of the step.
        logit_scale: the text encoder's log logit scale (a scalar).
        targets: B maps (h, w) int64 from :func:`pixel_class_targets`.

    Returns:
        A scalar: the mean over labelled pixels of all images (0, connected to the graph, when none is).
    """
    b, c, h, w = mask_features.shape
    if len(targets) != b:
        raise ValueError(f"{len(targets)} target maps for a batch of {b}")
    target = torch.stack([t.to(mask_features.device) for t in targets])
    if target.shape != (b, h, w):
        raise ValueError(f"target maps must be (h, w) = {(h, w)}, got {tuple(target.shape[1:])}")
    if int(target.max()) >= class_embeddings.shape[0]:
        raise ValueError(f"class id {int(target.max())} is out of range for {class_embeddings.shape[0]} classes")
    labelled = target != IGNORE
    pixels = mask_features.permute(0, 2, 3, 1)[labelled]  # (P, C)
    if pixels.shape[0] == 0:
        return mask_features.sum() * 0.0
    visual = l2_normalize(pixels @ class_embed.to(pixels.dtype))
    logits = logit_scale.exp() * visual @ class_embeddings.to(visual.dtype).t()
    return F.cross_entropy(logits.float(), target[labelled])
