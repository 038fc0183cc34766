// Multi-scale deformable attention, C++ CPU kernel.
//
// Same contract as the CUDA kernel and the PyTorch path (F.grid_sample, bilinear, zero padding,
// align_corners=False): a sampling location (x, y) in [0, 1] maps to pixel coordinates
// (x * W - 0.5, y * H - 0.5) of its level, the four neighbouring pixels are blended bilinearly, and
// pixels outside the level count as zero.
//
// Layouts (all contiguous):
//   value          (B, S, nH, D)
//   spatial_shapes (L, 2) int64 (H, W);  level_start_index (L,) int64
//   sampling_loc   (B, Q, nH, L, P, 2);  attn_weight (B, Q, nH, L, P)
//   output         (B, Q, nH * D)
//
// Forward is parallel over (b, q); backward is parallel over (b, head), whose slices of grad_value
// are disjoint, so no atomics are needed.
#include "ms_deform_attn_cpu.h"
#include "ms_deform_attn_checks.h"

#include <ATen/Parallel.h>

#include <cmath>
#include <vector>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define SSAM_CLONES __attribute__((target_clones("arch=skylake-avx512", "arch=haswell", "default")))
#define SSAM_ALWAYS_INLINE __attribute__((always_inline))
#else
#define SSAM_CLONES
#define SSAM_ALWAYS_INLINE
#endif

namespace {

// Bilinear corners of one sampling point: offsets (in elements, from the sample's (b, head) slice of
// value) and weights. Callers point corners outside the level at a row of zeros, so the inner loops
// over channels have no branches.
template <typename scalar_t>
struct Corners {
  int64_t offset[4];
  scalar_t weight[4];
  bool valid[4];
  scalar_t lh, lw;  // fractional parts, for the location gradient
};

template <typename scalar_t>
inline bool compute_corners(
    scalar_t loc_x, scalar_t loc_y, int64_t height, int64_t width,
    int64_t level_row0, int64_t row_stride, Corners<scalar_t>& c) {
  // loc * size - 0.5, computed as F.grid_sample does on the grid 2 * loc - 1 so the rounding matches
  const scalar_t gy = scalar_t(2) * loc_y - scalar_t(1);
  const scalar_t gx = scalar_t(2) * loc_x - scalar_t(1);
  const scalar_t y = ((gy + scalar_t(1)) * static_cast<scalar_t>(height) - scalar_t(1)) / scalar_t(2);
  const scalar_t x = ((gx + scalar_t(1)) * static_cast<scalar_t>(width) - scalar_t(1)) / scalar_t(2);
  if (!(y > scalar_t(-1) && x > scalar_t(-1) && y < static_cast<scalar_t>(height) &&
        x < static_cast<scalar_t>(width))) {
    return false;  // every neighbour is padding (also rejects NaN)
  }
  const int64_t y0 = static_cast<int64_t>(std::floor(y));
  const int64_t x0 = static_cast<int64_t>(std::floor(x));
  const scalar_t lh = y - static_cast<scalar_t>(y0);
  const scalar_t lw = x - static_cast<scalar_t>(x0);
  const scalar_t hh = scalar_t(1) - lh;
  const scalar_t hw = scalar_t(1) - lw;
  c.lh = lh;
  c.lw = lw;
  const int64_t ys[2] = {y0, y0 + 1};
  const int64_t xs[2] = {x0, x0 + 1};
  const scalar_t wy[2] = {hh, lh};
  const scalar_t wx[2] = {hw, lw};
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < 2; ++j) {
      const int k = 2 * i + j;
      const bool inside = ys[i] >= 0 && ys[i] < height && xs[j] >= 0 && xs[j] < width;
      c.valid[k] = inside;
      c.weight[k] = wy[i] * wx[j];
      c.offset[k] = inside ? (level_row0 + ys[i] * width + xs[j]) * row_stride : 0;
    }
  }
  return true;
}

