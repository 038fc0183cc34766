"""Multi-scale deformable attention (Deformable-DETR, Zhu et al. 2021): op and module.

Implementations of the same op, chosen explicitly by device (never by ``try/except``):

* CUDA tensors with the compiled extension ``semantic_sam._C``: the CUDA kernel;
* CPU tensors with a compiled CPU kernel (``semantic_sam._C`` or the optional JIT build, see
  ``ms_deform_attn_cpu.load_cpu_kernel``): the C++ kernel (forward and backward);
* CPU tensors, no compiled kernel, no gradient needed, float32/64: ``ms_deform_attn_sparse``
  (pure PyTorch, one CSR matrix product per image, ~2.5x faster than grid_sample);
* otherwise: :func:`ms_deform_attn_pytorch`, the pure-PyTorch path built on ``F.grid_sample``,
  i.e. the reference's fallback (a CUDA tensor without the extension lands here after a one-time
  warning).

:func:`force_pytorch` (or ``SEMANTIC_SAM_FORCE_PYTORCH_MSDA=1``) forces the PyTorch path, e.g. for
FLOP counting or debugging.
"""
from __future__ import annotations

import contextlib
import math
import os
import threading
import warnings
from types import ModuleType
from typing import Iterator, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..utils.deprecation import renamed_kwargs
from .extension import compiled_extension
from .ms_deform_attn_sparse import SUPPORTED_DTYPES as SPARSE_DTYPES
from .ms_deform_attn_sparse import ms_deform_attn_sparse

__all__ = [
    "MSDeformAttn",
    "ms_deform_attn",
    "ms_deform_attn_pytorch",
    "cuda_kernel_available",
    "cpu_kernel_available",
    "force_pytorch",
]

_FORCE_PYTORCH_ENV = "SEMANTIC_SAM_FORCE_PYTORCH_MSDA"
# Deformable-DETR's keyword names, kept as deprecated aliases of the public op and module arguments.
_OLD_OP_KWARGS = {"level_start_index": "feature_level_start_index"}
_OLD_MODULE_KWARGS = {"input_level_start_index": "input_feature_level_start_index"}
_state = threading.local()
_warned_cuda_fallback = False

# ---------------------------------------------------------------------------------------------
# Lazy access to the compiled extension(s)
# ---------------------------------------------------------------------------------------------
def _extension() -> Optional[ModuleType]:
    """``semantic_sam._C`` or None (a seam for tests)."""
    return compiled_extension()


def cuda_kernel_available() -> bool:
    """True when the CUDA kernel of ``semantic_sam._C`` is compiled and a GPU is usable."""
    ext = _extension()
    return (
        ext is not None
        and hasattr(ext, "ms_deform_attn_forward")
        and getattr(ext, "with_cuda", lambda: True)()
        and torch.cuda.is_available()
    )


def _cpu_kernel() -> Optional[ModuleType]:
    """A module with ``ms_deform_attn_cpu_forward/backward``, or None (see ``ms_deform_attn_cpu.py``)."""
    from . import ms_deform_attn_cpu

    return ms_deform_attn_cpu.cpu_kernel()


def cpu_kernel_available() -> bool:
    """True when a compiled C++ CPU kernel is loaded (``semantic_sam._C`` or the JIT build)."""
    return _cpu_kernel() is not None


def _pytorch_forced() -> bool:
    return getattr(_state, "force_pytorch", False) or os.environ.get(_FORCE_PYTORCH_ENV, "0") == "1"


@contextlib.contextmanager
def force_pytorch(enabled: bool = True) -> Iterator[None]:
    """Context manager: inside it, :func:`ms_deform_attn` always uses :func:`ms_deform_attn_pytorch`."""
    previous = getattr(_state, "force_pytorch", False)
    _state.force_pytorch = enabled
    try:
        yield
    finally:
        _state.force_pytorch = previous


