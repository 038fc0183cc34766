// Argument checks shared by the CPU and CUDA kernels of multi-scale deformable attention.
#include "ms_deform_attn_checks.h"

void ms_deform_attn_check_inputs(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_loc,
    const at::Tensor& attn_weight) {
  TORCH_CHECK(value.dim() == 4, "value must be (B, S, n_heads, head_dim), got ", value.sizes());
  TORCH_CHECK(spatial_shapes.dim() == 2 && spatial_shapes.size(1) == 2,
              "spatial_shapes must be (L, 2), got ", spatial_shapes.sizes());
  TORCH_CHECK(spatial_shapes.scalar_type() == at::kLong, "spatial_shapes must be int64");
  TORCH_CHECK(level_start_index.scalar_type() == at::kLong, "level_start_index must be int64");
  const int64_t L = spatial_shapes.size(0);
  TORCH_CHECK(level_start_index.dim() == 1 && level_start_index.size(0) == L,
              "level_start_index must be (L,) = (", L, "), got ", level_start_index.sizes());
  TORCH_CHECK(sampling_loc.dim() == 6 && sampling_loc.size(5) == 2,
              "sampling_loc must be (B, Q, n_heads, L, P, 2), got ", sampling_loc.sizes());
  TORCH_CHECK(sampling_loc.size(0) == value.size(0) && sampling_loc.size(2) == value.size(2) &&
                  sampling_loc.size(3) == L,
              "sampling_loc ", sampling_loc.sizes(), " does not match value ", value.sizes(), " and L = ", L);
  TORCH_CHECK(attn_weight.dim() == 5 && attn_weight.sizes() == sampling_loc.sizes().slice(0, 5),
              "attn_weight must be (B, Q, n_heads, L, P) = ", sampling_loc.sizes().slice(0, 5), ", got ",
              attn_weight.sizes());
  TORCH_CHECK(value.scalar_type() == sampling_loc.scalar_type() && value.scalar_type() == attn_weight.scalar_type(),
              "value, sampling_loc and attn_weight must share a dtype, got ", value.scalar_type(), ", ",
              sampling_loc.scalar_type(), ", ", attn_weight.scalar_type());
  TORCH_CHECK(value.is_contiguous(), "value must be contiguous");
  TORCH_CHECK(spatial_shapes.is_contiguous(), "spatial_shapes must be contiguous");
  TORCH_CHECK(level_start_index.is_contiguous(), "level_start_index must be contiguous");
  TORCH_CHECK(sampling_loc.is_contiguous(), "sampling_loc must be contiguous");
  TORCH_CHECK(attn_weight.is_contiguous(), "attn_weight must be contiguous");
}

void ms_deform_attn_check_level_bounds(
    const at::Tensor& spatial_shapes, const at::Tensor& level_start_index, int64_t S) {
  // small (L, 2) and (L,) tensors: read them on the CPU (a device copy for CUDA inputs)
  const at::Tensor shapes_cpu = spatial_shapes.cpu();
  const at::Tensor starts_cpu = level_start_index.cpu();
  const int64_t* shapes = shapes_cpu.data_ptr<int64_t>();
  const int64_t* starts = starts_cpu.data_ptr<int64_t>();
  for (int64_t l = 0; l < spatial_shapes.size(0); ++l) {
    TORCH_CHECK(shapes[2 * l] >= 0 && shapes[2 * l + 1] >= 0 && starts[l] >= 0 &&
                    starts[l] + shapes[2 * l] * shapes[2 * l + 1] <= S,
                "level ", l, " (H=", shapes[2 * l], ", W=", shapes[2 * l + 1], ", start=", starts[l],
                ") reaches past the ", S, " tokens of value");
  }
}

