// Python bindings of semantic_sam._C (multi-scale deformable attention, mask upsampling).
#include "mask_upsample_cpu.h"
#include "ms_deform_attn.h"

namespace {
bool with_cuda() {
#if defined(WITH_CUDA)
  return true;
#else
  return false;
#endif
}
}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("ms_deform_attn_forward", &ms_deform_attn_forward,
        "multi-scale deformable attention forward (CUDA or CPU by value's device)");
  m.def("ms_deform_attn_backward", &ms_deform_attn_backward,
        "multi-scale deformable attention backward -> [grad_value, grad_sampling_loc, grad_attn_weight]");
  m.def("ms_deform_attn_cpu_forward", &ms_deform_attn_cpu_forward, "multi-scale deformable attention forward, CPU");
  m.def("ms_deform_attn_cpu_backward", &ms_deform_attn_cpu_backward,
        "multi-scale deformable attention backward, CPU");
  m.def("bilinear_x4_threshold_cpu", &bilinear_x4_threshold_cpu,
        "binary masks: bilinear x4 upsampling (align_corners=False) of (N, h, w) float32 logits, cropped, > 0");
  m.def("with_cuda", &with_cuda, "whether the CUDA kernel was compiled in");
}
