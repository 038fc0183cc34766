"""Binary masks from 1/4-resolution logits without materializing full-resolution float logits.

With the compiled extension, a C++ kernel does it directly (``csrc/mask_upsample_cpu.cpp``). The
PyTorch path:
The reference upsamples logits bilinearly (align_corners=False) by 4 to the padded frame, crops the
image region and thresholds at 0. An output pixel of low-resolution cell (i, j) is a convex
combination of the 3 x 3 cells around (i, j) (edges replicated, which is what the clamped source
index of ``F.interpolate`` amounts to). So where those 9 logits share a sign the whole 4 x 4 block
has it, and only the blocks on mask boundaries need the interpolation, done here with the exact
bilinear weights. The result equals ``interpolate(...) > 0`` except where a logit is within float
rounding of 0.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["upsample_binary_x4"]

# Bilinear weights of output sub-pixel r = 0..3 over the source cells (i-1, i, i+1) for scale 4,
# align_corners=False: the source coordinate of output 4i + r is i + (2r - 3) / 8.
_WEIGHTS_X4 = (
    (0.375, 0.625, 0.0),
    (0.125, 0.875, 0.0),
    (0.0, 0.875, 0.125),
    (0.0, 0.625, 0.375),
)


def upsample_binary_x4(
    low_res: Tensor,
    image_size: Sequence[int],
    max_boundary_fraction: float = 0.3,
    use_kernel: Optional[bool] = None,
) -> Tensor:
    """``bilinear_x4(low_res)[..., :H, :W] > 0`` without full-resolution float logits.

    On CPU with the compiled extension (``semantic_sam._C``, built by ``pip install -e .``), a C++
    kernel interpolates and thresholds straight into the bool output (~7x faster than interpolating,
    whatever the masks look like). Otherwise only mask boundaries are interpolated, in PyTorch.

    Args:
        low_res: (N, h, w) logits at 1/4 of the padded frame.
        image_size: (H, W) <= (4h, 4w): the valid region to keep.
        max_boundary_fraction: PyTorch path: if more low-resolution cells than this lie on a boundary
            (noisy masks, e.g. of an untrained model), plain chunked interpolation is faster and is
            used instead.
        use_kernel: True requires the C++ kernel, False never uses it, None (default) uses it when
            it is available and ``low_res`` is on the CPU.

    Returns:
        (N, H, W) bool.
    """
    if low_res.dim() != 3:
        raise ValueError(f"low_res must be (N, h, w), got {tuple(low_res.shape)}")
    n, h, w = low_res.shape
    out_h, out_w = int(image_size[0]), int(image_size[1])
    if out_h > 4 * h or out_w > 4 * w:
        raise ValueError(f"image_size {tuple(image_size)} exceeds 4x the low-resolution size {(h, w)}")
    if n == 0:
        return torch.zeros(0, out_h, out_w, dtype=torch.bool, device=low_res.device)
    kernel = _cpu_kernel() if use_kernel is not False and low_res.device.type == "cpu" else None
    if use_kernel and kernel is None:
        raise RuntimeError(
            "use_kernel=True needs low_res on the CPU and semantic_sam._C built with bilinear_x4_threshold_cpu "
            f"(got device {low_res.device}; rebuild with `pip install -e .`)"
        )
    if kernel is not None:
        return kernel.bilinear_x4_threshold_cpu(low_res.float(), out_h, out_w)
    # only the cells that cover the kept region matter
    h_used, w_used = -(-out_h // 4), -(-out_w // 4)
    logits = low_res.float()
    sign = logits > 0
    any_pos = _dilate3x3(sign, True)[:, :h_used, :w_used]
    all_pos = _dilate3x3(sign, False)[:, :h_used, :w_used]
    mixed = any_pos & ~all_pos  # the 3 x 3 neighbourhood has both signs
    if n * h_used * w_used == 0 or mixed.float().mean().item() > max_boundary_fraction:
        return _interpolate_threshold(logits, (4 * h, 4 * w), (out_h, out_w))

    # nearest x4 of the signs, copied as whole rows (much faster than one 5-d expand)
    rows = sign[:, :h_used, :w_used, None].expand(n, h_used, w_used, 4).reshape(n, h_used, 1, 4 * w_used)
    out = rows.expand(n, h_used, 4, 4 * w_used).clone().view(n, h_used, 4, w_used, 4)
    idx = mixed.nonzero(as_tuple=True)
    if len(idx[0]):
        # rows/cols beyond the used region are real neighbours; replicate padding = clamped borders
        padded = F.pad(logits[:, None, : h_used + 1, : w_used + 1], (1, 1, 1, 1), mode="replicate")[:, 0]
        patches = padded.unfold(1, 3, 1).unfold(2, 3, 1)  # (N, h_used + 1, w_used + 1, 3, 3) view
        nb = patches[idx[0], idx[1], idx[2]].reshape(-1, 9)  # (M, 9)
        wts = torch.tensor(_WEIGHTS_X4, dtype=nb.dtype, device=nb.device)
        kernel = torch.kron(wts, wts).t()  # (9, 16): row-major 3 x 3 -> row-major 4 x 4
        blocks = (nb @ kernel).reshape(-1, 4, 4) > 0
        out.permute(0, 1, 3, 2, 4)[idx] = blocks
    return out.reshape(n, 4 * h_used, 4 * w_used)[:, :out_h, :out_w]


def _cpu_kernel():
    """The compiled module with ``bilinear_x4_threshold_cpu``, or None."""
    from semantic_sam.ops.ms_deform_attn_cpu import cpu_kernel

    module = cpu_kernel()
    return module if module is not None and hasattr(module, "bilinear_x4_threshold_cpu") else None


def _dilate3x3(x: Tensor, use_or: bool) -> Tensor:
    """OR (``use_or``) or AND of each element of (N, h, w) bool ``x`` with its 3 x 3 neighbours
    (clipped at the borders)."""
    r = x.clone()
    c = x.clone()
    if use_or:
        r[:, :, 1:] |= x[:, :, :-1]
        r[:, :, :-1] |= x[:, :, 1:]
        c.copy_(r)
        c[:, 1:] |= r[:, :-1]
        c[:, :-1] |= r[:, 1:]
    else:
        r[:, :, 1:] &= x[:, :, :-1]
        r[:, :, :-1] &= x[:, :, 1:]
        c.copy_(r)
        c[:, 1:] &= r[:, :-1]
        c[:, :-1] &= r[:, 1:]
    return c


def _interpolate_threshold(logits: Tensor, padded_size: tuple, out_size: tuple, chunk_pixels: int = 1 << 25) -> Tensor:
    """Bilinear upsampling, crop and threshold, about ``chunk_pixels`` float outputs at a time."""
    chunk = max(1, chunk_pixels // (padded_size[0] * padded_size[1]))
    out = torch.empty(logits.shape[0], *out_size, dtype=torch.bool, device=logits.device)
    for i in range(0, logits.shape[0], chunk):
        up = F.interpolate(logits[None, i : i + chunk], size=padded_size, mode="bilinear", align_corners=False)[0]
        out[i : i + chunk] = up[:, : out_size[0], : out_size[1]] > 0
    return out
