"""COCO panoptic val2017 for zero-shot interactive evaluation.

Registered (lazily: nothing is read until the dataset is loaded) under the reference's name
``coco_2017_val_panoptic_with_sem_seg_interactive_jointboxpoint``. Expected layout under the
dataset root (``$DETECTRON2_DATASETS``, else ``$DATASET``, else ``./datasets``)::

    coco/val2017/*.jpg
    coco/panoptic_val2017/*.png
    coco/annotations/panoptic_val2017.json

Each dataset dict holds ``file_name``, ``image_id``, ``height``, ``width`` (original size),
``pan_seg_file_name`` and ``segments_info`` (the JSON's segments plus ``isthing``). The
mapper (:mod:`datasets.coco_interactive_dataset_mapper`) turns the non-crowd segments into
GT masks and clicks.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Callable

from detectron2.data import DatasetCatalog, MetadataCatalog

from semantic_sam.utils.cli import UserError

from .json_files import json_field, json_list, read_json_object

__all__ = [
    "COCO_INTERACTIVE_VAL",
    "EVALUATOR_TYPE",
    "PanopticJSONError",
    "check_panoptic_paths",
    "coco_panoptic_val_paths",
    "dataset_root",
    "load_coco_panoptic_interactive",
    "register_coco_panoptic_interactive",
]

logger = logging.getLogger(__name__)

COCO_INTERACTIVE_VAL = "coco_2017_val_panoptic_with_sem_seg_interactive_jointboxpoint"
EVALUATOR_TYPE = "coco_panoptic_seg_interactive_jointboxpoint"
_ROOT_ENV_VARS = ("DETECTRON2_DATASETS", "DATASET")


def dataset_root() -> str:
    """``$DETECTRON2_DATASETS``, else ``$DATASET`` (the reference README's name), else ``datasets``.

    When both are set and differ, ``$DETECTRON2_DATASETS`` wins with a warning.
    """
    found = [(var, os.environ[var]) for var in _ROOT_ENV_VARS if os.environ.get(var)]
    if len({value for _, value in found}) > 1:
        logger.warning("%s; using $%s", ", ".join(f"${k}={v!r}" for k, v in found), found[0][0])
    return os.path.expanduser(found[0][1]) if found else "datasets"


def coco_panoptic_val_paths(root: str | None = None) -> dict[str, str]:
    """The three val2017 paths under ``root`` (default :func:`dataset_root`)."""
    root = dataset_root() if root is None else root
    return {
        "image_root": os.path.join(root, "coco", "val2017"),
        "panoptic_root": os.path.join(root, "coco", "panoptic_val2017"),
        "panoptic_json": os.path.join(root, "coco", "annotations", "panoptic_val2017.json"),
    }


def _missing(path: str, what: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"COCO panoptic val2017 {what} not found: expected {path!r}. Set $DETECTRON2_DATASETS "
        f"(or $DATASET) to the folder that contains coco/val2017, coco/panoptic_val2017 and "
        f"coco/annotations/panoptic_val2017.json (see DATASET.md)."
    )


class PanopticJSONError(ValueError, UserError):
    """The COCO panoptic JSON cannot be used; the one-line message names the file and the key.

    A ``ValueError`` and a :class:`~semantic_sam.utils.cli.UserError` (command-line tools exit
    with status 2 and the message).
    """


def _read_panoptic_json(path: str) -> dict:
    return read_json_object(path, PanopticJSONError, "panoptic JSON", "COCO panoptic JSON")


def _items(data: dict, key: str, path: str, required: bool = True) -> list[dict]:
    """``data[key]``: a list of objects (``[]`` when absent and not required)."""
    return json_list(data, key, path, PanopticJSONError, "COCO panoptic JSON", required)


def _field(item: dict, name: str, types: type | tuple, where: str, path: str) -> Any:
    return json_field(item, name, types, where, path, PanopticJSONError)


def check_panoptic_paths(
    image_root: str, panoptic_root: str, panoptic_json: str, missing: Callable[[str, str], Exception]
) -> None:
    """Raise ``missing(path, what)`` for the first of the image folder, the panoptic PNG folder and the
    panoptic JSON that does not exist."""
    for path, what, check in (
        (image_root, "image folder", os.path.isdir),
        (panoptic_root, "panoptic PNG folder", os.path.isdir),
        (panoptic_json, "panoptic JSON", os.path.isfile),
    ):
        if not check(path):
            raise missing(path, what)


def load_coco_panoptic_interactive(image_root: str, panoptic_root: str, panoptic_json: str) -> list[dict]:
    """Read the panoptic JSON into detectron2 dataset dicts (one per image, JSON order).

    Checks the parts of the JSON that are used: ``images`` (``id``, ``file_name``, ``height``,
    ``width``), ``annotations`` (``image_id``, ``file_name``, a ``segments_info`` list of
    segments with ``id`` and ``category_id``) and, when present, ``categories`` (``id``; a
    category's ``isthing`` defaults to 1).

    Raises:
        FileNotFoundError: a folder or the JSON is missing (the message names the expected
            path and the environment variable that sets the root).
        PanopticJSONError: the JSON is empty, truncated or not JSON, lacks a key, has a value
            of the wrong type, has no annotations, or an annotation names an unknown image
            (one line naming the file and the key).
    """
    check_panoptic_paths(image_root, panoptic_root, panoptic_json, _missing)
    p = panoptic_json
    data = _read_panoptic_json(p)
    images = _items(data, "images", p)
    annotations = _items(data, "annotations", p)
    categories = _items(data, "categories", p, required=False)
    if not annotations:
        raise PanopticJSONError(f"{p}: 'annotations' is empty (no image to evaluate)")

    isthing = {}
    for i, c in enumerate(categories):
        isthing[_field(c, "id", int, f"categories[{i}]", p)] = bool(c.get("isthing", 1))
    by_id = {}
    for i, img in enumerate(images):
        where = f"images[{i}]"
        by_id[_field(img, "id", (int, str), where, p)] = img
        _field(img, "file_name", str, where, p)
        _field(img, "height", int, where, p)
        _field(img, "width", int, where, p)
    dicts = []
    for i, ann in enumerate(annotations):
        where = f"annotations[{i}]"
        image_id = _field(ann, "image_id", (int, str), where, p)
        file_name = _field(ann, "file_name", str, where, p)
        img = by_id.get(image_id)
        if img is None:
            raise PanopticJSONError(f"{p}: {where} ({file_name!r}) names unknown image_id {image_id!r}")
        segments_info = _field(ann, "segments_info", list, where, p)
        segments = []
        for j, seg in enumerate(segments_info):
            seg_where = f"{where}.segments_info[{j}]"
            if not isinstance(seg, dict):
                raise PanopticJSONError(f"{p}: {seg_where} must be an object, got {type(seg).__name__}")
            _field(seg, "id", int, seg_where, p)
            category_id = _field(seg, "category_id", int, seg_where, p)
            segments.append(dict(seg, isthing=isthing.get(category_id, True)))
        dicts.append(
            {
                "file_name": os.path.join(image_root, img["file_name"]),
                "image_id": img["id"],
                "height": img["height"],
                "width": img["width"],
                "pan_seg_file_name": os.path.join(panoptic_root, file_name),
                "segments_info": segments,
            }
        )
    n_empty = sum(1 for d in dicts if not any(not s.get("iscrowd", 0) for s in d["segments_info"]))
    logger.info("Loaded %d images from %s (%d without non-crowd segments)", len(dicts), panoptic_json, n_empty)
    return dicts


def register_coco_panoptic_interactive(root: str | None = None, name: str = COCO_INTERACTIVE_VAL) -> str:
    """Register COCO panoptic val2017 for interactive evaluation and return ``name``.

    Only the paths are fixed here; files are read (and checked) when the dataset is loaded.
    Registering again replaces the earlier registration (e.g. with another ``root``).

    Args:
        root: dataset root; default :func:`dataset_root` (read now, from the environment).
        name: the dataset name.
    """
    paths = coco_panoptic_val_paths(root)
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: load_coco_panoptic_interactive(**paths))
    MetadataCatalog.get(name).set(evaluator_type=EVALUATOR_TYPE, ignore_label=255, **paths)
    return name
