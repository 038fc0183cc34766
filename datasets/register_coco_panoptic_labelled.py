"""COCO panoptic train2017 for labelled-click training (object labels, no parts).

Registered (lazily: nothing is read until the dataset is loaded) as
``coco_2017_train_panoptic_interactive_labelled``. Expected layout under the dataset root
(``$DETECTRON2_DATASETS``, else ``$DATASET``, else ``./datasets``)::

    coco/train2017/*.jpg
    coco/panoptic_train2017/*.png
    coco/annotations/panoptic_train2017.json

The panoptic JSON is read and checked by
:func:`datasets.register_coco_panoptic_interactive.load_coco_panoptic_interactive` (the evaluation
set's reader). Then every **non-crowd** segment, thing or stuff, is kept with ``category_id`` =
``object_id`` = its contiguous panoptic class (detectron2's ``COCO_CATEGORIES`` order: things
0-79, stuff 80-132; :func:`semantic_sam.data.label_spaces.coco_panoptic_label_space`) and
``part_id`` = ``NO_PART`` (-1); images left without a segment are dropped. A segment whose
category id is not one of COCO panoptic's 133 is an error naming the id and the file. The
labelled mapper (:mod:`datasets.labelled_dataset_mapper`) makes the masks from the panoptic PNG.
"""
from __future__ import annotations

import logging
import os

from detectron2.data import DatasetCatalog, MetadataCatalog

from semantic_sam.data.label_spaces import NO_PART, coco_panoptic_dataset_ids, coco_panoptic_label_space

from .register_coco_panoptic_interactive import PanopticJSONError, dataset_root, load_coco_panoptic_interactive

__all__ = [
    "COCO_LABELLED_TRAIN",
    "coco_panoptic_labelled_metadata",
    "coco_panoptic_train_paths",
    "labelled_segments",
    "load_coco_panoptic_labelled",
    "register_coco_panoptic_labelled",
]

logger = logging.getLogger(__name__)

COCO_LABELLED_TRAIN = "coco_2017_train_panoptic_interactive_labelled"


def coco_panoptic_train_paths(root: str | None = None) -> dict[str, str]:
    """The three train2017 paths under ``root`` (default: the environment's dataset root)."""
    root = dataset_root() if root is None else root
    return {
        "image_root": os.path.join(root, "coco", "train2017"),
        "panoptic_root": os.path.join(root, "coco", "panoptic_train2017"),
        "panoptic_json": os.path.join(root, "coco", "annotations", "panoptic_train2017.json"),
    }


def coco_panoptic_labelled_metadata() -> dict:
    """The label space, plus detectron2's ``coco_panoptic_standard`` class metadata (every one of the 133
    names under ``thing_classes`` and ``stuff_classes``; dataset id -> contiguous id for things and stuff)."""
    space = coco_panoptic_label_space()
    from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

    isthing = {c["id"]: bool(c["isthing"]) for c in COCO_CATEGORIES}
    ids = coco_panoptic_dataset_ids()
    return {
        "stuff_classes": list(space.class_names),
        "thing_dataset_id_to_contiguous_id": {d: i for i, d in enumerate(ids) if isthing[d]},
        "stuff_dataset_id_to_contiguous_id": {d: i for i, d in enumerate(ids) if not isthing[d]},
        **space.metadata(),
    }


def load_coco_panoptic_labelled(image_root: str, panoptic_root: str, panoptic_json: str) -> list[dict]:
    """Read COCO panoptic train2017 into dataset dicts with labelled segments (see the module docstring).

    Each dict: ``file_name``, ``image_id``, ``height``, ``width``, ``pan_seg_file_name`` and
    ``segments_info`` (non-crowd segments, each with the JSON's ``id``, ``isthing``, ... and
    ``category_id`` = ``object_id`` = contiguous class, ``part_id`` = -1).

    Raises:
        FileNotFoundError: a folder or the JSON is missing (names the path and the variable).
        PanopticJSONError: as :func:`load_coco_panoptic_interactive`, or a segment's category id is
            not a COCO panoptic class (names the file, the annotation and the id).
    """
    for path, what, check in (
        (image_root, "image folder", os.path.isdir),
        (panoptic_root, "panoptic PNG folder", os.path.isdir),
        (panoptic_json, "panoptic JSON", os.path.isfile),
    ):
        if not check(path):
            raise FileNotFoundError(
                f"COCO panoptic train2017 {what} not found: expected {path!r}. Set $DETECTRON2_DATASETS "
                "(or $DATASET) to the folder that contains coco/train2017, coco/panoptic_train2017 and "
                "coco/annotations/panoptic_train2017.json (see DATASET.md)."
            )
    to_class = {d: i for i, d in enumerate(coco_panoptic_dataset_ids())}
    records = load_coco_panoptic_interactive(image_root, panoptic_root, panoptic_json)
    dicts, n_crowd = labelled_segments(records, to_class, panoptic_json, f"COCO panoptic's {len(to_class)} categories")
    logger.info(
        "COCO panoptic labelled: %d images with segments from %s (%d crowd segments dropped)",
        len(dicts),
        panoptic_json,
        n_crowd,
    )
    return dicts


def labelled_segments(
    records: list[dict], to_class: dict[int, int], panoptic_json: str, classes: str, drop_empty_images: bool = True
) -> tuple[list[dict], int]:
    """Panoptic dataset dicts -> labelled ones: every non-crowd segment with ``category_id`` = ``object_id`` = its
    contiguous class (``to_class``: JSON category id -> class) and ``part_id`` = ``NO_PART``.

    Args:
        records: dicts of :func:`load_coco_panoptic_interactive`.
        to_class: the label space's JSON category id -> contiguous class id.
        panoptic_json: the JSON's path (for messages).
        classes: what the classes are, for the message of an unknown id ("COCO panoptic's 133 categories").
        drop_empty_images: leave out images without a non-crowd segment.

    Returns:
        ``(dicts, number of crowd segments dropped)``.

    Raises:
        PanopticJSONError: a segment's category id is not in ``to_class`` (names the file, the segment and the id).
    """
    dicts, n_crowd = [], 0
    for i, d in enumerate(records):
        segments = []
        for j, seg in enumerate(d["segments_info"]):
            cid = seg["category_id"]
            if cid not in to_class:
                raise PanopticJSONError(
                    f"{panoptic_json}: annotations[{i}].segments_info[{j}] has category_id {cid}, which is not one "
                    f"of {classes}"
                )
            if seg.get("iscrowd", 0):
                n_crowd += 1
                continue
            segments.append(dict(seg, category_id=to_class[cid], object_id=to_class[cid], part_id=NO_PART))
        if segments or not drop_empty_images:
            dicts.append(dict(d, segments_info=segments))
    return dicts, n_crowd


def register_coco_panoptic_labelled(root: str | None = None, name: str = COCO_LABELLED_TRAIN) -> str:
    """Register COCO panoptic train2017 for labelled-click training and return ``name``.

    Only the paths are fixed here; files are read (and checked) when the dataset is loaded.
    Registering again replaces the earlier registration.
    """
    paths = coco_panoptic_train_paths(root)
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: load_coco_panoptic_labelled(**paths))
    MetadataCatalog.get(name).set(
        config_section="COCO", ignore_label=255, **paths, **coco_panoptic_labelled_metadata()
    )
    return name