// (b, q) rows [begin, end) of the forward pass.
template <typename scalar_t>
inline SSAM_ALWAYS_INLINE void forward_range(
    const scalar_t* value, const int64_t* shapes, const int64_t* starts, const scalar_t* loc,
    const scalar_t* attn, scalar_t* out, int64_t S, int64_t nH, int64_t D, int64_t Q,
    int64_t L, int64_t P, int64_t begin, int64_t end) {
  const int64_t row_stride = nH * D;  // elements between consecutive tokens of value
  {
    std::vector<scalar_t> zeros(D, scalar_t(0));
    std::vector<scalar_t> acc(D);
    for (int64_t bq = begin; bq < end; ++bq) {
      const int64_t b = bq / Q;
      const scalar_t* value_b = value + b * S * row_stride;
      for (int64_t h = 0; h < nH; ++h) {
        const scalar_t* value_bh = value_b + h * D;
        std::fill(acc.begin(), acc.end(), scalar_t(0));
        const int64_t sample0 = (bq * nH + h) * L * P;
        for (int64_t l = 0; l < L; ++l) {
          const int64_t height = shapes[2 * l], width = shapes[2 * l + 1];
          for (int64_t p = 0; p < P; ++p) {
            const int64_t s = sample0 + l * P + p;
            Corners<scalar_t> c;
            if (!compute_corners(loc[2 * s], loc[2 * s + 1], height, width, starts[l], row_stride, c)) {
              continue;
            }
            const scalar_t a = attn[s];
            const scalar_t w0 = a * c.weight[0], w1 = a * c.weight[1], w2 = a * c.weight[2], w3 = a * c.weight[3];
            const scalar_t* __restrict__ v0 = c.valid[0] ? value_bh + c.offset[0] : zeros.data();
            const scalar_t* __restrict__ v1 = c.valid[1] ? value_bh + c.offset[1] : zeros.data();
            const scalar_t* __restrict__ v2 = c.valid[2] ? value_bh + c.offset[2] : zeros.data();
            const scalar_t* __restrict__ v3 = c.valid[3] ? value_bh + c.offset[3] : zeros.data();
            scalar_t* __restrict__ accp = acc.data();
            for (int64_t d = 0; d < D; ++d) {
              accp[d] += w0 * v0[d] + w1 * v1[d] + w2 * v2[d] + w3 * v3[d];
            }
          }
        }
        std::copy(acc.begin(), acc.end(), out + (bq * nH + h) * D);
      }
    }
  }
}

// One clone per ISA, picked when the library loads, so the channel loops use the widest vectors
// the CPU has whatever flags the extension was compiled with.
#define SSAM_FORWARD_RANGE(scalar_t)                                                                   \
  SSAM_CLONES void forward_range_##scalar_t(                                                         \
      const scalar_t* value, const int64_t* shapes, const int64_t* starts, const scalar_t* loc,        \
      const scalar_t* attn, scalar_t* out, int64_t S, int64_t nH, int64_t D, int64_t Q, int64_t L,     \
      int64_t P, int64_t begin, int64_t end) {                                                         \
    forward_range<scalar_t>(value, shapes, starts, loc, attn, out, S, nH, D, Q, L, P, begin, end);     \
  }
SSAM_FORWARD_RANGE(float)
SSAM_FORWARD_RANGE(double)

inline void forward_range_any(const float* value, const int64_t* shapes, const int64_t* starts, const float* loc,
                              const float* attn, float* out, int64_t S, int64_t nH, int64_t D, int64_t Q, int64_t L,
                              int64_t P, int64_t begin, int64_t end) {
  forward_range_float(value, shapes, starts, loc, attn, out, S, nH, D, Q, L, P, begin, end);
}
inline void forward_range_any(const double* value, const int64_t* shapes, const int64_t* starts, const double* loc,
                              const double* attn, double* out, int64_t S, int64_t nH, int64_t D, int64_t Q, int64_t L,
                              int64_t P, int64_t begin, int64_t end) {
  forward_range_double(value, shapes, starts, loc, attn, out, S, nH, D, Q, L, P, begin, end);
}

