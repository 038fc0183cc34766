"""The demo's results: masks per prompt (shared by the web app and the headless mode) and the
headless outputs, overlay PNGs and ``masks.json`` (masks as COCO RLE) in an output folder.

Coordinates are pixels of the image: clicks (x, y), boxes xyxy, mask boxes ``bbox`` xywh.
"""
from __future__ import annotations

import json
import os
from typing import Any, Sequence

import numpy as np
from PIL import Image

from semantic_sam.errors import UserError
from semantic_sam.predictor.amg_utils import coco_rle_to_mask, masks_to_coco_rle
from utils.visualizer import render_auto_masks, render_prompt_mask

__all__ = [
    "interactive_results",
    "render_prompt_results",
    "write_auto_outputs",
    "write_interactive_outputs",
    "write_masks_json",
]

MASKS_JSON = "masks.json"
AUTO_OVERLAY = "auto.png"


def interactive_results(
    predictor, clicks: Sequence[Sequence[float]], boxes: Sequence[Sequence[float]], levels: Sequence[int],
    postprocess: bool = True,
) -> list[dict]:
    """Masks for every prompt (clicks, then boxes) of the predictor's image.

    Returns:
        one dict per prompt: ``type`` (``"point"`` or ``"box"``), ``coords`` and ``masks``, the records
        ``{"mask", "score", "level", "area"}`` sorted by score; ``postprocess`` applies the predictor's
        :meth:`select_masks` (score and duplicate filter, hole and island clean-up), else every level is kept.
    """
    masks, scores, _ = predictor.predict(point_coords=clicks or None, box=boxes or None, levels=levels)
    prompts = [("point", list(map(float, c))) for c in clicks] + [("box", list(map(float, b))) for b in boxes]
    results = []
    for (kind, coords), m, s in zip(prompts, masks, scores):
        if postprocess:
            records = predictor.select_masks(m, s, levels)
        else:
            order = np.argsort(-s, kind="stable")
            records = [{"mask": m[i], "score": float(s[i]), "level": int(levels[i]), "area": int(m[i].sum())} for i in order]
        results.append({"type": kind, "coords": coords, "masks": records})
    return results


def render_prompt_results(image: np.ndarray, prompt: dict) -> list[tuple[np.ndarray, dict]]:
    """One (overlay, record) pair per mask of a prompt of :func:`interactive_results`."""
    clicks = [prompt["coords"]] if prompt["type"] == "point" else []
    boxes = [prompt["coords"]] if prompt["type"] == "box" else []
    return [
        (render_prompt_mask(image, r["mask"], f"{r['score']:.2f}", clicks=clicks, boxes=boxes), r)
        for r in prompt["masks"]
    ]


def _bbox_xywh(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min()), float(ys.max() - ys.min())]


def write_interactive_outputs(image: np.ndarray, results: list[dict], output_dir: str) -> list[dict]:
    """Write ``prompt{i}_level{l}.png`` for every mask of :func:`interactive_results`; return the prompts'
    ``masks.json`` entries (each mask with its score, area, bbox, RLE and overlay file name)."""
    prompts_json = []
    for i, prompt in enumerate(results):
        entries = []
        for overlay, rec in render_prompt_results(image, prompt):
            name = f"prompt{i}_level{rec['level']}.png"
            Image.fromarray(overlay).save(os.path.join(output_dir, name))
            entries.append(
                {"level": rec["level"], "score": rec["score"], "area": rec["area"], "bbox": _bbox_xywh(rec["mask"]),
                 "segmentation": masks_to_coco_rle(rec["mask"][None])[0], "overlay": name}
            )
        prompts_json.append({"type": prompt["type"], "coords": prompt["coords"], "masks": entries})
    return prompts_json


def write_auto_outputs(image: np.ndarray, records: list[dict], output_dir: str) -> None:
    """Write ``auto.png``: every mask of the generator's ``coco_rle`` records over the image."""
    masks = [coco_rle_to_mask(r["segmentation"]) for r in records]
    Image.fromarray(render_auto_masks(image, masks)).save(os.path.join(output_dir, AUTO_OVERLAY))


def write_masks_json(out: dict[str, Any], output_dir: str) -> str:
    """Write ``out`` as ``masks.json``; return its path.

    Raises:
        UserError: ``out`` holds a non-finite number (nothing is written).
    """
    try:
        text = json.dumps(out, allow_nan=False)
    except ValueError:
        raise UserError(
            "the model returned a non-finite score (NaN or infinity); masks.json not written "
            "(check the checkpoint)"
        ) from None
    path = os.path.join(output_dir, MASKS_JSON)
    with open(path, "w") as f:
        f.write(text)
    return path
