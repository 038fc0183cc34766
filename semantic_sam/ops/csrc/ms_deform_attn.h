// Multi-scale deformable attention: device dispatch of the compiled kernels.
//
// Follows the algorithm of Deformable-DETR (Zhu et al., ICLR 2021, Apache-2.0); written for this project.
#pragma once
#include <torch/extension.h>

#include "ms_deform_attn_cpu.h"

#if defined(WITH_CUDA)
#include "cuda/ms_deform_attn_cuda.h"
#endif

inline at::Tensor ms_deform_attn_forward(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_loc,
    const at::Tensor& attn_weight,
    int64_t im2col_step) {
  if (value.is_cuda()) {
#if defined(WITH_CUDA)
    return ms_deform_attn_cuda_forward(
        value, spatial_shapes, level_start_index, sampling_loc, attn_weight, im2col_step);
#else
    AT_ERROR("semantic_sam._C was not compiled with CUDA; rebuild with FORCE_CUDA=1");
#endif
  }
  return ms_deform_attn_cpu_forward(value, spatial_shapes, level_start_index, sampling_loc, attn_weight, im2col_step);
}

inline std::vector<at::Tensor> ms_deform_attn_backward(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_loc,
    const at::Tensor& attn_weight,
    const at::Tensor& grad_output,
    int64_t im2col_step) {
  if (value.is_cuda()) {
#if defined(WITH_CUDA)
    return ms_deform_attn_cuda_backward(
        value, spatial_shapes, level_start_index, sampling_loc, attn_weight, grad_output, im2col_step);
#else
    AT_ERROR("semantic_sam._C was not compiled with CUDA; rebuild with FORCE_CUDA=1");
#endif
  }
  return ms_deform_attn_cpu_backward(
      value, spatial_shapes, level_start_index, sampling_loc, attn_weight, grad_output, im2col_step);
}
