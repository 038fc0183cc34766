"""Point sampling for the matcher and the mask losses (PointRend style, as Mask2Former / the reference).

Shape shorthand: M = masks (matched pairs), P = points per mask, G = GT masks, (h, w) = mask-logit
size (1/4 of the padded size), (Hp, Wp) = padded GT size. Point coordinates are (x, y) in
[0, 1) normalized by the map's size, x along the width; the same coordinates address the 1/4-resolution
logits and the full-resolution GT, so nothing is upsampled.

Sampling is detectron2's ``point_sample`` = ``grid_sample(align_corners=False, padding zeros)``:
the value at c is the bilinear interpolation of the map at pixel position ``(c_x * w - 0.5, c_y * h - 0.5)``
(pixel centres at integers), reading 0 outside.
"""

from __future__ import annotations

from typing import Optional

import torch
from detectron2.projects.point_rend.point_features import point_sample
from torch import Tensor

from semantic_sam.utils.random_draws import RandomSource, ReferenceRandom

__all__ = ["point_sample", "sample_uncertain_points", "sample_binary_masks", "calculate_uncertainty"]


def calculate_uncertainty(logits: Tensor) -> Tensor:
    """Uncertainty of class-agnostic mask logits: ``-|logit|`` (highest at the decision boundary)."""
    return -torch.abs(logits)


@torch.no_grad()
def sample_uncertain_points(
    logits: Tensor,
    num_points: int,
    oversample_ratio: float,
    importance_sample_ratio: float,
    rng: Optional[RandomSource] = None,
) -> Tensor:
    """Loss points of each mask: its most uncertain oversampled points, plus uniform ones.

    Same procedure and draw order as detectron2's ``get_uncertain_point_coords_with_randomness``
    with ``-|logit|`` uncertainty: draw ``int(P * oversample_ratio)`` uniform candidates per mask,
    keep the ``int(importance_sample_ratio * P)`` most uncertain (``topk``, descending), then append
    ``P - int(importance_sample_ratio * P)`` fresh uniform points. The uncertainty is computed on the
    point-sampled logits, not on the coarse map.

    Args:
        logits: (M, 1, h, w) mask logits.
        num_points: P.
        oversample_ratio: >= 1 (``OVERSAMPLE_RATIO``, 3.0).
        importance_sample_ratio: in [0, 1] (``IMPORTANCE_SAMPLE_RATIO``, 0.75).
        rng: source of the two uniform draws, (M, int(P * ratio), 2) then (M, P - k, 2);
            default: torch's global generator (as detectron2).

    Returns:
        (M, P, 2) float32 point coordinates (x, y) in [0, 1); the uncertainty is computed in float32.
    """
    if logits.dim() != 4 or logits.shape[1] != 1:
        raise ValueError(f"logits must be (M, 1, h, w), got {tuple(logits.shape)}")
    if oversample_ratio < 1 or not 0 <= importance_sample_ratio <= 1:
        raise ValueError(
            f"need oversample_ratio >= 1 and importance_sample_ratio in [0, 1], "
            f"got {oversample_ratio} and {importance_sample_ratio}"
        )
    rng = rng or ReferenceRandom()
    logits = logits.float()
    num_masks = logits.shape[0]
    num_sampled = int(num_points * oversample_ratio)
    num_uncertain = int(importance_sample_ratio * num_points)
    num_random = num_points - num_uncertain
    candidates = rng.rand(num_masks, num_sampled, 2, device=logits.device)
    uncertainty = calculate_uncertainty(point_sample(logits, candidates, align_corners=False))
    idx = torch.topk(uncertainty[:, 0, :], k=num_uncertain, dim=1).indices
    coords = torch.gather(candidates, 1, idx[..., None].expand(-1, -1, 2))
    if num_random > 0:
        fresh = rng.rand(num_masks, num_random, 2, device=logits.device)
        coords = torch.cat([coords, fresh], dim=1)
    return coords


def sample_binary_masks(masks: Tensor, mask_inds: Tensor, coords: Tensor) -> Tensor:
    """``point_sample(masks[mask_inds].float()[:, None], coords)`` without building the float masks.

    GT labels are bilinear samples of the 0/1 masks, so they are fractional at mask edges. This
    gathers the four neighbours of each point from the boolean masks instead of converting
    (and duplicating, one per pair) full-resolution float masks: memory O(M * P) instead of
    O(M * Hp * Wp). Values equal ``point_sample`` up to float rounding of the weights (~1e-7).

    Args:
        masks: (G, Hp, Wp) bool (or 0/1) masks.
        mask_inds: (M,) int64 index into the G masks, one per row of ``coords``.
        coords: (M, P, 2) points (x, y) in [0, 1].

    Returns:
        (M, P) float32 labels in [0, 1].
    """
    if masks.dim() != 3 or coords.dim() != 3 or coords.shape[-1] != 2 or mask_inds.shape != coords.shape[:1]:
        raise ValueError(
            f"need masks (G, H, W), mask_inds (M,) and coords (M, P, 2); got {tuple(masks.shape)}, "
            f"{tuple(mask_inds.shape)} and {tuple(coords.shape)}"
        )
    height, width = masks.shape[-2:]
    grid = 2.0 * coords.float() - 1.0
    # grid_sample's unnormalization with align_corners=False.
    x = ((grid[..., 0] + 1) * width - 1) / 2
    y = ((grid[..., 1] + 1) * height - 1) / 2
    x0, y0 = torch.floor(x), torch.floor(y)
    wx1, wy1 = x - x0, y - y0
    x0, y0 = x0.long(), y0.long()
    base = mask_inds.to(masks.device)[:, None] * (height * width)
    flat = masks.bool()
    out = torch.zeros(coords.shape[:2], dtype=torch.float32, device=masks.device)
    for dy, wy in ((0, 1 - wy1), (1, wy1)):
        yi = y0 + dy
        y_inside = (yi >= 0) & (yi < height)
        row = base + yi.clamp(0, height - 1) * width
        for dx, wx in ((0, 1 - wx1), (1, wx1)):
            xi = x0 + dx
            hit = torch.take(flat, row + xi.clamp(0, width - 1)) & y_inside & (xi >= 0) & (xi < width)
            out += torch.where(hit, wx * wy, 0.0)
    return out
