"""The demo's results: masks per prompt, whole-image (panoptic) segments and the masks found by name
(shared by the web app and the headless mode), and the headless outputs: overlay PNGs and JSON files
(masks as COCO RLE) in an output folder.

Coordinates are pixels of the image: clicks (x, y), boxes xyxy, mask boxes ``bbox`` xywh.

With a model that has a text encoder every mask also carries its labels (``object_label``,
``object_score``, ``part_label``, ``part_score``; :mod:`semantic_sam.predictor.labels`): they go into
``masks.json`` and are written on the overlays as ``"object"`` or ``"object: part"`` (interactive
overlays add the predicted IoU). Without one, the outputs are what they were.

Naming what is segmented (a model with a text encoder): :func:`panoptic_segments` (a model with generic
queries as well) and :func:`automatic_items` give *labelled items*, dicts with ``label`` (an object name
of the vocabulary), ``score`` (float, or None where the model gives none), ``mask`` (H, W) bool,
``area`` and ``bbox``; :func:`find_items` keeps those whose label is one of some names;
:func:`write_panoptic_outputs` and :func:`write_find_outputs` write them (formats in their docstrings).
Each object name has one colour (:func:`label_colors`), on the overlays and in their legends.
"""
from __future__ import annotations

import json
import os
from typing import Any, Collection, Sequence

import numpy as np
from PIL import Image

from semantic_sam.errors import UserError
from semantic_sam.predictor.amg_utils import coco_rle_to_mask, masks_to_coco_rle
from semantic_sam.predictor.labels import LABEL_FIELDS, label_text
from utils.visualizer import auto_colors, draw_text, render_auto_masks, render_labelled_masks, render_prompt_mask

__all__ = [
    "FIND_JSON",
    "FIND_OVERLAY",
    "GENERIC_QUERIES",
    "PANOPTIC_JSON",
    "PANOPTIC_OVERLAY",
    "TEXT_ENCODER",
    "MissingModelPartError",
    "UnknownNameError",
    "automatic_items",
    "coco_stuff_names",
    "find_items",
    "interactive_results",
    "label_colors",
    "legend_labels",
    "mask_text",
    "match_names",
    "missing_parts",
    "panoptic_segments",
    "render_auto_results",
    "render_labelled_items",
    "render_prompt_results",
    "require_parts",
    "thing_flags",
    "write_auto_outputs",
    "write_find_outputs",
    "write_interactive_outputs",
    "write_masks_json",
    "write_panoptic_outputs",
]

MASKS_JSON = "masks.json"
AUTO_OVERLAY = "auto.png"
PANOPTIC_OVERLAY = "panoptic.png"
PANOPTIC_JSON = "panoptic.json"
FIND_OVERLAY = "find.png"
FIND_JSON = "find.json"


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


def _json_text(out: dict[str, Any], name: str) -> str:
    try:
        return json.dumps(out, allow_nan=False)
    except ValueError:
        raise UserError(
            f"the model returned a non-finite score (NaN or infinity); {name} not written (check the checkpoint)"
        ) from None


