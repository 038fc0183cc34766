// Argument checks shared by the CPU and CUDA kernels of multi-scale deformable attention.
// They raise c10::Error (RuntimeError in Python) with a message naming the bad argument.
#pragma once
#include <torch/extension.h>

// Ranks, sizes, dtypes and contiguity of the five op inputs.
void ms_deform_attn_check_inputs(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_loc,
    const at::Tensor& attn_weight);

// Every level [start, start + H * W) lies inside the S tokens of value (guards the kernels' reads).
void ms_deform_attn_check_level_bounds(
    const at::Tensor& spatial_shapes, const at::Tensor& level_start_index, int64_t num_tokens);
