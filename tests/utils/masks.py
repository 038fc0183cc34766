"""Test helper: where to click inside a mask."""
from __future__ import annotations

import cv2
import numpy as np


def interior_point(mask: np.ndarray) -> tuple[float, float, float]:
    """(x, y) of the pixel of ``mask`` (H, W) bool farthest from its boundary, and that distance."""
    dist = cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, 3)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return float(x), float(y), float(dist[y, x])
