"""Click simulation for one-click interactive evaluation.

Every GT segment gets one click at the pixel farthest from its boundary: the argmax of a
distance transform of the mask, zero-padded by 1 px so that the image border counts as
boundary. Ties resolve to the first maximum in row-major order.

Two distance transforms are available:

* ``"kornia"`` (default): ``kornia.contrib.distance_transform(image, kernel_size=3, h=0.35)``
  of kornia 0.6.4, the soft-min convolution approximation the reference evaluation uses
  (kornia itself is not needed). It gives the reference's clicks, and so its numbers.
* ``"exact"``: the exact Euclidean distance transform (``scipy.ndimage``). Its maximum is often
  another pixel than the approximation's, so it clicks elsewhere than the reference on many
  segments and its metrics are not comparable with the reference's.

:func:`kornia_distance_transform` is the iterative algorithm as kornia runs it;
:func:`kornia_distance_transform_fast` computes the same float32 values in one pass and
is what the clicks use.
"""
from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "CLICK_METHODS",
    "click_from_mask",
    "clicks_from_masks",
    "kornia_distance_transform",
    "kornia_distance_transform_fast",
]

CLICK_METHODS = ("kornia", "exact")
ClickMethod = Literal["exact", "kornia"]


def kornia_distance_transform(image: torch.Tensor, kernel_size: int = 3, h: float = 0.35) -> torch.Tensor:
    """Approximate distance to the nearest non-zero pixel, as kornia 0.6.4 computes it.

    The transform grows the set of reached pixels by one kernel radius per iteration.
    Each iteration convolves the reached set with ``exp(-d / h)`` (``d`` the Euclidean
    offset within the kernel) and turns the result into a soft-min distance
    ``-h * log(conv)``; pixels reached for the first time get that distance plus an
    offset of ``(i * kernel_size) // 2`` (kornia's expression, kept as is).

    Args:
        image: (B, C, H, W) float; non-zero pixels are the sources (distance 0).
        kernel_size: odd kernel size.
        h: soft-min temperature.

    Returns:
        (B, C, H, W) tensor of approximate distances (0 at the sources).
    """
    if image.dim() != 4:
        raise ValueError(f"kornia_distance_transform expects (B, C, H, W), got shape {tuple(image.shape)}")
    if kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd, got {kernel_size}")
    _, c, height, width = image.shape
    radius = kernel_size // 2
    n_iters = math.ceil(max(height, width) / radius)

    kernel = _kornia_kernel(kernel_size, h, image.dtype, image.device)
    weight = kernel.reshape(1, 1, kernel_size, kernel_size).expand(c, 1, kernel_size, kernel_size)

    out = torch.zeros_like(image)
    boundary = image.clone()
    ones = torch.ones_like(boundary)
    for i in range(n_iters):
        padded = F.pad(boundary, [radius, radius, radius, radius], mode="replicate")
        cdt = F.conv2d(padded, weight, groups=c)
        cdt = -h * torch.log(cdt)
        cdt = torch.nan_to_num(cdt, posinf=0.0)  # log(0) where nothing is reached yet
        reached = torch.where(cdt > 0, 1.0, 0.0)
        if reached.sum() == 0:
            break
        offset = i * kernel_size // 2
        out += (offset + cdt) * reached
        boundary = torch.where(reached == 1, ones, boundary)
    return out


