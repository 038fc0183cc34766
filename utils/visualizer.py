"""Overlay drawing for the demo: masks in colours with their scores, click markers, boxes and legends.

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
    "draw_legend",
    "draw_masks",
    "draw_text",
    "render_auto_masks",
    "render_labelled_masks",
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


LEGEND_BACKGROUND = (255, 255, 255)
LEGEND_TEXT = (0, 0, 0)


def draw_legend(entries: Sequence[tuple[str, Sequence[int]]], width: int, scale: float = 0.4) -> np.ndarray:
    """A legend panel ``(h, width, 3)``: one colour swatch and its text per entry, in rows that wrap at
    ``width`` (an entry wider than the panel is cut at its edge). No entries: a (0, width, 3) panel.

    Args:
        entries: ``(text, rgb colour)`` pairs, drawn in this order.
        width: the panel's width (the image's, so that the panel goes below it).
        scale: the font scale (:func:`cv2.putText`); the swatch is the text's height.
    """
    if not entries:
        return np.zeros((0, width, 3), np.uint8)
    thick = max(1, int(round(scale * 1.5)))
    pad = max(3, int(round(8 * scale)))
    sizes = [cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick) for text, _ in entries]
    row_h = max(th + base for (_, th), base in sizes) + 2 * pad
    swatch = max(th for (_, th), _ in sizes) + 2
    positions, x, y = [], pad, 0
    for (tw, _), _ in sizes:
        w = swatch + pad + tw + 2 * pad
        if x > pad and x + w > width:
            x, y = pad, y + row_h
        positions.append((x, y))
        x += w
    out = np.empty((y + row_h, width, 3), np.uint8)
    out[:] = LEGEND_BACKGROUND
    for ((text, color), (x, y)), ((_, th), base) in zip(zip(entries, positions), sizes):
        top = y + (row_h - swatch) // 2
        cv2.rectangle(out, (x, top), (x + swatch - 1, top + swatch - 1), tuple(int(c) for c in color), -1)
        baseline = y + (row_h + th) // 2 - 1
        cv2.putText(out, text, (x + swatch + pad, baseline), cv2.FONT_HERSHEY_SIMPLEX, scale, LEGEND_TEXT, thick,
                    cv2.LINE_AA)
    return out


def render_labelled_masks(
    image: np.ndarray,
    masks: Sequence[np.ndarray],
    colors: Sequence[Sequence[int]],
    legend: Sequence[tuple[str, Sequence[int]]] = (),
    alpha: float = 0.55,
) -> np.ndarray:
    """Masks in their label's colour (largest first, so small ones stay visible), with a legend panel
    below the image (:func:`draw_legend`). The result is ``(H + legend height, W, 3)``; its top ``H`` rows
    differ from ``image`` exactly on the masks' pixels (blend or outline), unless a blend rounds back to
    the pixel's own value."""
    overlay = image.copy()
    if len(masks):
        order = np.argsort([-int(np.asarray(m).sum()) for m in masks], kind="stable")
        overlay = draw_masks(image, [masks[i] for i in order], [colors[i] for i in order], alpha=alpha)
    return np.concatenate([overlay, draw_legend(list(legend), image.shape[1], _font_scale(image))], axis=0)