template <typename scalar_t>
void forward_kernel(
    const scalar_t* value, const int64_t* shapes, const int64_t* starts, const scalar_t* loc,
    const scalar_t* attn, scalar_t* out, int64_t B, int64_t S, int64_t nH, int64_t D, int64_t Q,
    int64_t L, int64_t P) {
  at::parallel_for(0, B * Q, 16, [&](int64_t begin, int64_t end) {
    forward_range_any(value, shapes, starts, loc, attn, out, S, nH, D, Q, L, P, begin, end);
  });
}

template <typename scalar_t>
void backward_kernel(
    const scalar_t* value, const int64_t* shapes, const int64_t* starts, const scalar_t* loc,
    const scalar_t* attn, const scalar_t* grad_out, scalar_t* grad_value, scalar_t* grad_loc,
    scalar_t* grad_attn, int64_t B, int64_t S, int64_t nH, int64_t D, int64_t Q, int64_t L, int64_t P) {
  const int64_t row_stride = nH * D;
  at::parallel_for(0, B * nH, 1, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> zeros(D, scalar_t(0));
    std::vector<scalar_t> sink(D, scalar_t(0));  // gradient destination of padding corners
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / nH, h = bh % nH;
      const scalar_t* value_bh = value + b * S * row_stride + h * D;
      scalar_t* grad_value_bh = grad_value + b * S * row_stride + h * D;
      for (int64_t q = 0; q < Q; ++q) {
        const int64_t bqh = (b * Q + q) * nH + h;
        const scalar_t* g = grad_out + bqh * D;
        for (int64_t l = 0; l < L; ++l) {
          const int64_t height = shapes[2 * l], width = shapes[2 * l + 1];
          for (int64_t p = 0; p < P; ++p) {
            const int64_t s = (bqh * L + l) * P + p;
            Corners<scalar_t> c;
            if (!compute_corners(loc[2 * s], loc[2 * s + 1], height, width, starts[l], row_stride, c)) {
              continue;  // sample and all its gradients are zero
            }
            const scalar_t a = attn[s];
            const scalar_t* v[4];
            scalar_t* gv[4];
            for (int k = 0; k < 4; ++k) {
              v[k] = c.valid[k] ? value_bh + c.offset[k] : zeros.data();
              gv[k] = c.valid[k] ? grad_value_bh + c.offset[k] : sink.data();
            }
            // g . v_k for each corner
            scalar_t dot[4] = {0, 0, 0, 0};
            for (int64_t d = 0; d < D; ++d) {
              const scalar_t gd = g[d];
              dot[0] += gd * v[0][d];
              dot[1] += gd * v[1][d];
              dot[2] += gd * v[2][d];
              dot[3] += gd * v[3][d];
            }
            for (int k = 0; k < 4; ++k) {
              const scalar_t coef = a * c.weight[k];
              scalar_t* __restrict__ dst = gv[k];
              for (int64_t d = 0; d < D; ++d) {
                dst[d] += coef * g[d];
              }
            }
            grad_attn[s] = c.weight[0] * dot[0] + c.weight[1] * dot[1] + c.weight[2] * dot[2] + c.weight[3] * dot[3];
            const scalar_t hh = scalar_t(1) - c.lh, hw = scalar_t(1) - c.lw;
            // corners: 0 = (y0, x0), 1 = (y0, x1), 2 = (y1, x0), 3 = (y1, x1)
            const scalar_t d_lw = hh * (dot[1] - dot[0]) + c.lh * (dot[3] - dot[2]);
            const scalar_t d_lh = hw * (dot[2] - dot[0]) + c.lw * (dot[3] - dot[1]);
            grad_loc[2 * s] = a * static_cast<scalar_t>(width) * d_lw;
            grad_loc[2 * s + 1] = a * static_cast<scalar_t>(height) * d_lh;
          }
        }
      }
    }
  });
}

}  // namespace

