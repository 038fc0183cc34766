// Multi-scale deformable attention, CUDA host code: checks, batch chunking, dispatch, launches.
//
// Implements the algorithm of Deformable-DETR (Zhu et al., ICLR 2021; Apache-2.0 reference code);
// written for this project.
#include "ms_deform_attn_cuda.h"

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime.h>

#include "../ms_deform_attn_checks.h"
#include "ms_deform_im2col_cuda.cuh"

namespace {

void check_cuda(const at::Tensor& t, const char* name, const at::Tensor& value) {
  TORCH_CHECK(t.is_cuda(), name, " must be a CUDA tensor, got device ", t.device());
  TORCH_CHECK(t.device() == value.device(), name, " is on ", t.device(), " but value is on ", value.device());
}

void check_launch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  TORCH_CHECK(err == cudaSuccess, "ms_deform_attn ", what, " kernel failed: ", cudaGetErrorString(err));
}

void check_all(
    const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
    const at::Tensor& sampling_loc, const at::Tensor& attn_weight, int64_t im2col_step) {
  ms_deform_attn_check_inputs(value, spatial_shapes, level_start_index, sampling_loc, attn_weight);
  check_cuda(value, "value", value);
  check_cuda(spatial_shapes, "spatial_shapes", value);
  check_cuda(level_start_index, "level_start_index", value);
  check_cuda(sampling_loc, "sampling_loc", value);
  check_cuda(attn_weight, "attn_weight", value);
  TORCH_CHECK(im2col_step > 0, "im2col_step must be positive, got ", im2col_step);
}

}  // namespace

at::Tensor ms_deform_attn_cuda_forward(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_loc,
    const at::Tensor& attn_weight,
    int64_t im2col_step) {
  check_all(value, spatial_shapes, level_start_index, sampling_loc, attn_weight, im2col_step);
  const c10::cuda::CUDAGuard device_guard(value.device());
  const int64_t B = value.size(0), S = value.size(1), nH = value.size(2), D = value.size(3);
  const int64_t Q = sampling_loc.size(1), L = sampling_loc.size(3), P = sampling_loc.size(4);
  auto output = at::empty({B, Q, nH * D}, value.options());
  if (output.numel() == 0) return output;
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  // batches are processed im2col_step at a time (bounds one launch's grid)
  for (int64_t b0 = 0; b0 < B; b0 += im2col_step) {
    const int64_t bc = std::min(im2col_step, B - b0);
    const int64_t n = bc * Q * nH * D;
    AT_DISPATCH_FLOATING_TYPES_AND_HALF(value.scalar_type(), "ms_deform_attn_cuda_forward", [&] {
      msda::forward_kernel<scalar_t><<<msda::num_blocks(n), msda::kThreads, 0, stream>>>(
          n, value.data_ptr<scalar_t>() + b0 * S * nH * D, spatial_shapes.data_ptr<int64_t>(),
          level_start_index.data_ptr<int64_t>(), sampling_loc.data_ptr<scalar_t>() + b0 * Q * nH * L * P * 2,
          attn_weight.data_ptr<scalar_t>() + b0 * Q * nH * L * P, S, nH, D, Q, L, P,
          output.data_ptr<scalar_t>() + b0 * Q * nH * D);
    });
    check_launch("forward");
  }
  return output;
}

std::vector<at::Tensor> ms_deform_attn_cuda_backward(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_loc,
    const at::Tensor& attn_weight,
    const at::Tensor& grad_output,
    int64_t im2col_step) {
  check_all(value, spatial_shapes, level_start_index, sampling_loc, attn_weight, im2col_step);
  check_cuda(grad_output, "grad_output", value);
  const c10::cuda::CUDAGuard device_guard(value.device());
  const int64_t B = value.size(0), S = value.size(1), nH = value.size(2), D = value.size(3);
  const int64_t Q = sampling_loc.size(1), L = sampling_loc.size(3), P = sampling_loc.size(4);
  TORCH_CHECK(grad_output.is_contiguous() && grad_output.dim() == 3 && grad_output.size(0) == B &&
                  grad_output.size(1) == Q && grad_output.size(2) == nH * D,
              "grad_output must be contiguous (", B, ", ", Q, ", ", nH * D, "), got ", grad_output.sizes());
  TORCH_CHECK(grad_output.scalar_type() == value.scalar_type(), "grad_output dtype ", grad_output.scalar_type(),
              " differs from value dtype ", value.scalar_type());
  auto grad_value = at::zeros_like(value);
  auto grad_loc = at::zeros_like(sampling_loc);
  auto grad_attn = at::zeros_like(attn_weight);
  if (grad_output.numel() == 0) return {grad_value, grad_loc, grad_attn};
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  for (int64_t b0 = 0; b0 < B; b0 += im2col_step) {
    const int64_t bc = std::min(im2col_step, B - b0);
    const int64_t n = bc * Q * nH * L * P;
    AT_DISPATCH_FLOATING_TYPES_AND_HALF(value.scalar_type(), "ms_deform_attn_cuda_backward", [&] {
      msda::backward_kernel<scalar_t><<<msda::num_blocks(n), msda::kThreads, 0, stream>>>(
          n, value.data_ptr<scalar_t>() + b0 * S * nH * D, spatial_shapes.data_ptr<int64_t>(),
          level_start_index.data_ptr<int64_t>(), sampling_loc.data_ptr<scalar_t>() + b0 * Q * nH * L * P * 2,
          attn_weight.data_ptr<scalar_t>() + b0 * Q * nH * L * P, grad_output.data_ptr<scalar_t>() + b0 * Q * nH * D,
          S, nH, D, Q, L, P, grad_value.data_ptr<scalar_t>() + b0 * S * nH * D,
          grad_loc.data_ptr<scalar_t>() + b0 * Q * nH * L * P * 2,
          grad_attn.data_ptr<scalar_t>() + b0 * Q * nH * L * P);
    });
    check_launch("backward");
  }
  return {grad_value, grad_loc, grad_attn};
}
