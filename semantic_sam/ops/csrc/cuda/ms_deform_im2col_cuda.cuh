// Multi-scale deformable attention, CUDA device code: bilinear sampling ("im2col") and its gradient.
//
// Implements the algorithm of Deformable-DETR (Zhu et al., ICLR 2021; Apache-2.0 reference code);
// written for this project.
//
// Layouts (all contiguous), for the batch chunk a launch covers:
//   value        (B, S, nH, D);  spatial_shapes (L, 2) int64 (H, W);  level_start_index (L,) int64
//   sampling_loc (B, Q, nH, L, P, 2) normalized (x, y);  attn_weight (B, Q, nH, L, P)
//   output       (B, Q, nH * D)
// A location (x, y) maps to pixel coordinates (x * W - 0.5, y * H - 0.5) of its level (grid_sample with
// align_corners=False) and neighbours outside the level count as zero.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/cuda/Atomic.cuh>

#define MSDA_KERNEL_LOOP(i, n)                                                        \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)

namespace msda {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65535;

inline int num_blocks(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<int>(blocks < kMaxBlocks ? (blocks > 0 ? blocks : 1) : kMaxBlocks);
}

// Pixel coordinate of a normalized location, with F.grid_sample's arithmetic.
template <typename acc_t>
__device__ __forceinline__ acc_t unnormalize(acc_t loc, int64_t size) {
  return ((acc_t(2) * loc - acc_t(1) + acc_t(1)) * static_cast<acc_t>(size) - acc_t(1)) / acc_t(2);
}

// Bilinear sample of channel `c` of one head. `level_value` points at (token 0 of the level, head m,
// channel 0); consecutive tokens are `row_stride` = nH * D elements apart.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ acc_t bilinear(
    const scalar_t* level_value, int64_t height, int64_t width, int64_t row_stride, acc_t y, acc_t x, int64_t c) {
  const int64_t y0 = static_cast<int64_t>(floor(y));
  const int64_t x0 = static_cast<int64_t>(floor(x));
  const acc_t lh = y - static_cast<acc_t>(y0), lw = x - static_cast<acc_t>(x0);
  const acc_t hh = acc_t(1) - lh, hw = acc_t(1) - lw;
  acc_t v00 = 0, v01 = 0, v10 = 0, v11 = 0;
  const bool top = y0 >= 0, bottom = y0 + 1 < height, left = x0 >= 0, right = x0 + 1 < width;
  const int64_t base = (y0 * width + x0) * row_stride + c;
  if (top && left) v00 = static_cast<acc_t>(level_value[base]);
  if (top && right) v01 = static_cast<acc_t>(level_value[base + row_stride]);
  if (bottom && left) v10 = static_cast<acc_t>(level_value[base + width * row_stride]);
  if (bottom && right) v11 = static_cast<acc_t>(level_value[base + (width + 1) * row_stride]);
  return hh * hw * v00 + hh * lw * v01 + lh * hw * v10 + lh * lw * v11;
}

// One thread per output element (b, q, head, channel): sum over levels and points.
template <typename scalar_t>
__global__ void forward_kernel(
    int64_t n, const scalar_t* __restrict__ value, const int64_t* __restrict__ shapes,
    const int64_t* __restrict__ starts, const scalar_t* __restrict__ loc, const scalar_t* __restrict__ attn,
    int64_t S, int64_t nH, int64_t D, int64_t Q, int64_t L, int64_t P, scalar_t* __restrict__ output) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t row_stride = nH * D;
  MSDA_KERNEL_LOOP(index, n) {
    const int64_t c = index % D;
    const int64_t bqm = index / D;  // (b * Q + q) * nH + m
    const int64_t m = bqm % nH;
    const int64_t b = bqm / (nH * Q);
    const scalar_t* value_bm = value + b * S * row_stride + m * D;
    int64_t sample = bqm * L * P;
    acc_t acc = 0;
    for (int64_t l = 0; l < L; ++l) {
      const int64_t height = shapes[2 * l], width = shapes[2 * l + 1];
      const scalar_t* level_value = value_bm + starts[l] * row_stride;
      for (int64_t p = 0; p < P; ++p, ++sample) {
        const acc_t y = unnormalize(static_cast<acc_t>(loc[2 * sample + 1]), height);
        const acc_t x = unnormalize(static_cast<acc_t>(loc[2 * sample]), width);
        if (y > acc_t(-1) && x > acc_t(-1) && y < static_cast<acc_t>(height) && x < static_cast<acc_t>(width)) {
          acc += static_cast<acc_t>(attn[sample]) * bilinear(level_value, height, width, row_stride, y, x, c);
        }
      }
    }
    output[index] = static_cast<scalar_t>(acc);
  }
}