static void check_cpu(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor, got device ", t.device());
}

// The shared shape/dtype checks, and every input on the CPU.
static void check_cpu_inputs(const at::Tensor& value, const at::Tensor& spatial_shapes,
                             const at::Tensor& level_start_index, const at::Tensor& sampling_loc,
                             const at::Tensor& attn_weight) {
  ms_deform_attn_check_inputs(value, spatial_shapes, level_start_index, sampling_loc, attn_weight);
  check_cpu(value, "value");
  check_cpu(spatial_shapes, "spatial_shapes");
  check_cpu(level_start_index, "level_start_index");
  check_cpu(sampling_loc, "sampling_loc");
  check_cpu(attn_weight, "attn_weight");
}

at::Tensor ms_deform_attn_cpu_forward(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_loc,
    const at::Tensor& attn_weight,
    int64_t /*im2col_step: CUDA only*/) {
  check_cpu_inputs(value, spatial_shapes, level_start_index, sampling_loc, attn_weight);
  const int64_t B = value.size(0), S = value.size(1), nH = value.size(2), D = value.size(3);
  const int64_t Q = sampling_loc.size(1), L = sampling_loc.size(3), P = sampling_loc.size(4);
  ms_deform_attn_check_level_bounds(spatial_shapes, level_start_index, S);
  auto output = at::empty({B, Q, nH * D}, value.options());
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_cpu_forward", [&] {
    forward_kernel<scalar_t>(
        value.data_ptr<scalar_t>(), spatial_shapes.data_ptr<int64_t>(), level_start_index.data_ptr<int64_t>(),
        sampling_loc.data_ptr<scalar_t>(), attn_weight.data_ptr<scalar_t>(), output.data_ptr<scalar_t>(), B, S, nH,
        D, Q, L, P);
  });
  return output;
}

std::vector<at::Tensor> ms_deform_attn_cpu_backward(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_loc,
    const at::Tensor& attn_weight,
    const at::Tensor& grad_output,
    int64_t /*im2col_step: CUDA only*/) {
  check_cpu_inputs(value, spatial_shapes, level_start_index, sampling_loc, attn_weight);
  check_cpu(grad_output, "grad_output");
  const int64_t B = value.size(0), S = value.size(1), nH = value.size(2), D = value.size(3);
  const int64_t Q = sampling_loc.size(1), L = sampling_loc.size(3), P = sampling_loc.size(4);
  TORCH_CHECK(grad_output.is_contiguous() && grad_output.dim() == 3 && grad_output.size(0) == B &&
                  grad_output.size(1) == Q && grad_output.size(2) == nH * D,
              "grad_output must be contiguous (", B, ", ", Q, ", ", nH * D, "), got ", grad_output.sizes());
  TORCH_CHECK(grad_output.scalar_type() == value.scalar_type(), "grad_output dtype ", grad_output.scalar_type(),
              " differs from value dtype ", value.scalar_type());
  ms_deform_attn_check_level_bounds(spatial_shapes, level_start_index, S);
  auto grad_value = at::zeros_like(value);
  auto grad_loc = at::zeros_like(sampling_loc);
  auto grad_attn = at::zeros_like(attn_weight);
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_cpu_backward", [&] {
    backward_kernel<scalar_t>(
        value.data_ptr<scalar_t>(), spatial_shapes.data_ptr<int64_t>(), level_start_index.data_ptr<int64_t>(),
        sampling_loc.data_ptr<scalar_t>(), attn_weight.data_ptr<scalar_t>(), grad_output.data_ptr<scalar_t>(),
        grad_value.data_ptr<scalar_t>(), grad_loc.data_ptr<scalar_t>(), grad_attn.data_ptr<scalar_t>(), B, S, nH, D,
        Q, L, P);
  });
  return {grad_value, grad_loc, grad_attn};
}
