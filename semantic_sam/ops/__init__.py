"""Multi-scale deformable attention: PyTorch path, compiled CUDA / C++ CPU kernels, explicit dispatch."""
from .ms_deform_attn import (
    MSDeformAttn,
    cpu_kernel_available,
    cuda_kernel_available,
    force_pytorch,
    ms_deform_attn,
    ms_deform_attn_pytorch,
)

__all__ = [
    "MSDeformAttn",
    "ms_deform_attn",
    "ms_deform_attn_pytorch",
    "cuda_kernel_available",
    "cpu_kernel_available",
    "force_pytorch",
]
