// Binary masks from 1/4-resolution logits, C++ CPU kernel.
//
// out[n, y, x] = bilinear_x4(low_res)[n, y, x] > 0 on the top-left (out_h, out_w) region of the x4 frame,
// with F.interpolate's align_corners=False source indices, weights and order of operations
// (interpolate along x on rows y0 and y1, then blend the two rows), written straight to bool: no
// full-resolution float logits are materialized.
#include "mask_upsample_cpu.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define SSAM_UP_CLONES __attribute__((target_clones("arch=skylake-avx512", "arch=haswell", "default")))
#else
#define SSAM_UP_CLONES
#endif

namespace {

struct Taps {
  std::vector<int64_t> i0, i1;
  std::vector<float> w0, w1;
};

// PyTorch's area_pixel_compute_source_index + compute_source_index_and_lambda (align_corners=False)
// for output indices [0, used) of an in_size -> 4 * in_size resize.
Taps linear_taps(int64_t in_size, int64_t used) {
  const float scale = static_cast<float>(in_size) / static_cast<float>(4 * in_size);
  Taps t;
  t.i0.resize(used);
  t.i1.resize(used);
  t.w0.resize(used);
  t.w1.resize(used);
  for (int64_t o = 0; o < used; ++o) {
    float src = static_cast<float>(scale * (static_cast<double>(o) + 0.5) - 0.5);
    if (src < 0.f) {
      src = 0.f;
    }
    const int64_t i0 = std::min(static_cast<int64_t>(std::floor(src)), in_size - 1);
    const float l1 = std::min(std::max(src - static_cast<float>(i0), 0.f), 1.f);
    t.i0[o] = i0;
    t.i1[o] = i0 + (i0 < in_size - 1 ? 1 : 0);
    t.w0[o] = 1.f - l1;
    t.w1[o] = l1;
  }
  return t;
}

// Masks [begin, end): rows of the low-resolution map interpolated along x once each, then every
// output row blended from two of them and thresholded.
SSAM_UP_CLONES void upsample_range(
    const float* low, bool* out, int64_t h, int64_t w, int64_t out_h, int64_t out_w, const int64_t* xi0,
    const int64_t* xi1, const float* xw0, const float* xw1, const int64_t* yi0, const int64_t* yi1,
    const float* yw0, const float* yw1, int64_t begin, int64_t end) {
  const int64_t rows_used = std::min(h, yi1[out_h - 1] + 1);
  std::vector<float> horiz(static_cast<size_t>(rows_used * out_w));
  for (int64_t n = begin; n < end; ++n) {
    const float* src = low + n * h * w;
    for (int64_t r = 0; r < rows_used; ++r) {
      const float* row = src + r * w;
      float* dst = horiz.data() + r * out_w;
      for (int64_t x = 0; x < out_w; ++x) {
        dst[x] = row[xi0[x]] * xw0[x] + row[xi1[x]] * xw1[x];
      }
    }
    bool* out_n = out + n * out_h * out_w;
    for (int64_t y = 0; y < out_h; ++y) {
      const float* a = horiz.data() + yi0[y] * out_w;
      const float* b = horiz.data() + yi1[y] * out_w;
      const float wa = yw0[y], wb = yw1[y];
      bool* o = out_n + y * out_w;
      for (int64_t x = 0; x < out_w; ++x) {
        o[x] = (a[x] * wa + b[x] * wb) > 0.f;
      }
    }
  }
}

}  // namespace

at::Tensor bilinear_x4_threshold_cpu(const at::Tensor& low_res, int64_t out_h, int64_t out_w) {
  TORCH_CHECK(low_res.device().is_cpu(), "low_res must be a CPU tensor, got device ", low_res.device());
  TORCH_CHECK(low_res.dim() == 3, "low_res must be (N, h, w), got ", low_res.sizes());
  TORCH_CHECK(low_res.scalar_type() == at::kFloat, "low_res must be float32, got ", low_res.scalar_type());
  const int64_t n = low_res.size(0), h = low_res.size(1), w = low_res.size(2);
  TORCH_CHECK(out_h >= 0 && out_w >= 0 && out_h <= 4 * h && out_w <= 4 * w, "output size (", out_h, ", ", out_w,
              ") must be within 4x the low-resolution size (", h, ", ", w, ")");
  auto out = at::empty({n, out_h, out_w}, low_res.options().dtype(at::kBool));
  if (n == 0 || out_h == 0 || out_w == 0) {
    return out;
  }
  const auto low = low_res.contiguous();
  const Taps xt = linear_taps(w, out_w), yt = linear_taps(h, out_h);
  const float* low_p = low.data_ptr<float>();
  bool* out_p = out.data_ptr<bool>();
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    upsample_range(low_p, out_p, h, w, out_h, out_w, xt.i0.data(), xt.i1.data(), xt.w0.data(), xt.w1.data(),
                   yt.i0.data(), yt.i1.data(), yt.w0.data(), yt.w1.data(), begin, end);
  });
  return out;
}