def _bbox_crop(mask: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """The mask's bounding box plus a 1-px background ring, and the box's top-left (y0, x0).

    Every pixel outside the box is background, so the distance transform of a mask pixel is
    the same in the crop as in the whole (padded) image: the ring holds the nearest sources.
    """
    rows = mask.any(dim=1).nonzero().flatten()
    cols = mask.any(dim=0).nonzero().flatten()
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
    return F.pad(mask[y0 : y1 + 1, x0 : x1 + 1], (1, 1, 1, 1), value=False), y0, x0


def _kornia_kernel(kernel_size: int, h: float, dtype: torch.dtype, device) -> torch.Tensor:
    """(k, k) kernel ``exp(-|offset| / h)``, computed with kornia's operations."""
    coords = torch.arange(kernel_size, device=device, dtype=dtype) - kernel_size // 2
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")
    return torch.exp(torch.hypot(xs, ys) / -h)


def kornia_distance_transform_fast(sources: torch.Tensor, h: float = 0.35) -> torch.Tensor:
    """:func:`kornia_distance_transform` (kernel 3) of one image in closed form.

    Kernel size 3 reaches pixels in chessboard-distance order: a pixel at chessboard
    distance ``d >= 1`` from the sources is reached in iteration ``d - 1``, when the reached
    set is exactly the pixels at distance ``< d``. So one pass gives every pixel's value,
    ``(d - 1) * 3 // 2 - h * log(sum of kernel weights over neighbours at distance < d)``,
    with the nine terms added in raster order. That is the order in which CPU ``conv2d``
    adds them for a batch of several masks (the reference transforms all masks of an
    image in one batch), so the float32 result equals :func:`kornia_distance_transform`
    on such a batch bit for bit (tested). Other convolution paths can differ by one ulp.

    Args:
        sources: (H, W) bool, True at the sources (distance 0); at least one True.
        h: soft-min temperature.

    Returns:
        (H, W) float32 distances.
    """
    from scipy.ndimage import distance_transform_cdt

    if sources.dim() != 2 or not sources.any():
        raise ValueError(f"sources must be (H, W) with at least one True pixel, got shape {tuple(sources.shape)}")
    height, width = sources.shape
    cheb = torch.from_numpy(distance_transform_cdt((~sources).cpu().numpy(), metric="chessboard")).to(sources.device)
    # Replicate padding of the reached set (cheb < d) is the reached set of the padded distances.
    padded = F.pad(cheb[None, None].float(), (1, 1, 1, 1), mode="replicate")[0, 0].to(cheb.dtype)
    kernel = _kornia_kernel(3, h, torch.float32, sources.device)
    conv = torch.zeros((height, width), dtype=torch.float32, device=sources.device)
    for a in range(3):
        for b in range(3):
            conv = conv + kernel[a, b] * (padded[a : a + height, b : b + width] < cheb).float()
    cdt = torch.nan_to_num(-h * torch.log(conv), posinf=0.0)
    offset = ((cheb - 1) * 3).div(2, rounding_mode="floor").float()
    return torch.where(cheb >= 1, offset + cdt, torch.zeros_like(cdt))


def _distance(crop: torch.Tensor, method: str) -> torch.Tensor:
    """Distance of every pixel of a (h, w) bool crop to the nearest False pixel."""
    if method == "exact":
        from scipy.ndimage import distance_transform_edt

        return torch.from_numpy(distance_transform_edt(crop.cpu().numpy()))
    # kornia measures the distance to the nearest non-zero pixel: the sources are the background.
    return kornia_distance_transform_fast(~crop)


def clicks_from_masks(masks: torch.Tensor | np.ndarray, method: ClickMethod = "kornia") -> torch.Tensor:
    """One click per mask at the pixel farthest from the mask boundary.

    The distance transform runs on the mask zero-padded by 1 px (the image border is
    boundary); the click is its first maximum in row-major order. Each mask is processed
    inside its bounding box, which gives the same distances as the full image.

    Args:
        masks: (N, H, W) bool (or 0/1) masks, each with at least one foreground pixel.
        method: ``"kornia"`` (the reference's approximation) or ``"exact"`` (Euclidean EDT).

    Returns:
        (N, 2) int64 tensor of pixel (x, y) clicks, on the masks' device.
    """
    if method not in CLICK_METHODS:
        raise ValueError(f"unknown click method {method!r}; expected one of {CLICK_METHODS}")
    masks = torch.as_tensor(masks)
    if masks.dim() != 3:
        raise ValueError(f"masks must have shape (N, H, W), got {tuple(masks.shape)}")
    masks = masks.bool()
    clicks = torch.zeros((masks.shape[0], 2), dtype=torch.int64)
    for i, mask in enumerate(masks):
        if not mask.any():
            raise ValueError(f"cannot click an empty mask: mask {i} has no foreground pixel")
        crop, y0, x0 = _bbox_crop(mask)
        dist = _distance(crop, method)[1:-1, 1:-1]
        # argmax returns the first maximum, as the reference's ``max(dim=-1)[1]``.
        idx = int(torch.argmax(dist.flatten()))
        clicks[i, 0] = x0 + idx % dist.shape[1]
        clicks[i, 1] = y0 + idx // dist.shape[1]
    return clicks.to(masks.device)


def click_from_mask(mask: torch.Tensor | np.ndarray, method: ClickMethod = "kornia") -> tuple[int, int]:
    """The click (x, y) of one (H, W) mask; see :func:`clicks_from_masks`."""
    mask = torch.as_tensor(mask)
    if mask.dim() != 2:
        raise ValueError(f"mask must have shape (H, W), got {tuple(mask.shape)}")
    x, y = clicks_from_masks(mask[None], method)[0].tolist()
    return int(x), int(y)
