"""Optional reduced-precision inference (bfloat16 autocast), off by default.

Everything runs in float32 unless a caller opts in::

    from semantic_sam.utils.precision import inference_autocast

    with torch.inference_mode(), inference_autocast("cpu", "bf16"):
        predictor.set_image(image)          # the backbone runs in bfloat16

What autocast changes in this model (as in the reference, whose pixel decoder and decoder layers are
``autocast(enabled=False)``): the Swin backbone's linear layers and matmuls, and the prediction heads
outside the decoder layers (mask embedding, box and IoU heads, the mask dot product) run in the
autocast dtype; the deformable pixel decoder and the decoder layers cast their inputs to float32 and
run in float32 whatever the context, unless ``pixel_decoder=True`` also lets the pixel decoder's
convolutions and linear layers run in the autocast dtype (its sampling locations, softmax, norms and
the deformable-attention kernel stay float32; its outputs are returned as float32). Measured
deviations and speed-ups are in docs/PERFORMANCE.md.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator, Optional, Union

import torch

__all__ = [
    "inference_autocast",
    "parse_dtype",
    "native_bf16_available",
    "describe",
    "pixel_decoder_autocast_allowed",
]

_PIXEL_DECODER_AUTOCAST: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "semantic_sam_pixel_decoder_autocast", default=False
)

_DTYPE_NAMES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "float": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
}


def parse_dtype(dtype: Union[str, torch.dtype, None]) -> torch.dtype:
    """``"bf16"`` / ``"bfloat16"`` / ``"fp16"`` / ``"fp32"`` (or a ``torch.dtype``, or None = float32) -> dtype."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype not in _DTYPE_NAMES.values():
            raise ValueError(f"unsupported inference dtype {dtype}; use float32, bfloat16 or float16")
        return dtype
    if not isinstance(dtype, str) or dtype.lower() not in _DTYPE_NAMES:
        raise ValueError(f"unknown inference dtype {dtype!r}; expected one of {sorted(_DTYPE_NAMES)}")
    return _DTYPE_NAMES[dtype.lower()]


def native_bf16_available() -> bool:
    """True when this CPU has native bfloat16 arithmetic (AVX512-BF16 or AMX), where bf16 autocast
    speeds up matrix products; elsewhere PyTorch emulates bf16 and it is usually slower than float32."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


@contextlib.contextmanager
def inference_autocast(
    device: Union[str, torch.device] = "cpu",
    dtype: Union[str, torch.dtype, None] = torch.bfloat16,
    enabled: bool = True,
    pixel_decoder: bool = False,
) -> Iterator[None]:
    """A ``torch.autocast`` context for inference on ``device`` in ``dtype``.

    Args:
        device: a device or device string ("cpu", "cuda:0"); only its type matters.
        dtype: bfloat16 (default) or float16, as a dtype or a name ("bf16", "fp16"); float32 or None
            gives a disabled context (plain float32), so callers can pass a user setting through.
        enabled: False gives a disabled context too.
        pixel_decoder: also run the pixel decoder's matrix products in ``dtype`` (the reference keeps
            it in float32; off by default). About halves its time on CPUs with AMX, at a deviation
            documented in docs/PERFORMANCE.md.

    Use it in a ``with`` statement, inside ``torch.inference_mode()``.
    """
    device_type = torch.device(device).type
    dt = parse_dtype(dtype)
    on = bool(enabled) and dt != torch.float32
    token = _PIXEL_DECODER_AUTOCAST.set(on and bool(pixel_decoder))
    try:
        with torch.autocast(device_type=device_type, dtype=dt if on else torch.bfloat16, enabled=on):
            yield
    finally:
        _PIXEL_DECODER_AUTOCAST.reset(token)


def pixel_decoder_autocast_allowed(device_type: str) -> bool:
    """True inside ``inference_autocast(..., pixel_decoder=True)`` with autocast on for ``device_type``."""
    return _PIXEL_DECODER_AUTOCAST.get() and torch.is_autocast_enabled(device_type)


def describe(dtype: Optional[Union[str, torch.dtype]]) -> str:
    """Short name of an inference dtype for logs and tables ("fp32", "bf16", "fp16")."""
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[parse_dtype(dtype)]
