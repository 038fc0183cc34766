"""Writers for the unusual image files the image-reading tests feed to ``load_image`` and demo.py."""
from __future__ import annotations

import os
import struct
import zlib

import numpy as np
from PIL import Image


def write_png_header(path: str | os.PathLike, width: int, height: int) -> None:
    """A PNG that declares ``width`` x ``height`` RGB pixels but holds no pixel data (a few bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")))
        f.write(chunk(b"IEND", b""))


def write_gray16_png(path: str | os.PathLike, values: np.ndarray) -> None:
    """(H, W) uint16 -> a 16-bit grayscale PNG."""
    assert values.dtype == np.uint16
    Image.fromarray(values).save(path)


def write_float_tiff(path: str | os.PathLike, values: np.ndarray) -> None:
    """(H, W) float32 -> a 32-bit float TIFF."""
    assert values.dtype == np.float32
    Image.fromarray(values).save(path)
