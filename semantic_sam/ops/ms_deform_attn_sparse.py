"""Multi-scale deformable attention as one sparse-dense matrix product per image (pure PyTorch, CPU).

Each output row (b, q, head) is a weighted sum of at most ``L * P * 4`` rows of ``value`` (the four
bilinear neighbours of every sampling point), so the op is ``A @ V`` with ``V = value[b]`` viewed as
(S * n_heads, head_dim) and ``A`` a CSR matrix with exactly ``L * P * 4`` stored entries per row.
MKL's sparse kernels make this several times faster than one ``F.grid_sample`` per feature level
followed by the weighted sum, and it never materializes the (B*nH, head_dim, Q, L*P) tensor of samples.

The bilinear coordinates and weights are computed with the same arithmetic as ``F.grid_sample``
(bilinear, zero padding, align_corners=False) so results agree with it to float rounding.
This path has no backward: :func:`ms_deform_attn` uses it only when no gradient is needed.
"""
from __future__ import annotations

import warnings

import torch
from torch import Tensor

__all__ = ["ms_deform_attn_sparse", "SUPPORTED_DTYPES"]

SUPPORTED_DTYPES = (torch.float32, torch.float64)
# cap on stored entries of one CSR block (index + value tensors ~ 12 bytes each, plus temporaries)
_MAX_NNZ_PER_BLOCK = 1 << 24


def _index_dtype(num_columns: int, nnz: int) -> torch.dtype:
    """32-bit CSR indices (MKL's native kind, half the memory traffic) whenever they fit."""
    return torch.int32 if max(num_columns, nnz) < 2**31 - 1 else torch.int64


def _bilinear_entries(
    sampling_locations: Tensor,
    attention_weights: Tensor,
    spatial_shapes: Tensor,
    feature_level_start_index: Tensor,
    index_dtype: torch.dtype,
) -> tuple[Tensor, Tensor]:
    """Column indices and weights of the sparse rows for locations (Qc, nH, L, P, 2), weights (Qc, nH, L, P).

    Returns:
        columns: (Qc * nH, 4 * L * P) ``index_dtype``, index into value viewed as (S * nH, head_dim)
            (position * nH + head); a neighbour outside the feature level points at a clamped pixel with
            weight 0.
        weights: (Qc * nH, 4 * L * P), attention weight times bilinear weight. The entries of a row are
            ordered (neighbour, feature level, point), neighbours (y0, x0), (y0, x0 + 1), (y0 + 1, x0),
            (y0 + 1, x0 + 1).
    """
    q, n_heads, num_feature_levels, num_points, _ = sampling_locations.shape
    dtype = sampling_locations.dtype
    shape_l = (num_feature_levels, 1)  # broadcasts against (Qc, nH, L, P)
    heights = spatial_shapes[:, 0].to(dtype).view(shape_l)
    widths = spatial_shapes[:, 1].to(dtype).view(shape_l)
    # same arithmetic as grid_sample: grid = 2 * loc - 1, then unnormalize with align_corners=False.
    # NaN locations become far-outside points (weight 0) instead of undefined integer indices.
    grid = (2 * sampling_locations - 1).nan_to_num(nan=-4.0)
    x = ((grid[..., 0] + 1) * widths - 1) / 2  # (Qc, nH, L, P)
    y = ((grid[..., 1] + 1) * heights - 1) / 2
    x0 = x.floor()
    y0 = y.floor()
    width_i = spatial_shapes[:, 1].to(index_dtype).view(shape_l)
    starts = feature_level_start_index.to(index_dtype).view(shape_l)
    heads = torch.arange(n_heads, dtype=index_dtype, device=x.device).view(n_heads, 1, 1)
    max_x = (widths - 1).clamp(min=0)
    max_y = (heights - 1).clamp(min=0)

    # per axis: neighbour 0 = floor, 1 = floor + 1, with grid_sample's weights, zero outside the feature
    # level and the coordinate clamped inside it. The column is (start + y * W + x) * nH + head.
    col_y, w_y, col_x, w_x = [], [], [], []
    for yn, wyn in ((y0, y0 + 1 - y), (y0 + 1, y - y0)):
        w_y.append(wyn * ((yn >= 0) & (yn < heights)) * attention_weights)
        yi = torch.minimum(yn.clamp(min=0), max_y).to(index_dtype)
        col_y.append((starts + yi * width_i) * n_heads + heads)
    for xn, wxn in ((x0, x0 + 1 - x), (x0 + 1, x - x0)):
        w_x.append(wxn * ((xn >= 0) & (xn < widths)))
        col_x.append(torch.minimum(xn.clamp(min=0), max_x).to(index_dtype) * n_heads)

    k = num_feature_levels * num_points
    columns = torch.cat([(col_y[i] + col_x[j]).view(q * n_heads, k) for i in (0, 1) for j in (0, 1)], dim=1)
    weights = torch.cat([(w_y[i] * w_x[j]).view(q * n_heads, k) for i in (0, 1) for j in (0, 1)], dim=1)
    return columns, weights


def ms_deform_attn_sparse(
    value: Tensor,
    spatial_shapes: Tensor,
    feature_level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """Multi-scale deformable attention by CSR matrix products; same contract as ``ms_deform_attn_pytorch``.

    Args:
        value: (B, S, n_heads, head_dim) float32/float64.
        spatial_shapes: (L, 2) int64 (H_l, W_l).
        feature_level_start_index: (L,) int64.
        sampling_locations: (B, Q, n_heads, L, P, 2) normalized (x, y).
        attention_weights: (B, Q, n_heads, L, P).

    Returns:
        (B, Q, n_heads * head_dim). Not differentiable.
    """
    if value.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"ms_deform_attn_sparse supports {SUPPORTED_DTYPES}, got {value.dtype}")
    b, s, n_heads, head_dim = value.shape
    _, q, _, num_feature_levels, num_points, _ = sampling_locations.shape
    spatial_shapes = spatial_shapes.long()
    feature_level_start_index = feature_level_start_index.long()
    k = num_feature_levels * num_points * 4
    chunk = max(1, _MAX_NNZ_PER_BLOCK // (n_heads * k))
    index_dtype = _index_dtype(s * n_heads, min(q, chunk) * n_heads * k)
    if s == 0:
        return value.new_zeros(b, q, n_heads * head_dim)
    has_empty_feature_level = bool((spatial_shapes.prod(1) == 0).any())
    output = value.new_empty(b, q, n_heads, head_dim)
    with torch.no_grad():
        for bi in range(b):
            rows_of_value = value[bi].reshape(s * n_heads, head_dim)
            for q0 in range(0, q, chunk):
                q1 = min(q, q0 + chunk)
                columns, weights = _bilinear_entries(
                    sampling_locations[bi, q0:q1],
                    attention_weights[bi, q0:q1],
                    spatial_shapes,
                    feature_level_start_index,
                    index_dtype,
                )
                if has_empty_feature_level:  # its clamped "pixel" may sit one past the end of value
                    columns = columns.clamp_(max=s * n_heads - 1)
                n_rows = columns.shape[0]
                crow = torch.arange(0, n_rows * k + 1, k, dtype=index_dtype, device=value.device)
                with warnings.catch_warnings():  # "sparse CSR support is in beta"
                    warnings.simplefilter("ignore", UserWarning)
                    matrix = torch.sparse_csr_tensor(
                        crow, columns.reshape(-1), weights.reshape(-1), size=(n_rows, s * n_heads)
                    )
                    output[bi, q0:q1] = (matrix @ rows_of_value).view(q1 - q0, n_heads, head_dim)
    return output.view(b, q, n_heads * head_dim)
