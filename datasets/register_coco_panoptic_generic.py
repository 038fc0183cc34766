"""COCO panoptic val2017 for generic evaluation (PQ, box and mask AP, mIoU through detectron2's evaluators).

Registered (lazily: nothing is read until the dataset is loaded) as ``coco_2017_val_panoptic_generic``.
Expected layout under the dataset root (``$DETECTRON2_DATASETS``, else ``$DATASET``, else ``./datasets``)::

    coco/val2017/*.jpg
    coco/panoptic_val2017/*.png                    # panoptic PNGs (segment id = R + 256 G + 256² B)
    coco/annotations/panoptic_val2017.json
    coco/panoptic_semseg_val2017/*.png             # 133-class semantic PNGs (255 = void), derived
    coco/annotations/instances_val2017.json        # COCO's thing instances (or derived from panoptic)

The last two are written by ``python -m tools.prepare_coco_semantic_from_panoptic ROOT``
(:func:`prepare_generic_annotations`): each semantic PNG has the panoptic PNG's name and holds, per
pixel, the contiguous class (0-132, detectron2's ``COCO_CATEGORIES`` order, things 0-79) of its
segment, crowd segments included (as Mask DINO's ``prepare_coco_semantic_annos_from_panoptic_annos.py``
does), 255 where the PNG is void; the instances JSON is only written when absent (COCO's own
``instances_val2017.json`` is the reference), with one annotation per thing segment.

Dataset dicts (one per image, JSON order): ``file_name``, ``image_id``, ``height``, ``width``,
``pan_seg_file_name``, ``sem_seg_file_name`` and ``segments_info`` (every segment, crowd ones with
``iscrowd`` 1; ``category_id`` = contiguous class, ``isthing`` from the COCO label space). The metadata
serves detectron2's ``COCOPanopticEvaluator`` (``panoptic_root``, ``panoptic_json``),
``COCOEvaluator`` (``json_file``: the instances JSON; ``thing_classes``: the 80 thing names) and
``SemSegEvaluator`` (``stuff_classes``: all 133 names; ``ignore_label`` 255); see
:func:`coco_panoptic_generic_metadata`.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from semantic_sam.data.label_spaces import coco_panoptic_dataset_ids, coco_panoptic_label_space
from semantic_sam.evaluation.generic import GENERIC_EVALUATOR_TYPES, check_panoptic_segments, read_panoptic_ids

from .register_coco_panoptic_interactive import PanopticJSONError, dataset_root, load_coco_panoptic_interactive

__all__ = [
    "COCO_GENERIC_VAL",
    "EVALUATOR_TYPE",
    "PREPARE_COMMAND",
    "coco_panoptic_generic_metadata",
    "coco_panoptic_generic_paths",
    "load_coco_panoptic_generic",
    "prepare_generic_annotations",
    "register_coco_panoptic_generic",
    "semantic_from_panoptic",
    "thing_annotations",
]

logger = logging.getLogger(__name__)

COCO_GENERIC_VAL = "coco_2017_val_panoptic_generic"
EVALUATOR_TYPE = GENERIC_EVALUATOR_TYPES[0]
IGNORE_LABEL = 255
PREPARE_COMMAND = "python -m tools.prepare_coco_semantic_from_panoptic ROOT"


def coco_panoptic_generic_paths(root: str | None = None, split: str = "val2017") -> dict[str, str]:
    """The five paths of a COCO panoptic split under ``root`` (default: the environment's dataset root)."""
    root = dataset_root() if root is None else root
    coco = os.path.join(root, "coco")
    return {
        "image_root": os.path.join(coco, split),
        "panoptic_root": os.path.join(coco, f"panoptic_{split}"),
        "panoptic_json": os.path.join(coco, "annotations", f"panoptic_{split}.json"),
        "sem_seg_root": os.path.join(coco, f"panoptic_semseg_{split}"),
        "instances_json": os.path.join(coco, "annotations", f"instances_{split}.json"),
    }


def _coco_isthing() -> dict[int, bool]:
    from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

    return {c["id"]: bool(c["isthing"]) for c in COCO_CATEGORIES}


def coco_panoptic_generic_metadata() -> dict[str, Any]:
    """detectron2 metadata of COCO panoptic for its PQ, AP and mIoU evaluators (paths excluded).

    * ``thing_classes``: the 80 thing names (contiguous ids 0-79), as ``COCOEvaluator`` expects for the
      80 categories of the instances JSON; ``thing_dataset_id_to_contiguous_id``: their COCO ids.
    * ``stuff_classes``: all 133 names by contiguous id (``SemSegEvaluator``'s classes, and the
      vocabulary of the generic queries); ``stuff_dataset_id_to_contiguous_id``: **all 133** COCO ids,
      things too, because ``SemSegEvaluator`` maps every predicted class through it (for
      ``COCOPanopticEvaluator`` a stuff segment's id is then its class's, as it should be).
    """
    space = coco_panoptic_label_space()
    ids = coco_panoptic_dataset_ids()
    isthing = _coco_isthing()
    return {
        "thing_classes": [n for n, d in zip(space.class_names, ids) if isthing[d]],
        "stuff_classes": list(space.class_names),
        "thing_dataset_id_to_contiguous_id": {d: i for i, d in enumerate(ids) if isthing[d]},
        "stuff_dataset_id_to_contiguous_id": {d: i for i, d in enumerate(ids)},
        "ignore_label": IGNORE_LABEL,
        "evaluator_type": EVALUATOR_TYPE,
    }


def _missing(path: str, what: str, derived: bool = False) -> FileNotFoundError:
    hint = f"; write it with `{PREPARE_COMMAND}`" if derived else ""
    return FileNotFoundError(
        f"COCO panoptic {what} not found: expected {path!r}. Set $DETECTRON2_DATASETS (or $DATASET) to the folder "
        f"that contains coco/ (see DATASET.md, 'Generic evaluation'){hint}"
    )


def _contiguous_segments(d: dict, index: int, panoptic_json: str) -> list[dict]:
    """The image's segments with ``category_id`` = contiguous class and ``isthing`` of the COCO label space."""
    to_class = {c: i for i, c in enumerate(coco_panoptic_dataset_ids())}
    isthing = _coco_isthing()
    out = []
    for j, seg in enumerate(d["segments_info"]):
        cid = seg["category_id"]
        if cid not in to_class:
            raise PanopticJSONError(
                f"{panoptic_json}: annotations[{index}].segments_info[{j}] (segment id {seg['id']}) has category_id "
                f"{cid}, which is not one of COCO panoptic's {len(to_class)} categories"
            )
        out.append(dict(seg, category_id=to_class[cid], isthing=isthing[cid], iscrowd=int(seg.get("iscrowd", 0))))
    return out


def load_coco_panoptic_generic(
    image_root: str, panoptic_root: str, panoptic_json: str, sem_seg_root: str, instances_json: str
) -> list[dict]:
    """Read COCO panoptic into dataset dicts for generic evaluation (see the module docstring).

    The panoptic JSON is read and checked by
    :func:`datasets.register_coco_panoptic_interactive.load_coco_panoptic_interactive`; the PNGs are not
    read here (the panoptic evaluator checks each one against its ``segments_info`` when it evaluates it).

    Raises:
        FileNotFoundError: a folder, a JSON or a semantic PNG is missing (names the path, the variable
            and, for the derived files, the command that writes them).
        PanopticJSONError: as :func:`load_coco_panoptic_interactive`, or a segment's category is not one
            of COCO panoptic's 133 (names the file, the annotation, the segment and the id).
    """
    dicts = load_coco_panoptic_interactive(image_root, panoptic_root, panoptic_json)
    if not os.path.isdir(sem_seg_root):
        raise _missing(sem_seg_root, "semantic PNG folder", derived=True)
    if not os.path.isfile(instances_json):
        raise _missing(instances_json, "instances JSON", derived=True)
    out = []
    for i, d in enumerate(dicts):
        png_name = os.path.basename(d["pan_seg_file_name"])
        sem_seg = os.path.join(sem_seg_root, os.path.splitext(png_name)[0] + ".png")
        out.append(dict(d, segments_info=_contiguous_segments(d, i, panoptic_json), sem_seg_file_name=sem_seg))
    absent = [d["sem_seg_file_name"] for d in out if not os.path.isfile(d["sem_seg_file_name"])]
    if absent:
        raise FileNotFoundError(
            f"COCO panoptic semantic PNG not found: expected {absent[0]!r} ({len(absent)} of {len(out)} missing); "
            f"write them with `{PREPARE_COMMAND}` (see DATASET.md, 'Generic evaluation')"
        )
    logger.info("Loaded %d images for generic evaluation from %s", len(out), panoptic_json)
    return out


def register_coco_panoptic_generic(root: str | None = None, name: str = COCO_GENERIC_VAL) -> str:
    """Register COCO panoptic val2017 for generic evaluation and return ``name``.

    Only the paths are fixed here (``root``: default the environment's, read now); files are read and
    checked when the dataset is loaded. Registering again replaces the earlier registration.
    """
    paths = coco_panoptic_generic_paths(root)
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: load_coco_panoptic_generic(**paths))
    MetadataCatalog.get(name).set(
        image_root=paths["image_root"],
        panoptic_root=paths["panoptic_root"],
        panoptic_json=paths["panoptic_json"],
        sem_seg_root=paths["sem_seg_root"],
        json_file=paths["instances_json"],
        **coco_panoptic_generic_metadata(),
    )
    return name