# ---------------------------------------------------------------------------------------------
# Input validation
# ---------------------------------------------------------------------------------------------
def _check_op_inputs(
    value: Tensor,
    spatial_shapes: Tensor,
    feature_level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> None:
    if value.dim() != 4:
        raise ValueError(f"value must be (B, S, n_heads, head_dim), got shape {tuple(value.shape)}")
    if spatial_shapes.dim() != 2 or spatial_shapes.shape[1] != 2:
        raise ValueError(f"spatial_shapes must be (L, 2) (H, W) per feature level, got {tuple(spatial_shapes.shape)}")
    if spatial_shapes.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"spatial_shapes must be an integer tensor, got {spatial_shapes.dtype}")
    num_feature_levels = spatial_shapes.shape[0]
    if feature_level_start_index.shape != (num_feature_levels,):
        raise ValueError(
            f"feature_level_start_index must be ({num_feature_levels},) to match spatial_shapes, "
            f"got {tuple(feature_level_start_index.shape)}"
        )
    b, s, n_heads, _ = value.shape
    if sampling_locations.dim() != 6 or sampling_locations.shape[-1] != 2:
        raise ValueError(
            "sampling_locations must be (B, Q, n_heads, L, P, 2), got " f"{tuple(sampling_locations.shape)}"
        )
    bq, q, hq, lq, p, _ = sampling_locations.shape
    if (bq, hq, lq) != (b, n_heads, num_feature_levels):
        raise ValueError(
            f"sampling_locations {tuple(sampling_locations.shape)} does not match value (B={b}, n_heads={n_heads}) "
            f"and spatial_shapes (L={num_feature_levels})"
        )
    if attention_weights.shape != sampling_locations.shape[:-1]:
        raise ValueError(
            f"attention_weights must be (B, Q, n_heads, L, P) = {tuple(sampling_locations.shape[:-1])}, "
            f"got {tuple(attention_weights.shape)}"
        )
    if not spatial_shapes.is_cuda:  # on a GPU this check would cost a device sync per call
        expected_s = int((spatial_shapes[:, 0] * spatial_shapes[:, 1]).sum())
        if expected_s != s:
            raise ValueError(f"value has S={s} positions but spatial_shapes sum to H*W = {expected_s}")


