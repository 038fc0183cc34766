"""The demo's results: masks per prompt (shared by the web app and the headless mode) and the
headless outputs, overlay PNGs and ``masks.json`` (masks as COCO RLE) in an output folder.

Coordinates are pixels of the image: clicks (x, y), boxes xyxy, mask boxes ``bbox`` xywh.

With a model that has a text encoder every mask also carries its labels (``object_label``,
``object_score``, ``part_label``, ``part_score``; :mod:`semantic_sam.predictor.labels`): they go into
``masks.json`` and are written on the overlays as ``"object"`` or ``"object: part"`` (interactive
overlays add the predicted IoU). Without one, the outputs are what they were.
"""
from __future__ import annotations

import json
import os
from typing import Any, Sequence

import numpy as np
from PIL import Image

from semantic_sam.errors import UserError
from semantic_sam.predictor.amg_utils import coco_rle_to_mask, masks_to_coco_rle
from semantic_sam.predictor.labels import LABEL_FIELDS, label_text
from utils.visualizer import draw_text, render_auto_masks, render_prompt_mask

__all__ = [
    "interactive_results",
    "mask_text",
    "render_auto_results",
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
        ``{"mask", "score", "level", "area"}`` sorted by score (plus the label fields when the model
        has a text encoder); ``postprocess`` applies the predictor's :meth:`select_masks` (score and
        duplicate filter, hole and island clean-up), else every level is kept.
    """
    levels = list(levels)
    labels = None
    if predictor.has_text_encoder:
        masks, scores, _, labels = predictor.predict(
            point_coords=clicks or None, box=boxes or None, levels=levels, return_labels=True
        )
    else:
        masks, scores, _ = predictor.predict(point_coords=clicks or None, box=boxes or None, levels=levels)
    prompts = [("point", list(map(float, c))) for c in clicks] + [("box", list(map(float, b))) for b in boxes]
    results = []
    for p, ((kind, coords), m, s) in enumerate(zip(prompts, masks, scores)):
        if postprocess:
            records = predictor.select_masks(m, s, levels)
        else:
            order = np.argsort(-s, kind="stable")
            records = [{"mask": m[i], "score": float(s[i]), "level": int(levels[i]), "area": int(m[i].sum())} for i in order]
        if labels is not None:
            predictor.label_records(records, labels, p, levels)
        results.append({"type": kind, "coords": coords, "masks": records})
    return results


def mask_text(record: dict) -> str | None:
    """A record's label text, ``"object"`` or ``"object: part"``; None when it has no labels."""
    if "object_label" not in record:
        return None
    return label_text(record["object_label"], record["part_label"])


def render_prompt_results(image: np.ndarray, prompt: dict) -> list[tuple[np.ndarray, dict]]:
    """One (overlay, record) pair per mask of a prompt of :func:`interactive_results`; the overlay's
    text is the predicted IoU, after the labels when there are some (``"person: head (0.93)"``)."""
    clicks = [prompt["coords"]] if prompt["type"] == "point" else []
    boxes = [prompt["coords"]] if prompt["type"] == "box" else []
    pairs = []
    for r in prompt["masks"]:
        label = mask_text(r)
        text = f"{r['score']:.2f}" if label is None else f"{label} ({r['score']:.2f})"
        pairs.append((render_prompt_mask(image, r["mask"], text, clicks=clicks, boxes=boxes), r))
    return pairs


def render_auto_results(image: np.ndarray, records: Sequence[dict], masks: Sequence[np.ndarray]) -> np.ndarray:
    """All masks of a generation over the image (:func:`~utils.visualizer.render_auto_masks`); when the
    records have labels, each mask's label text is written at the centre of its box, largest mask
    first, so that the labels of small masks end up on top.

    Args:
        records: the generator's records; masks: their (H, W) bool masks, in the same order.
    """
    overlay = render_auto_masks(image, masks)
    for r in sorted(records, key=lambda r: -r["area"]):
        label = mask_text(r)
        if label is not None:
            x, y, w, h = r["bbox"]
            overlay = draw_text(overlay, label, (x + w / 2, y + h / 2))
    return overlay


def _bbox_xywh(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min()), float(ys.max() - ys.min())]


def write_interactive_outputs(image: np.ndarray, results: list[dict], output_dir: str) -> list[dict]:
    """Write ``prompt{i}_level{l}.png`` for every mask of :func:`interactive_results`; return the prompts'
    ``masks.json`` entries (each mask with its score, area, bbox, RLE and overlay file name, and its
    label fields when it has some)."""
    prompts_json = []
    for i, prompt in enumerate(results):
        entries = []
        for overlay, rec in render_prompt_results(image, prompt):
            name = f"prompt{i}_level{rec['level']}.png"
            Image.fromarray(overlay).save(os.path.join(output_dir, name))
            entry = {"level": rec["level"], "score": rec["score"], "area": rec["area"], "bbox": _bbox_xywh(rec["mask"]),
                     "segmentation": masks_to_coco_rle(rec["mask"][None])[0], "overlay": name}
            entry.update({k: rec[k] for k in LABEL_FIELDS if k in rec})
            entries.append(entry)
        prompts_json.append({"type": prompt["type"], "coords": prompt["coords"], "masks": entries})
    return prompts_json


def write_auto_outputs(image: np.ndarray, records: list[dict], output_dir: str) -> None:
    """Write ``auto.png``: every mask of the generator's ``coco_rle`` records over the image, with its
    labels if it has some (:func:`render_auto_results`)."""
    masks = [coco_rle_to_mask(r["segmentation"]) for r in records]
    Image.fromarray(render_auto_results(image, records, masks)).save(os.path.join(output_dir, AUTO_OVERLAY))


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