# ------------------------------------------------------------------------------------------ derived files
def semantic_from_panoptic(ids: np.ndarray, segments: Sequence[dict]) -> np.ndarray:
    """The (H, W) uint8 semantic map of a panoptic image: each segment's pixels get its ``category_id``
    (already contiguous, < 255), void pixels :data:`IGNORE_LABEL`.

    Args:
        ids: (H, W) segment ids of the panoptic PNG.
        segments: the image's segments (``id``, contiguous ``category_id``), crowd ones included.
    """
    out = np.full(ids.shape, IGNORE_LABEL, dtype=np.uint8)
    for seg in segments:
        out[ids == seg["id"]] = seg["category_id"]
    return out


def thing_annotations(ids: np.ndarray, segments: Sequence[dict], image_id: Any, first_id: int) -> list[dict]:
    """COCO instance annotations of an image's thing segments (crowd ones with ``iscrowd`` 1).

    Args:
        ids: (H, W) segment ids of the panoptic PNG.
        segments: the image's segments with the JSON's (COCO) ``category_id``.
        image_id: the image's id.
        first_id: the annotation id of the first one (then consecutive).

    Returns:
        ``{"id", "image_id", "category_id", "segmentation" (compressed RLE), "area", "bbox" (XYWH),
        "iscrowd"}`` per thing segment, in ``segments`` order.
    """
    from pycocotools import mask as mask_util

    isthing = _coco_isthing()
    anns = []
    for seg in segments:
        if not isthing.get(seg["category_id"], False):
            continue
        mask = ids == seg["id"]
        rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
        ys, xs = np.nonzero(mask)
        bbox = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
        anns.append(
            {
                "id": first_id + len(anns),
                "image_id": image_id,
                "category_id": int(seg["category_id"]),
                "segmentation": {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")},
                "area": int(mask.sum()),
                "bbox": bbox,
                "iscrowd": int(seg.get("iscrowd", 0)),
            }
        )
    return anns


def _thing_categories() -> list[dict]:
    from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

    return [{"id": c["id"], "name": c["name"]} for c in sorted(COCO_CATEGORIES, key=lambda c: c["id"]) if c["isthing"]]


def prepare_generic_annotations(root: str, split: str = "val2017", instances: str = "auto") -> dict[str, Any]:
    """Write the semantic PNGs (and the instances JSON) of a COCO panoptic split under ``root``.

    Every panoptic PNG is read and checked against its ``segments_info``
    (:func:`~semantic_sam.evaluation.generic.check_panoptic_segments`), then
    ``coco/panoptic_semseg_<split>/<PNG name>`` is written (:func:`semantic_from_panoptic`).
    ``instances``: ``"auto"`` writes ``coco/annotations/instances_<split>.json`` from the thing segments
    (:func:`thing_annotations`; the 80 thing categories) only when it does not exist, ``"always"``
    overwrites it, ``"never"`` leaves it alone.

    Returns:
        ``{"images": n, "sem_seg_root": path, "instances_json": path or None (not written)}``.

    Raises:
        FileNotFoundError: the panoptic PNG folder, the JSON or a PNG is missing.
        PanopticJSONError: the JSON is unusable or names a category outside COCO panoptic's 133.
        PanopticSegmentsError: a PNG does not match its segments (names the PNG and the id).
    """
    if instances not in ("auto", "always", "never"):
        raise ValueError(f"instances must be 'auto', 'always' or 'never', got {instances!r}")
    paths = coco_panoptic_generic_paths(root, split)
    dicts = load_coco_panoptic_interactive(paths["image_root"], paths["panoptic_root"], paths["panoptic_json"])
    write_instances = instances == "always" or (instances == "auto" and not os.path.isfile(paths["instances_json"]))
    os.makedirs(paths["sem_seg_root"], exist_ok=True)
    images, annotations = [], []
    for i, d in enumerate(dicts):
        png = d["pan_seg_file_name"]
        if not os.path.isfile(png):
            raise FileNotFoundError(
                f"panoptic PNG not found: expected {png!r} ({paths['panoptic_json']} annotations[{i}])"
            )
        ids = read_panoptic_ids(png)
        where = f"{png} (image_id {d['image_id']!r}, {paths['panoptic_json']})"
        check_panoptic_segments(ids, d["segments_info"], where)
        segments = _contiguous_segments(d, i, paths["panoptic_json"])
        target = os.path.join(paths["sem_seg_root"], os.path.splitext(os.path.basename(png))[0] + ".png")
        Image.fromarray(semantic_from_panoptic(ids, segments)).save(target)
        if write_instances:
            images.append(
                {"id": d["image_id"], "file_name": os.path.basename(d["file_name"]), "height": d["height"],
                 "width": d["width"]}
            )
            annotations += thing_annotations(ids, d["segments_info"], d["image_id"], len(annotations) + 1)
    if write_instances:
        os.makedirs(os.path.dirname(paths["instances_json"]), exist_ok=True)
        with open(paths["instances_json"], "w", encoding="utf-8") as f:
            json.dump({"images": images, "annotations": annotations, "categories": _thing_categories()}, f)
    logger.info(
        "wrote %d semantic PNGs to %s%s", len(dicts), paths["sem_seg_root"],
        f" and {paths['instances_json']}" if write_instances else "",
    )
    return {
        "images": len(dicts),
        "sem_seg_root": paths["sem_seg_root"],
        "instances_json": paths["instances_json"] if write_instances else None,
    }