def _write_text(text: str, output_dir: str, name: str) -> str:
    path = os.path.join(output_dir, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def write_masks_json(out: dict[str, Any], output_dir: str) -> str:
    """Write ``out`` as ``masks.json``; return its path.

    Raises:
        UserError: ``out`` holds a non-finite number (nothing is written).
    """
    return _write_text(_json_text(out, MASKS_JSON), output_dir, MASKS_JSON)


# ------------------------------------------------------------------ naming what is segmented


TEXT_ENCODER = "a text encoder (MODEL.TEXT.ARCH unicl or open_clip)"
GENERIC_QUERIES = (
    "generic queries (MODEL.DECODER.NUM_OBJECT_QUERIES > 0, e.g. configs/semantic_sam_swinT_coco_sa1b.yaml)"
)


class MissingModelPartError(ValueError, UserError):
    """The model lacks a part a feature needs: a text encoder, generic queries."""


class UnknownNameError(ValueError, UserError):
    """A name to find that is not an object name of the vocabulary (it could never be a label), or no
    name at all; ``name`` is the unknown name (None: none was given)."""

    def __init__(self, message: str, name: str | None = None) -> None:
        super().__init__(message)
        self.name = name


def missing_parts(model, generic: bool) -> list[str]:
    """What ``model`` lacks to name masks (:data:`TEXT_ENCODER`) and, with ``generic``, to segment the
    whole image in one pass (:data:`GENERIC_QUERIES`); empty when it has everything."""
    missing = []
    if generic and not getattr(model, "has_generic_queries", False):
        missing.append(GENERIC_QUERIES)
    if getattr(model, "text_encoder", None) is None:
        missing.append(TEXT_ENCODER)
    return missing


def require_parts(model, feature: str, generic: bool) -> None:
    """Raise :class:`MissingModelPartError` naming ``feature`` and what ``model`` lacks for it
    (:func:`missing_parts`)."""
    missing = missing_parts(model, generic)
    if missing:
        lacks = "none" if len(missing) == 1 else "neither"
        raise MissingModelPartError(f"{feature} needs a model with {' and '.join(missing)}: this model has {lacks}")


def _name_key(name: str) -> str:
    from semantic_sam.modeling.language.templates import normalize_class_name

    return normalize_class_name(name).lower()


def coco_stuff_names() -> tuple[str, ...]:
    """COCO panoptic's 53 stuff classes as the default vocabulary names them (``sky``, ``brick wall``)."""
    from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

    from semantic_sam.modeling.language.templates import normalize_class_name

    return tuple(normalize_class_name(c["name"]) for c in sorted(COCO_CATEGORIES, key=lambda c: c["id"])
                 if not c["isthing"])


def thing_flags(objects: Sequence[str], stuff: Collection[str]) -> list[bool]:
    """Whether each object name is a thing (each instance a segment) rather than stuff (one segment per
    class): stuff when it is one of ``stuff`` (compared normalised and case-insensitively)."""
    stuff_keys = {_name_key(n) for n in stuff}
    return [_name_key(n) not in stuff_keys for n in objects]


def label_colors(objects: Sequence[str]) -> dict[str, tuple[int, int, int]]:
    """One RGB colour per object name, in vocabulary order (a repeated name keeps its first colour)."""
    colors: dict[str, tuple[int, int, int]] = {}
    for name, color in zip(objects, auto_colors(len(objects))):
        colors.setdefault(name, tuple(int(c) for c in color))
    return colors


def match_names(names: str | Sequence[str], objects: Sequence[str]) -> list[str]:
    """The object names of the vocabulary that ``names`` (a comma-separated string or a list) give,
    compared normalised and case-insensitively, without repeats, in the given order.

    Raises:
        UnknownNameError: no name is given, or a name is not in ``objects``.
    """
    if isinstance(names, str):
        names = names.split(",")
    given = [n.strip() for n in names if n.strip()]
    if not given:
        raise UnknownNameError("give at least one name to find (comma-separated)")
    by_key: dict[str, str] = {}
    for name in objects:
        by_key.setdefault(_name_key(name), name)
    out: list[str] = []
    for name in given:
        match = by_key.get(_name_key(name))
        if match is None:
            shown = ", ".join(objects[:12]) + (", ..." if len(objects) > 12 else "")
            raise UnknownNameError(
                f"{name!r} is not an object name of the vocabulary ({len(objects)} names: {shown})", name
            )
        if match not in out:
            out.append(match)
    return out


def panoptic_segments(predictor, image: np.ndarray, things: Sequence[bool]) -> list[dict]:
    """The panoptic segmentation of ``image`` by the model's generic queries, labelled in the predictor's
    object vocabulary (``model.segment``; the image resized by the predictor's transform, run in its
    precision; masks at the image's size).

    Args:
        predictor: a :class:`~semantic_sam.predictor.SemanticSamPredictor` of a model with generic
            queries and a text encoder (see :func:`require_parts`); its image is left as it was.
        image: (H, W, 3) uint8 RGB (other formats as :func:`~semantic_sam.predictor.to_rgb_uint8`).
        things: per object name, whether it is a thing (:func:`thing_flags`).

    Returns:
        One labelled item per segment, in segment id order: ``id`` (its value in the panoptic id map),
        ``category_id`` (index in the vocabulary), ``label``, ``isthing``, ``score`` (the segment's class
        score where the post-processing gives one in ``segments_info``, else None), ``mask``, ``area``,
        ``bbox`` (xywh).

    Raises:
        UnsupportedImageError: an image the predictor refuses.
    """
    import torch

    from semantic_sam.predictor import to_rgb_uint8
    from semantic_sam.utils.precision import inference_autocast

    rgb = to_rgb_uint8(image)
    h, w = rgb.shape[:2]
    objects = list(predictor.vocabulary.objects)
    resized = np.array(predictor.transform.apply_image(rgb), copy=True)  # writable and contiguous for torch
    inputs = [{"image": torch.from_numpy(resized).permute(2, 0, 1), "height": h, "width": w}]
    model = predictor.model
    with torch.inference_mode():
        embeddings = model.class_embeddings(objects)
        with inference_autocast(predictor.device, predictor.precision, pixel_decoder=True):
            result = model.segment(inputs, embeddings, is_thing=list(things), instance=False, semantic=False)[0]
    ids, segments_info = result["panoptic_seg"]
    ids = ids.cpu().numpy()
    items = []
    for info in segments_info:
        mask = ids == int(info["id"])
        score = info.get("score")
        items.append({
            "id": int(info["id"]), "category_id": int(info["category_id"]), "label": objects[int(info["category_id"])],
            "isthing": bool(info["isthing"]), "score": None if score is None else float(score), "mask": mask,
            "area": int(mask.sum()), "bbox": _bbox_xywh(mask),
        })
    return items


def automatic_items(records: Sequence[dict]) -> list[dict]:
    """The automatic generator's labelled records (``binary_mask`` or ``coco_rle`` output) as labelled
    items: ``label`` = the object label, ``score`` = its score, plus ``level``, ``predicted_iou`` and
    ``part_label``."""
    items = []
    for r in records:
        mask = r["segmentation"] if isinstance(r["segmentation"], np.ndarray) else coco_rle_to_mask(r["segmentation"])
        items.append({
            "label": r["object_label"], "score": float(r["object_score"]), "mask": np.asarray(mask, bool),
            "area": int(r["area"]), "bbox": [float(v) for v in r["bbox"]], "level": r["level"],
            "predicted_iou": float(r["predicted_iou"]), "part_label": r["part_label"],
        })
    return items


def find_items(items: Sequence[dict], names: Sequence[str]) -> list[dict]:
    """The labelled items whose label is one of ``names`` (vocabulary names, :func:`match_names`)."""
    wanted = set(names)
    return [it for it in items if it["label"] in wanted]


def legend_labels(items: Sequence[dict], colors: dict[str, Any]) -> list[str]:
    """The labels present in ``items``, once each, in vocabulary (``colors``) order."""
    present = {it["label"] for it in items}
    return [name for name in colors if name in present]


def render_labelled_items(image: np.ndarray, items: Sequence[dict], colors: dict[str, Sequence[int]]) -> np.ndarray:
    """Each item's mask in its label's colour over ``image`` and, below it, a legend of the labels present
    (:func:`~utils.visualizer.render_labelled_masks`); ``(H + legend height, W, 3)``."""
    legend = [(name, colors[name]) for name in legend_labels(items, colors)]
    return render_labelled_masks(image, [it["mask"] for it in items], [colors[it["label"]] for it in items], legend)


def _item_entry(item: dict, extra: Sequence[str]) -> dict:
    entry = {"label": item["label"], "score": item["score"], "area": item["area"], "bbox": item["bbox"],
             "segmentation": masks_to_coco_rle(item["mask"][None])[0]}
    entry.update({k: item[k] for k in extra if k in item})
    return entry


_PANOPTIC_EXTRA = ("id", "category_id", "isthing")
_AUTOMATIC_EXTRA = ("level", "predicted_iou", "part_label")


def _write_labelled(image, items, colors, header, key, overlay_name, json_name, extra, output_dir) -> dict:
    out = dict(header)
    out[key] = [_item_entry(it, extra) for it in items]
    out.update(legend=legend_labels(items, colors), overlay=overlay_name)
    text = _json_text(out, json_name)  # before any file: a non-finite score writes nothing
    Image.fromarray(render_labelled_items(image, items, colors)).save(os.path.join(output_dir, overlay_name))
    _write_text(text, output_dir, json_name)
    return out


def write_panoptic_outputs(
    image: np.ndarray, segments: Sequence[dict], colors: dict[str, Sequence[int]], header: dict[str, Any],
    output_dir: str,
) -> dict:
    """Write ``panoptic.png`` (:func:`render_labelled_items`: the segments in their labels' colours, the
    legend of the labels present below the image) and ``panoptic.json``; return the JSON.

    ``panoptic.json``: ``header`` (image, size, vocabulary) plus ``segments``, one per segment of
    :func:`panoptic_segments` in id order: ``label``, ``score`` (None: not given by the model), ``area``,
    ``bbox`` (xywh), ``segmentation`` (COCO RLE), ``id``, ``category_id`` (index in the vocabulary's
    objects), ``isthing``; ``legend``: the labels present, in vocabulary order; ``overlay``: the PNG's name.

    Raises:
        UserError: a non-finite score (nothing is written).
    """
    return _write_labelled(image, segments, colors, header, "segments", PANOPTIC_OVERLAY, PANOPTIC_JSON,
                           _PANOPTIC_EXTRA, output_dir)


def write_find_outputs(
    image: np.ndarray, found: Sequence[dict], colors: dict[str, Sequence[int]], header: dict[str, Any],
    output_dir: str,
) -> dict:
    """Write ``find.png`` (the found masks highlighted in their labels' colours, the legend of the labels
    found below the image) and ``find.json``; return the JSON.

    ``find.json``: ``header`` (image, size, vocabulary, the names searched, the source of the masks)
    plus ``masks``: ``label``, ``score``, ``area``, ``bbox``, ``segmentation`` (COCO RLE) and, from
    panoptic segments, ``id``, ``category_id``, ``isthing``, or, from the automatic generator,
    ``level``, ``predicted_iou``, ``part_label``; ``legend`` and ``overlay`` as in
    :func:`write_panoptic_outputs`.

    Raises:
        UserError: a non-finite score (nothing is written).
    """
    return _write_labelled(image, found, colors, header, "masks", FIND_OVERLAY, FIND_JSON,
                           _PANOPTIC_EXTRA + _AUTOMATIC_EXTRA, output_dir)
