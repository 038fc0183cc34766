// Binary masks from 1/4-resolution logits, C++ CPU kernel (declaration).
#pragma once
#include <torch/extension.h>

at::Tensor bilinear_x4_threshold_cpu(const at::Tensor& low_res, int64_t out_h, int64_t out_w);
