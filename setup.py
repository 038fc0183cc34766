"""Installs the ``semantic_sam`` package.

The multi-scale deformable attention CUDA kernel (``semantic_sam._C``) is built only when
CUDA is usable (a GPU and ``CUDA_HOME``) or ``FORCE_CUDA=1`` is set; otherwise it is
skipped quietly and the pure-PyTorch path is used.
"""
import glob
import os

from setuptools import find_packages, setup


def _cuda_extension():
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CUDAExtension
    except ImportError:
        return [], {}
    force = os.environ.get("FORCE_CUDA", "0") == "1"
    if not (force or (torch.cuda.is_available() and CUDA_HOME is not None)):
        return [], {}
    if CUDA_HOME is None:
        raise RuntimeError("FORCE_CUDA=1 but no CUDA toolkit found: set CUDA_HOME (e.g. /usr/local/cuda)")
    here = os.path.dirname(os.path.abspath(__file__))
    csrc = os.path.join(here, "semantic_sam", "ops", "csrc")
    sources = glob.glob(os.path.join(csrc, "*.cpp")) + glob.glob(os.path.join(csrc, "cuda", "*.cu"))
    include_dirs = [csrc]
    # pip-installed CUDA wheels ship headers (cublas, cusparse) that a bare toolkit may lack.
    import site

    for sp in site.getsitepackages():
        include_dirs += glob.glob(os.path.join(sp, "nvidia", "*", "include"))
    ext = CUDAExtension(
        "semantic_sam._C",
        sources=[os.path.relpath(s, here) for s in sources],
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


ext_modules, cmdclass = _cuda_extension()

setup(
    name="semantic_sam",
    version="0.1.0",
    description="Semantic-SAM (segment and recognize anything at any granularity) on detectron2",
    python_requires=">=3.10",
    packages=find_packages(include=["semantic_sam", "semantic_sam.*"]),
    package_data={"semantic_sam": ["ops/csrc/*", "ops/csrc/cuda/*", "config_defaults.yaml"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
