"""The resize that feeds the model.

The reference's demos resize the short side of every image to 640 pixels (PIL bicubic) before
encoding; :class:`ResizeShortestSide` does the same and maps prompt coordinates between the
original frame and the resized ("input") frame. Unlike the reference it caps the long side (at
``DEFAULT_MAX_SIZE`` by default) and refuses images more elongated than ``MAX_ASPECT_RATIO``, so a
4x480 image is an error instead of a 640x76800 encoding that needs more than 8 GB.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

from ..utils.image_io import UnsupportedImageError

__all__ = ["DEFAULT_MAX_SIZE", "MAX_ASPECT_RATIO", "ResizeShortestSide"]

# 640 x 2560 as the reference config's ADE20K test resize (MIN_SIZE_TEST 640, MAX_SIZE_TEST 2560): any
# image up to 4:1 is resized exactly as the reference demo does; a longer one is encoded at <= 1.6 MP.
DEFAULT_MAX_SIZE = 2560
# Beyond 20:1 the capped short side is under 128 pixels (4 cells of the stride-32 features).
MAX_ASPECT_RATIO = 20.0


class ResizeShortestSide:
    """Resize so that the short side is ``short_side`` pixels (PIL bicubic), as the reference demos do.

    ``short_side=None`` keeps the size. The long side is ``int(short_side * long / short)``, as
    torchvision's ``Resize(int)``; then, if it exceeds ``max_size``, both sides are scaled down so
    that it equals ``max_size`` (detectron2's ``ResizeShortestEdge(max_size=...)``; the reference
    has no cap). ``max_size=None`` removes the cap.

    Images whose long side exceeds ``max_aspect_ratio`` times their short side are refused with
    :class:`UnsupportedImageError`; ``max_aspect_ratio=None`` accepts any shape.
    """

    def __init__(
        self,
        short_side: int | None = 640,
        max_size: int | None = DEFAULT_MAX_SIZE,
        max_aspect_ratio: float | None = MAX_ASPECT_RATIO,
    ) -> None:
        if short_side is not None and short_side < 1:
            raise ValueError(f"short_side must be a positive int or None, got {short_side}")
        if max_size is not None and max_size < 1:
            raise ValueError(f"max_size must be a positive int or None, got {max_size}")
        if max_aspect_ratio is not None and not max_aspect_ratio >= 1:
            raise ValueError(f"max_aspect_ratio must be >= 1 or None, got {max_aspect_ratio}")
        self.short_side = short_side
        self.max_size = max_size
        self.max_aspect_ratio = max_aspect_ratio

    def get_output_shape(self, h: int, w: int) -> tuple[int, int]:
        """(H, W) of the resized image, given the original (H, W).

        Raises:
            UnsupportedImageError: the long side is more than ``max_aspect_ratio`` times the short.
        """
        if self.max_aspect_ratio is not None and max(h, w) > self.max_aspect_ratio * min(h, w):
            raise UnsupportedImageError(
                f"image of width {w} and height {h} is too elongated: its aspect ratio "
                f"{max(h, w) / min(h, w):.3g}:1 exceeds the limit of {self.max_aspect_ratio:g}:1"
            )
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