// One thread per sampling point (b, q, head, level, point), looping over channels: the location and
// weight gradients need no cross-thread reduction; value gradients are scattered with atomics.
template <typename scalar_t>
__global__ void backward_kernel(
    int64_t n, const scalar_t* __restrict__ value, const int64_t* __restrict__ shapes,
    const int64_t* __restrict__ starts, const scalar_t* __restrict__ loc, const scalar_t* __restrict__ attn,
    const scalar_t* __restrict__ grad_output, int64_t S, int64_t nH, int64_t D, int64_t Q, int64_t L, int64_t P,
    scalar_t* __restrict__ grad_value, scalar_t* __restrict__ grad_loc, scalar_t* __restrict__ grad_attn) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t row_stride = nH * D;
  MSDA_KERNEL_LOOP(sample, n) {
    const int64_t l = (sample / P) % L;
    const int64_t bqm = sample / (P * L);  // (b * Q + q) * nH + m
    const int64_t m = bqm % nH;
    const int64_t b = bqm / (nH * Q);
    const int64_t height = shapes[2 * l], width = shapes[2 * l + 1];
    const acc_t y = unnormalize(static_cast<acc_t>(loc[2 * sample + 1]), height);
    const acc_t x = unnormalize(static_cast<acc_t>(loc[2 * sample]), width);
    if (!(y > acc_t(-1) && x > acc_t(-1) && y < static_cast<acc_t>(height) && x < static_cast<acc_t>(width))) {
      continue;  // all neighbours are padding: every gradient stays zero
    }
    const int64_t offset = (b * S + starts[l]) * row_stride + m * D;
    const scalar_t* level_value = value + offset;
    scalar_t* level_grad = grad_value + offset;
    const scalar_t* g = grad_output + bqm * D;
    const acc_t a = static_cast<acc_t>(attn[sample]);

    const int64_t y0 = static_cast<int64_t>(floor(y));
    const int64_t x0 = static_cast<int64_t>(floor(x));
    const acc_t lh = y - static_cast<acc_t>(y0), lw = x - static_cast<acc_t>(x0);
    const acc_t hh = acc_t(1) - lh, hw = acc_t(1) - lw;
    // neighbours 0 = (y0, x0), 1 = (y0, x0 + 1), 2 = (y0 + 1, x0), 3 = (y0 + 1, x0 + 1)
    const bool top = y0 >= 0, bottom = y0 + 1 < height, left = x0 >= 0, right = x0 + 1 < width;
    const bool valid[4] = {top && left, top && right, bottom && left, bottom && right};
    const int64_t base = (y0 * width + x0) * row_stride;
    const int64_t offsets[4] = {base, base + row_stride, base + width * row_stride, base + (width + 1) * row_stride};
    const acc_t weights[4] = {hh * hw, hh * lw, lh * hw, lh * lw};

    acc_t dot[4] = {0, 0, 0, 0};  // grad_output . value of each neighbour
    for (int k = 0; k < 4; ++k) {
      if (!valid[k]) continue;
      const acc_t coef = a * weights[k];
      for (int64_t c = 0; c < D; ++c) {
        const acc_t gc = static_cast<acc_t>(g[c]);
        dot[k] += gc * static_cast<acc_t>(level_value[offsets[k] + c]);
        gpuAtomicAdd(level_grad + offsets[k] + c, static_cast<scalar_t>(coef * gc));
      }
    }
    grad_attn[sample] =
        static_cast<scalar_t>(weights[0] * dot[0] + weights[1] * dot[1] + weights[2] * dot[2] + weights[3] * dot[3]);
    const acc_t d_lw = hh * (dot[1] - dot[0]) + lh * (dot[3] - dot[2]);
    const acc_t d_lh = hw * (dot[2] - dot[0]) + lw * (dot[3] - dot[1]);
    grad_loc[2 * sample] = static_cast<scalar_t>(a * static_cast<acc_t>(width) * d_lw);
    grad_loc[2 * sample + 1] = static_cast<scalar_t>(a * static_cast<acc_t>(height) * d_lh);
  }
}

}  // namespace msda
