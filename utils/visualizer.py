"""Overlay drawing for the demo: masks in colours with their scores, click markers and boxes.

All functions take and return (H, W, 3) uint8 RGB arrays and never modify their input.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import cv2
import numpy as np

__all__ = [
    "MASK_BLUE",
    "CLICK_RED",
    "auto_colors",
    "draw_box",
    "draw_click",
    "draw_masks",
    "draw_text",
    "render_auto_masks",
    "render_prompt_mask",
]

MASK_BLUE = (0, 0, 255)  # the reference demo draws every mask in blue
CLICK_RED = (255, 0, 0)
BOX_GREEN = (0, 200, 0)


def auto_colors(n: int, seed: int = 0) -> np.ndarray:
    """(n, 3) uint8 distinct, saturated colours (golden-angle hues, seeded brightness)."""
    rng = np.random.default_rng(seed)
    hues = (np.arange(n) * 137.508) % 360
    hsv = np.stack([hues / 2, np.full(n, 200), rng.integers(170, 256, n)], axis=1).astype(np.uint8)
    return cv2.cvtColor(hsv[None], cv2.COLOR_HSV2RGB)[0]


def draw_masks(
    image: np.ndarray,
    masks: Sequence[np.ndarray] | np.ndarray,
    colors: Sequence[Sequence[int]] | np.ndarray,
    alpha: float = 0.5,
    contour: bool = True,
) -> np.ndarray:
    """Blend each (H, W) bool mask over ``image`` in its colour (later masks on top), with an outline."""
    out = image.astype(np.float32).copy()
    for mask, color in zip(masks, colors):
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != image.shape[:2]:
            raise ValueError(f"mask shape {mask.shape} does not match image {image.shape[:2]}")
        c = np.asarray(color, dtype=np.float32)
        out[mask] = out[mask] * (1 - alpha) + c * alpha
    out = out.round().clip(0, 255).astype(np.uint8)
    if contour:
        for mask, color in zip(masks, colors):
            contours, _ = cv2.findContours(np.asarray(mask, np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(out, contours, -1, tuple(int(v) for v in color), 1)
    return out


def _font_scale(image: np.ndarray) -> float:
    return max(0.4, min(image.shape[:2]) / 700)


def draw_text(image: np.ndarray, text: str, xy: Sequence[float], color: Sequence[int] = (255, 255, 255)) -> np.ndarray:
    """Write ``text`` with its top-left corner near ``xy`` on a dark box, kept inside the image."""
    out = image.copy()
    scale = _font_scale(image)
    thick = max(1, int(round(scale * 1.5)))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    h, w = image.shape[:2]
    x = int(min(max(0, xy[0]), max(0, w - tw - 4)))
    y = int(min(max(th + 4, xy[1]), h - base - 2))
    cv2.rectangle(out, (x, y - th - 4), (x + tw + 4, y + base), (20, 20, 20), -1)
    cv2.putText(out, text, (x + 2, y - 2), cv2.FONT_HERSHEY_SIMPLEX, scale, tuple(int(c) for c in color), thick, cv2.LINE_AA)
    return out


def draw_click(image: np.ndarray, xy: Sequence[float], color: Sequence[int] = CLICK_RED, half: int | None = None) -> np.ndarray:
    """A filled square marker centred on the click (the reference draws 6 x 6 pixels; larger on big images)."""
    out = image.copy()
    h, w = image.shape[:2]
    half = half if half is not None else max(3, min(h, w) // 160)
    x, y = int(round(xy[0])), int(round(xy[1]))
    cv2.rectangle(out, (max(0, x - half), max(0, y - half)), (min(w - 1, x + half), min(h - 1, y + half)),
                  tuple(int(c) for c in color), -1)
    cv2.rectangle(out, (max(0, x - half - 1), max(0, y - half - 1)), (min(w - 1, x + half + 1), min(h - 1, y + half + 1)),
                  (255, 255, 255), 1)
    return out


def draw_box(image: np.ndarray, box: Sequence[float], color: Sequence[int] = BOX_GREEN) -> np.ndarray:
    """An xyxy rectangle outline."""
    out = image.copy()
    thick = max(1, min(image.shape[:2]) // 300)
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    cv2.rectangle(out, (x0, y0), (x1, y1), tuple(int(c) for c in color), thick)
    return out


def _label_anchor(mask: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return 0.0, 0.0
    return float(np.median(xs)), float(np.median(ys))


def render_prompt_mask(
    image: np.ndarray,
    mask: np.ndarray,
    text: str | None = None,
    clicks: Iterable[Sequence[float]] = (),
    boxes: Iterable[Sequence[float]] = (),
    color: Sequence[int] = MASK_BLUE,
) -> np.ndarray:
    """One mask of an interactive prompt as the reference demo shows it: the mask in blue, its score
    as text, the click marker(s) in red and the box prompt(s) in green."""
    out = draw_masks(image, [mask], [color])
    for box in boxes:
        out = draw_box(out, box)
    for xy in clicks:
        out = draw_click(out, xy)
    if text:
        out = draw_text(out, text, _label_anchor(mask))
    return out


def render_auto_masks(image: np.ndarray, masks: Sequence[np.ndarray], seed: int = 0, alpha: float = 0.55) -> np.ndarray:
    """All masks of an automatic generation in random colours, largest first so small ones stay visible."""
    if len(masks) == 0:
        return image.copy()
    order = np.argsort([-int(np.asarray(m).sum()) for m in masks], kind="stable")
    colors = auto_colors(len(masks), seed)
    return draw_masks(image, [masks[i] for i in order], colors[: len(masks)], alpha=alpha)
