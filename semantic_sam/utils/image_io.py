"""Reading user images (files, arrays, PIL images) into (H, W, 3) uint8 RGB, refusing what is unsafe.

What is converted, and how:

* uint8 and bool: as is (bool -> 0 / 255).
* uint16 (16-bit PNG / TIFF, arrays): by the full 16-bit range, ``round(v * 255 / 65535)``.
* float (32-bit float TIFF, arrays): values must lie in [0, 1] and are mapped by ``round(v * 255)``.

What is refused with :class:`UnsupportedImageError` (a ``ValueError`` and a user error): float pixels that are NaN,
infinite or outside [0, 1]; other integer types (32-bit TIFFs, int64 arrays), whose range is
ambiguous; files with more pixels than ``PIL.Image.MAX_IMAGE_PIXELS`` (about 89.5 million, Pillow's
decompression-bomb limit).
"""
from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import UserError

__all__ = ["UnsupportedImageError", "load_image", "to_rgb_uint8"]

# PIL modes returned as arrays of their own dtype (uint16, int32, float32) and converted below;
# every other mode ("1", "L", "P", "LA", "CMYK", ...) is converted to RGB by PIL.
_HIGH_DEPTH_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


class UnsupportedImageError(ValueError, UserError):
    """An image that is refused: its pixel type or values, its size or its aspect ratio. Command-line
    tools wrapped in :func:`semantic_sam.utils.cli.exit_on_user_error` report it in one line."""


def _check_pixel_count(width: int, height: int) -> None:
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height > limit:
        raise UnsupportedImageError(
            f"image is {width}x{height} = {width * height} pixels, more than the limit of {limit} "
            "(PIL.Image.MAX_IMAGE_PIXELS; a possible decompression bomb)"
        )


def _pil_to_array(im: Image.Image) -> np.ndarray:
    """(H, W) array of the image's own dtype for 16-bit, 32-bit and float modes, else (H, W, 3|4) uint8."""
    _check_pixel_count(im.width, im.height)
    if im.mode not in _HIGH_DEPTH_MODES + ("RGB", "RGBA", "L"):
        im = im.convert("RGB")
    return np.array(im)  # a writable copy


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as an (H, W, 3) uint8 RGB array (EXIF orientation applied).

    Grayscale, palette and RGBA files are converted to RGB (alpha is dropped); 16-bit and float
    files are converted as described in the module docstring.

    Raises:
        FileNotFoundError: no such file.
        UnsupportedImageError: too many pixels, or a refused pixel type or value.
        ValueError: the file is not an image PIL can read.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with warnings.catch_warnings():
            # PIL warns above MAX_IMAGE_PIXELS and raises above twice that: refuse both
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return to_rgb_uint8(ImageOps.exif_transpose(im))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise UnsupportedImageError(f"{path}: {e}") from None
    except UnsupportedImageError as e:
        raise UnsupportedImageError(f"{path}: {e}") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"{path}: not a readable image file ({e})") from None


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """Same-shape uint8 array of a bool, uint8, uint16 or float image (see the module docstring)."""
    if image.dtype == np.uint8:
        return image
    if image.dtype == bool:
        return image.astype(np.uint8) * 255
    if image.dtype.kind == "u" and image.dtype.itemsize == 2:  # uint16 of either byte order
        return np.rint(image / 257.0).astype(np.uint8)  # 65535 / 255 = 257
    if np.issubdtype(image.dtype, np.floating):
        if not np.isfinite(image).all():
            raise UnsupportedImageError("float image has NaN or infinite pixels")
        lo, hi = float(image.min(initial=0.0)), float(image.max(initial=0.0))
        if lo < 0.0 or hi > 1.0:
            raise UnsupportedImageError(
                f"float image values must be in [0, 1], got [{lo:g}, {hi:g}]; "
                "scale them to [0, 1] or pass uint8 (0-255)"
            )
        return np.rint(image * 255.0).astype(np.uint8)
    raise UnsupportedImageError(
        f"image dtype {image.dtype} is not supported: pass uint8 (0-255), uint16 (0-65535) or float in [0, 1]"
    )


def to_rgb_uint8(image: np.ndarray | Image.Image, image_format: str = "RGB") -> np.ndarray:
    """Check an image array and convert it to (H, W, 3) uint8 RGB.

    Args:
        image: (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) array of dtype uint8, bool, uint16 or
            float in [0, 1] (see the module docstring), or a PIL image (any mode; ``image_format`` is
            then ignored). Grayscale is replicated to 3 channels; a 4th (alpha) channel is dropped.
        image_format: "RGB" or "BGR": the channel order of a 3- or 4-channel ``image``.

    Returns:
        (H, W, 3) uint8 RGB array.

    Raises:
        TypeError: ``image`` is neither a numpy array nor a PIL image.
        UnsupportedImageError: a refused dtype or pixel value, or too many pixels (PIL images).
        ValueError: a bad shape or ``image_format``.
    """
    if isinstance(image, Image.Image):
        image = _pil_to_array(image)
        image_format = "RGB"
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array (H, W, C) or a PIL image, got {type(image).__name__}")
    if image_format not in ("RGB", "BGR"):
        raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"image must have shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image is empty: shape {image.shape}")
    image = _to_uint8(image)
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    image = image[:, :, :3]
    if image_format == "BGR":
        image = image[:, :, ::-1]
    return np.ascontiguousarray(image)