# ---------------------------------------------------------------------------------------------
# PyTorch path
# ---------------------------------------------------------------------------------------------
@renamed_kwargs(_OLD_OP_KWARGS)
def ms_deform_attn_pytorch(
    value: Tensor,
    spatial_shapes: Tensor,
    feature_level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """Multi-scale deformable attention with ``F.grid_sample`` (bilinear, zero padding, align_corners=False).

    Args:
        value: (B, S, n_heads, head_dim), the flattened feature levels, S = sum_l H_l * W_l.
        spatial_shapes: (L, 2) integer (H_l, W_l) per feature level.
        feature_level_start_index: (L,) offset of each feature level in S (unused: the split follows
            ``spatial_shapes``; kept so the signature matches the kernels).
        sampling_locations: (B, Q, n_heads, L, P, 2) normalized (x, y), (0, 0) = top-left corner of the
            top-left pixel and (1, 1) = bottom-right corner of the bottom-right pixel.
        attention_weights: (B, Q, n_heads, L, P).

    Returns:
        (B, Q, n_heads * head_dim): per head, the attention-weighted sum of the bilinear samples.
    """
    b, _, n_heads, head_dim = value.shape
    _, q, _, num_feature_levels, num_points, _ = sampling_locations.shape
    sizes = [int(h) * int(w) for h, w in spatial_shapes.tolist()]
    value_per_feature_level = value.split(sizes, dim=1)
    # grid_sample wants coordinates in [-1, 1]
    grids = 2 * sampling_locations - 1
    # (B, Q, nH, L, P) -> (B*nH, L, Q, P): one batch entry per (image, head)
    weights = attention_weights.permute(0, 2, 3, 1, 4).reshape(b * n_heads, num_feature_levels, 1, q, num_points)
    output = value.new_zeros(b * n_heads, head_dim, q)
    for feature_level, (h, w) in enumerate(spatial_shapes.tolist()):
        if h == 0 or w == 0:
            continue  # an empty feature level has only padding: it adds zero (grid_sample would refuse it)
        # (B, H*W, nH, Dh) -> (B*nH, Dh, H, W)
        value_l = value_per_feature_level[feature_level].permute(0, 2, 3, 1).reshape(b * n_heads, head_dim, h, w)
        # (B, Q, nH, P, 2) -> (B*nH, Q, P, 2)
        grid_l = grids[:, :, :, feature_level].transpose(1, 2).reshape(b * n_heads, q, num_points, 2)
        # (B*nH, Dh, Q, P)
        sampled = F.grid_sample(value_l, grid_l, mode="bilinear", padding_mode="zeros", align_corners=False)
        output = output + (sampled * weights[:, feature_level]).sum(-1)
    # (B*nH, Dh, Q) -> (B, Q, nH*Dh)
    return output.view(b, n_heads * head_dim, q).transpose(1, 2).contiguous()


# ---------------------------------------------------------------------------------------------
# Compiled kernels behind autograd
# ---------------------------------------------------------------------------------------------
class _MSDeformAttnKernel(torch.autograd.Function):
    """Autograd wrapper for the compiled forward/backward (CUDA or C++ CPU, same signatures)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        kernel,
        value,
        spatial_shapes,
        feature_level_start_index,
        sampling_locations,
        attention_weights,
        im2col_step,
    ):
        ctx.kernel = kernel
        ctx.im2col_step = im2col_step
        output = kernel.forward(
            value, spatial_shapes, feature_level_start_index, sampling_locations, attention_weights, im2col_step
        )
        ctx.save_for_backward(value, spatial_shapes, feature_level_start_index, sampling_locations, attention_weights)
        return output

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):  # type: ignore[override]
        value, spatial_shapes, feature_level_start_index, sampling_locations, attention_weights = ctx.saved_tensors
        grad_value, grad_locations, grad_weights = ctx.kernel.backward(
            value,
            spatial_shapes,
            feature_level_start_index,
            sampling_locations,
            attention_weights,
            grad_output.contiguous(),
            ctx.im2col_step,
        )
        return None, grad_value, None, None, grad_locations, grad_weights, None


class _KernelBinding:
    """Names the forward/backward entry points of one compiled module."""

    def __init__(self, forward, backward) -> None:
        self.forward = forward
        self.backward = backward


def _cuda_binding() -> Optional[_KernelBinding]:
    ext = _extension()
    if ext is None or not hasattr(ext, "ms_deform_attn_forward"):
        return None
    if not getattr(ext, "with_cuda", lambda: True)():
        return None
    return _KernelBinding(ext.ms_deform_attn_forward, ext.ms_deform_attn_backward)


def _cpu_binding() -> Optional[_KernelBinding]:
    kernel = _cpu_kernel()
    if kernel is None:
        return None
    return _KernelBinding(kernel.ms_deform_attn_cpu_forward, kernel.ms_deform_attn_cpu_backward)


def _same_float_dtype(*tensors: Tensor) -> bool:
    """All float32 or all float64: what the C++ CPU kernel and the sparse path accept."""
    return tensors[0].dtype in SPARSE_DTYPES and all(t.dtype == tensors[0].dtype for t in tensors)


def _needs_grad(*tensors: Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


@renamed_kwargs(_OLD_OP_KWARGS)
def ms_deform_attn(
    value: Tensor,
    spatial_shapes: Tensor,
    feature_level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    im2col_step: int = 128,
) -> Tensor:
    """Multi-scale deformable attention on whichever implementation fits the inputs' device.

    Shapes as :func:`ms_deform_attn_pytorch`; returns (B, Q, n_heads * head_dim). ``im2col_step`` is the
    number of images per CUDA kernel launch. Mixed floating dtypes (e.g. half values and float
    locations under autocast) are promoted to a common dtype, which the output has.
    Errors raised by a compiled kernel propagate.
    """
    global _warned_cuda_fallback
    _check_op_inputs(value, spatial_shapes, feature_level_start_index, sampling_locations, attention_weights)
    dtype = torch.promote_types(torch.promote_types(value.dtype, sampling_locations.dtype), attention_weights.dtype)
    value, sampling_locations, attention_weights = (
        t.to(dtype) for t in (value, sampling_locations, attention_weights)
    )
    if not _pytorch_forced():
        binding = None
        if value.is_cuda:
            binding = _cuda_binding()
            if binding is None and not _warned_cuda_fallback:
                _warned_cuda_fallback = True
                warnings.warn(
                    "semantic_sam._C (the CUDA kernel of multi-scale deformable attention) is not built; "
                    "using the slower PyTorch path on GPU. Build it with `FORCE_CUDA=1 pip install -e .`.",
                    RuntimeWarning,
                    stacklevel=2,
                )
        elif value.device.type == "cpu" and _same_float_dtype(value, sampling_locations, attention_weights):
            binding = _cpu_binding()
            inference_only = not _needs_grad(value, sampling_locations, attention_weights)
            if binding is None and inference_only:
                return ms_deform_attn_sparse(
                    value, spatial_shapes, feature_level_start_index, sampling_locations, attention_weights
                )
        if binding is not None:
            return _MSDeformAttnKernel.apply(
                binding,
                value.contiguous(),
                spatial_shapes.to(value.device, torch.long).contiguous(),
                feature_level_start_index.to(value.device, torch.long).contiguous(),
                sampling_locations.contiguous(),
                attention_weights.contiguous(),
                im2col_step,
            )
    return ms_deform_attn_pytorch(
        value, spatial_shapes, feature_level_start_index, sampling_locations, attention_weights
    )


# ---------------------------------------------------------------------------------------------
# Module
# ---------------------------------------------------------------------------------------------
class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention module (Deformable-DETR) with the reference's parameter names.

    Args:
        d_model: channels of queries and values.
        num_feature_levels: number of feature levels sampled (Deformable-DETR's ``n_levels``, a
            deprecated keyword alias).
        n_heads: attention heads; ``d_model`` must be divisible by it.
        n_points: sampling points per head and feature level.
        im2col_step: batch chunk of the CUDA kernel.
    """

    @renamed_kwargs({"n_levels": "num_feature_levels"})
    def __init__(
        self, d_model: int = 256, num_feature_levels: int = 4, n_heads: int = 8, n_points: int = 4,
        im2col_step: int = 128,
    ) -> None:
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        for name, v in (("num_feature_levels", num_feature_levels), ("n_heads", n_heads), ("n_points", n_points)):
            if v < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")
        head_dim = d_model // n_heads
        if head_dim & (head_dim - 1) != 0:
            warnings.warn(
                f"MSDeformAttn head dim {head_dim} is not a power of 2; the CUDA kernel is less efficient then.",
                stacklevel=3,  # the caller of the renamed_kwargs wrapper
            )
        self.d_model = d_model
        self.num_feature_levels = num_feature_levels
        self.n_heads = n_heads
        self.n_points = n_points
        self.im2col_step = im2col_step

        self.sampling_offsets = nn.Linear(d_model, n_heads * num_feature_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * num_feature_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        nn.init.constant_(self.sampling_offsets.weight, 0.0)
        # Head k starts looking in direction k * 2pi / n_heads; point i sits (i + 1) "steps" away,
        # the direction scaled so that its larger component is 1.
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True)[0]
        grid = grid.view(self.n_heads, 1, 1, 2).repeat(1, self.num_feature_levels, self.n_points, 1)
        grid = grid * torch.arange(1, self.n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.view(-1))
        nn.init.constant_(self.attention_weights.weight, 0.0)
        nn.init.constant_(self.attention_weights.bias, 0.0)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.constant_(self.value_proj.bias, 0.0)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.constant_(self.output_proj.bias, 0.0)

    @renamed_kwargs(_OLD_MODULE_KWARGS)
    def forward(
        self,
        query: Tensor,
        reference_points: Tensor,
        input_flatten: Tensor,
        input_spatial_shapes: Tensor,
        input_feature_level_start_index: Tensor,
        input_padding_mask: Optional[Tensor] = None,
    ) -> Tensor:
        """
        Args:
            query: (B, Q, d_model).
            reference_points: (B, Q, L, 2) normalized (x, y) in [0, 1] (top-left (0, 0)), or
                (B, Q, L, 4) boxes (cx, cy, w, h) normalized; offsets are then scaled by the box size.
            input_flatten: (B, S, d_model), the feature levels flattened and concatenated, S = sum_l H_l * W_l.
            input_spatial_shapes: (L, 2) integer (H_l, W_l).
            input_feature_level_start_index: (L,) start of each feature level in S (Deformable-DETR's
                ``input_level_start_index``, a deprecated keyword alias).
            input_padding_mask: (B, S) bool, True = padding (its values are zeroed), or None.

        Returns:
            (B, Q, d_model).
        """
        self._check_inputs(query, reference_points, input_flatten, input_spatial_shapes, input_padding_mask)
        value = self.project_value(input_flatten, input_padding_mask)
        return self.attend(query, reference_points, value, input_spatial_shapes, input_feature_level_start_index)

    def project_value(self, input_flatten: Tensor, input_padding_mask: Optional[Tensor] = None) -> Tensor:
        """The value projection, padding zeroed: (B, S, d_model) -> (B, S, d_model).

        It depends only on the image, so a caller attending several query batches to the same
        features can compute it once and pass it to :meth:`attend`.
        """
        value = self.value_proj(input_flatten)
        if input_padding_mask is not None:
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        return value

    @renamed_kwargs(_OLD_MODULE_KWARGS)
    def attend(
        self,
        query: Tensor,
        reference_points: Tensor,
        value: Tensor,
        input_spatial_shapes: Tensor,
        input_feature_level_start_index: Tensor,
    ) -> Tensor:
        """:meth:`forward` on an already projected ``value`` (B, S, d_model) from :meth:`project_value`."""
        self._check_inputs(query, reference_points, value, input_spatial_shapes, None)
        b, q, _ = query.shape
        s = value.shape[1]
        nh, nl, np_ = self.n_heads, self.num_feature_levels, self.n_points
        value = value.view(b, s, nh, self.d_model // nh)
        # locations and weights in float32 even when the products run under autocast
        offsets = self.sampling_offsets(query).float().view(b, q, nh, nl, np_, 2)
        weights = self.attention_weights(query).float().view(b, q, nh, nl * np_)
        weights = F.softmax(weights, -1).view(b, q, nh, nl, np_)

        if reference_points.shape[-1] == 2:
            # offsets are in pixels of each feature level: loc = ref + offset / (W_l, H_l). Both operands are laid
            # out as whole (L * P * 2) rows: broadcasting a size-2 innermost dim is several times slower.
            row = nl * np_ * 2
            normalizer = torch.stack([input_spatial_shapes[..., 1], input_spatial_shapes[..., 0]], -1)
            normalizer = normalizer.to(offsets.dtype)[:, None, :].expand(nl, np_, 2).reshape(row)
            ref = reference_points[:, :, None, :, None, :].expand(b, q, 1, nl, np_, 2).reshape(b, q, 1, row)
            if torch.is_grad_enabled():
                locations = (ref + offsets.view(b, q, nh, row) / normalizer).view(b, q, nh, nl, np_, 2)
            else:  # same arithmetic in place: two fewer (B, Q, nH * L * P * 2) buffers
                locations = offsets.view(b, q, nh, row).div_(normalizer).add_(ref).view(b, q, nh, nl, np_, 2)
        else:
            # box (cx, cy, w, h): offsets are in units of half the box size divided by n_points
            locations = (
                reference_points[:, :, None, :, None, :2]
                + offsets / np_ * reference_points[:, :, None, :, None, 2:] * 0.5
            )
        output = ms_deform_attn(
            value, input_spatial_shapes, input_feature_level_start_index, locations, weights, self.im2col_step
        )
        return self.output_proj(output)

    def _check_inputs(
        self,
        query: Tensor,
        reference_points: Tensor,
        input_flatten: Tensor,
        input_spatial_shapes: Tensor,
        input_padding_mask: Optional[Tensor],
    ) -> None:
        if query.dim() != 3 or query.shape[-1] != self.d_model:
            raise ValueError(f"query must be (B, Q, {self.d_model}), got {tuple(query.shape)}")
        b, q, _ = query.shape
        if input_flatten.dim() != 3 or input_flatten.shape[0] != b or input_flatten.shape[-1] != self.d_model:
            raise ValueError(f"input_flatten must be ({b}, S, {self.d_model}), got {tuple(input_flatten.shape)}")
        if input_spatial_shapes.shape != (self.num_feature_levels, 2):
            raise ValueError(
                f"input_spatial_shapes must be ({self.num_feature_levels}, 2) for "
                f"num_feature_levels={self.num_feature_levels}, "
                f"got {tuple(input_spatial_shapes.shape)}"
            )
        if reference_points.dim() != 4 or reference_points.shape[:3] != (b, q, self.num_feature_levels) or (
            reference_points.shape[-1] not in (2, 4)
        ):
            raise ValueError(
                f"reference_points must be ({b}, {q}, {self.num_feature_levels}, 2 or 4), "
                f"got {tuple(reference_points.shape)}"
            )
        s = input_flatten.shape[1]
        if not input_spatial_shapes.is_cuda:  # on a GPU this check would cost a device sync per call
            expected_s = int((input_spatial_shapes[:, 0] * input_spatial_shapes[:, 1]).sum())
            if expected_s != s:
                raise ValueError(
                    f"input_flatten has S={s} positions but input_spatial_shapes sum to H*W = {expected_s}"
                )
        if input_padding_mask is not None and input_padding_mask.shape != (b, s):
            raise ValueError(f"input_padding_mask must be ({b}, {s}), got {tuple(input_padding_mask.shape)}")

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, num_feature_levels={self.num_feature_levels}, n_heads={self.n_heads}, "
            f"n_points={self.n_points}"
        )
