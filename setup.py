"""Installs the ``semantic_sam`` package.

The multi-scale deformable attention kernels (``semantic_sam._C``): with CUDA usable (a GPU
and ``CUDA_HOME``) or ``FORCE_CUDA=1``, the CUDA and C++ kernels; otherwise the C++ CPU kernel
only, skipped with a warning if it cannot be compiled (the pure-PyTorch path always works).
"""
import glob
import os

from setuptools import find_packages, setup


def _extensions():
    """``semantic_sam._C``: the CUDA + C++ kernels when CUDA is usable or FORCE_CUDA=1, else the
    C++ CPU kernel alone (SEMANTIC_SAM_NO_CPU_KERNEL=1 skips it). A failed build of the CPU-only
    kernel is reported and skipped: the pure-PyTorch path is always there."""
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
    except ImportError:
        return [], {}
    here = os.path.dirname(os.path.abspath(__file__))
    csrc = os.path.join(here, "semantic_sam", "ops", "csrc")
    cpp_sources = [os.path.relpath(s, here) for s in glob.glob(os.path.join(csrc, "*.cpp"))]
    force = os.environ.get("FORCE_CUDA", "0") == "1"
    if force or (torch.cuda.is_available() and CUDA_HOME is not None):
        if CUDA_HOME is None:
            raise RuntimeError("FORCE_CUDA=1 but no CUDA toolkit found: set CUDA_HOME (e.g. /usr/local/cuda)")
        include_dirs = [csrc]
        # pip-installed CUDA wheels ship headers (cublas, cusparse) that a bare toolkit may lack.
        import site

        for sp in site.getsitepackages():
            include_dirs += glob.glob(os.path.join(sp, "nvidia", "*", "include"))
        cu_sources = [os.path.relpath(s, here) for s in glob.glob(os.path.join(csrc, "cuda", "*.cu"))]
        ext = CUDAExtension(
            "semantic_sam._C",
            sources=cpp_sources + cu_sources,
            include_dirs=include_dirs,
            define_macros=[("WITH_CUDA", None)],
            extra_compile_args={
                "cxx": ["-O3"],
                "nvcc": [
                    "-O3",
                    "-DCUDA_HAS_FP16=1",
                    "-D__CUDA_NO_HALF_OPERATORS__",
                    "-D__CUDA_NO_HALF_CONVERSIONS__",
                    "-D__CUDA_NO_HALF2_OPERATORS__",
                ],
            },
        )
        return [ext], {"build_ext": BuildExtension}
    if os.environ.get("SEMANTIC_SAM_NO_CPU_KERNEL", "0") == "1":
        return [], {}
    ext = CppExtension(
        "semantic_sam._C", sources=cpp_sources, include_dirs=[csrc], extra_compile_args={"cxx": ["-O3"]}
    )

    class OptionalBuildExtension(BuildExtension):
        def run(self):
            try:
                super().run()
            except Exception as e:  # noqa: BLE001  (optional speed-up; never block the install)
                print(f"warning: building the optional C++ CPU kernel failed ({e}); using the PyTorch path")

    return [ext], {"build_ext": OptionalBuildExtension}


ext_modules, cmdclass = _extensions()

setup(
    name="semantic_sam",
    version="0.1.0",
    description="Semantic-SAM (segment and recognize anything at any granularity) on detectron2",
    python_requires=">=3.10",
    packages=find_packages(include=["semantic_sam", "semantic_sam.*"]),
    # Non-Python files the installed package reads: the config schema (semantic_sam.config) and the
    # kernel sources (JIT build of the CPU kernel, semantic_sam.ops.ms_deform_attn_cpu).
    package_data={
        "semantic_sam": [
            "config_defaults/*.yaml",
            "ops/csrc/*.cpp",
            "ops/csrc/*.h",
            "ops/csrc/cuda/*.cu",
            "ops/csrc/cuda/*.cuh",
            "ops/csrc/cuda/*.h",
        ]
    },
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
