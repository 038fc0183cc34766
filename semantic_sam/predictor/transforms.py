"""Image loading, conversion to RGB uint8 and the resize that feeds the model.

The reference's demos resize the short side of every image to 640 pixels (PIL bicubic) before
encoding; :class:`ResizeShortestSide` does the same and maps prompt coordinates between the
original frame and the resized ("input") frame.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["ResizeShortestSide", "load_image", "to_rgb_uint8"]


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as an (H, W, 3) uint8 RGB array (EXIF orientation applied).

    Grayscale, palette and RGBA files are converted to RGB (alpha is dropped).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not an image PIL can read.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            return np.asarray(im.convert("RGB")).copy()
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"{path}: not a readable image file ({e})") from None


def to_rgb_uint8(image: np.ndarray, image_format: str = "RGB") -> np.ndarray:
    """Check an image array and convert it to (H, W, 3) uint8 RGB.

    Args:
        image: (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) uint8 array, or a PIL image.
            Grayscale is replicated to 3 channels; a 4th (alpha) channel is dropped.
        image_format: "RGB" or "BGR": the channel order of a 3- or 4-channel ``image``.
    """
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
        image_format = "RGB"
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array (H, W, C) or a PIL image, got {type(image).__name__}")
    if image_format not in ("RGB", "BGR"):
        raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    if image.dtype != np.uint8:
        raise TypeError(f"image must be uint8 (0-255), got dtype {image.dtype}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"image must have shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image is empty: shape {image.shape}")
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    image = image[:, :, :3]
    if image_format == "BGR":
        image = image[:, :, ::-1]
    return np.ascontiguousarray(image)


class ResizeShortestSide:
    """Resize so that the short side is ``short_side`` pixels (PIL bicubic), as the reference demos do.

    ``short_side=None`` keeps the size. ``max_size`` (optional) caps the long side; the reference has
    no cap. The long side is ``int(short_side * long / short)``, as torchvision's ``Resize(int)``.
    """

    def __init__(self, short_side: int | None = 640, max_size: int | None = None) -> None:
        if short_side is not None and short_side < 1:
            raise ValueError(f"short_side must be a positive int or None, got {short_side}")
        if max_size is not None and max_size < 1:
            raise ValueError(f"max_size must be a positive int or None, got {max_size}")
        self.short_side = short_side
        self.max_size = max_size

    def get_output_shape(self, h: int, w: int) -> tuple[int, int]:
        """(H, W) of the resized image."""
        if self.short_side is None:
            new_h, new_w = h, w
        elif h <= w:
            new_h, new_w = self.short_side, int(self.short_side * w / h)
        else:
            new_h, new_w = int(self.short_side * h / w), self.short_side
        if self.max_size is not None and max(new_h, new_w) > self.max_size:
            scale = self.max_size / max(new_h, new_w)
            new_h, new_w = max(1, int(new_h * scale + 0.5)), max(1, int(new_w * scale + 0.5))
        return new_h, new_w

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (h, w, 3) uint8."""
        h, w = image.shape[:2]
        new_h, new_w = self.get_output_shape(h, w)
        if (new_h, new_w) == (h, w):
            return image
        return np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BICUBIC))

    def apply_coords(self, coords: np.ndarray, original_size: Sequence[int]) -> np.ndarray:
        """(..., 2) (x, y) pixel coordinates of the original image -> the resized frame."""
        h, w = original_size
        new_h, new_w = self.get_output_shape(h, w)
        out = np.array(coords, dtype=np.float64, copy=True)
        out[..., 0] *= new_w / w
        out[..., 1] *= new_h / h
        return out

    def apply_boxes(self, boxes: np.ndarray, original_size: Sequence[int]) -> np.ndarray:
        """(..., 4) xyxy pixel boxes of the original image -> the resized frame."""
        b = np.asarray(boxes, dtype=np.float64)
        return self.apply_coords(b.reshape(*b.shape[:-1], 2, 2), original_size).reshape(b.shape)
