"""Locating the optional C++ CPU kernel of multi-scale deformable attention.

The kernel (``csrc/ms_deform_attn_cpu.cpp``) is found, in this order:

1. in the installed extension ``semantic_sam._C`` when it was built with it;
2. from a JIT build with ``torch.utils.cpp_extension.load`` (about 20-40 s once, cached by torch in
   ``$TORCH_EXTENSIONS_DIR``), done only when :func:`load_cpu_kernel` is called or the environment
   variable ``SEMANTIC_SAM_BUILD_CPU_KERNEL=1`` is set.

Without either, :func:`cpu_kernel` returns None and the PyTorch path is used.
"""
from __future__ import annotations

import logging
import os
from types import ModuleType
from typing import Optional

from .extension import compiled_extension

__all__ = ["cpu_kernel", "load_cpu_kernel"]

logger = logging.getLogger(__name__)

_BUILD_ENV = "SEMANTIC_SAM_BUILD_CPU_KERNEL"
_CSRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc")
_CPU_SOURCES = ("vision.cpp", "ms_deform_attn_checks.cpp", "ms_deform_attn_cpu.cpp", "mask_upsample_cpu.cpp")
_UNSET = object()
_kernel: object = _UNSET


def _has_entry_points(module: object) -> bool:
    return hasattr(module, "ms_deform_attn_cpu_forward") and hasattr(module, "ms_deform_attn_cpu_backward")


def load_cpu_kernel(verbose: bool = False) -> ModuleType:
    """Compile (or load from torch's cache) the C++ CPU kernel and use it from now on.

    Raises whatever the compiler raises when the build fails.
    """
    global _kernel
    from torch.utils.cpp_extension import load

    logger.info("Loading the C++ multi-scale deformable attention CPU kernel (compiles once, about a minute)")
    module = load(
        name="semantic_sam_ms_deform_attn_cpu",
        sources=[os.path.join(_CSRC, name) for name in _CPU_SOURCES],
        extra_include_paths=[_CSRC],
        extra_cflags=["-O3"],
        verbose=verbose,
    )
    _kernel = module
    return module


def cpu_kernel() -> Optional[ModuleType]:
    """The loaded CPU kernel module, or None when there is none."""
    global _kernel
    if _kernel is _UNSET:
        _kernel = None
        ext = compiled_extension()
        if ext is not None and _has_entry_points(ext):
            _kernel = ext
        elif os.environ.get(_BUILD_ENV, "0") == "1":
            _kernel = load_cpu_kernel()
    return _kernel  # type: ignore[return-value]
