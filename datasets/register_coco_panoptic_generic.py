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

Other panoptic sets are evaluated the same way (the built-in scenes' ``builtin_panoptic_val_generic``,
:mod:`datasets.register_builtin_labelled`): what differs between them (their categories, and how to
get a missing file) is a :class:`PanopticGenericSpec`, which every function here takes (default: COCO's).

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
    "PanopticGenericSpec",
    "coco_panoptic_generic_metadata",
    "coco_panoptic_generic_paths",
    "coco_panoptic_generic_spec",
    "load_coco_panoptic_generic",
    "load_panoptic_generic",
    "panoptic_generic_metadata",
    "prepare_generic_annotations",
    "register_coco_panoptic_generic",
    "semantic_from_panoptic",
    "thing_annotations",
    "write_generic_annotations",
]

logger = logging.getLogger(__name__)

COCO_GENERIC_VAL = "coco_2017_val_panoptic_generic"
EVALUATOR_TYPE = GENERIC_EVALUATOR_TYPES[0]
IGNORE_LABEL = 255
PREPARE_COMMAND = "python -m tools.prepare_coco_semantic_from_panoptic ROOT"


_COCO_MISSING_HINT = (
    "Set $DETECTRON2_DATASETS (or $DATASET) to the folder that contains coco/ (see DATASET.md, 'Generic evaluation')"
)


@dataclass(frozen=True)
class PanopticGenericSpec:
    """What differs between the COCO-panoptic-format sets of generic evaluation.

    Attributes:
        title: the set's name in messages (``"COCO panoptic"``).
        categories: ``{"id", "name", "isthing"}`` of every class; index = contiguous class id (things
            need not come first, but every segment's JSON ``category_id`` must be one of the ids).
        missing_hint: the sentence that ends a missing-file message (where the root is set).
        prepare_command: the command that writes the derived files (semantic PNGs, instances JSON).
    """

    title: str
    categories: tuple[Mapping[str, Any], ...]
    missing_hint: str
    prepare_command: str

    def class_of_category(self) -> dict[int, int]:
        """JSON category id -> contiguous class id."""
        return {int(c["id"]): k for k, c in enumerate(self.categories)}

    def isthing(self) -> dict[int, bool]:
        """JSON category id -> whether it is a thing."""
        return {int(c["id"]): bool(c["isthing"]) for c in self.categories}


def coco_panoptic_generic_spec() -> PanopticGenericSpec:
    """COCO panoptic's 133 classes (detectron2's ``COCO_CATEGORIES``, contiguous order of
    :func:`~semantic_sam.data.label_spaces.coco_panoptic_label_space`)."""
    isthing = _coco_isthing()
    names = coco_panoptic_label_space().class_names
    categories = tuple(
        {"id": d, "name": n, "isthing": int(isthing[d])} for d, n in zip(coco_panoptic_dataset_ids(), names)
    )
    return PanopticGenericSpec("COCO panoptic", categories, _COCO_MISSING_HINT, PREPARE_COMMAND)


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


def panoptic_generic_metadata(spec: PanopticGenericSpec) -> dict[str, Any]:
    """detectron2 metadata of a panoptic set for its PQ, AP and mIoU evaluators (paths excluded).

    * ``thing_classes``: the thing names (in contiguous order), as ``COCOEvaluator`` expects for the thing
      categories of the instances JSON; ``thing_dataset_id_to_contiguous_id``: their JSON ids.
    * ``stuff_classes``: **all** names by contiguous id (``SemSegEvaluator``'s classes, and the vocabulary
      of the generic queries); ``stuff_dataset_id_to_contiguous_id``: **all** JSON ids, things too,
      because ``SemSegEvaluator`` maps every predicted class through it (for ``COCOPanopticEvaluator`` a
      stuff segment's id is then its class's, as it should be).
    """
    cats = spec.categories
    return {
        "thing_classes": [c["name"] for c in cats if c["isthing"]],
        "stuff_classes": [c["name"] for c in cats],
        "thing_dataset_id_to_contiguous_id": {int(c["id"]): k for k, c in enumerate(cats) if c["isthing"]},
        "stuff_dataset_id_to_contiguous_id": {int(c["id"]): k for k, c in enumerate(cats)},
        "ignore_label": IGNORE_LABEL,
        "evaluator_type": EVALUATOR_TYPE,
    }


def coco_panoptic_generic_metadata() -> dict[str, Any]:
    """:func:`panoptic_generic_metadata` of COCO panoptic: 80 ``thing_classes`` (contiguous ids 0-79),
    133 ``stuff_classes``."""
    return panoptic_generic_metadata(coco_panoptic_generic_spec())


def _missing(path: str, what: str, spec: PanopticGenericSpec, derived: bool = False) -> FileNotFoundError:
    hint = f"; write it with `{spec.prepare_command}`" if derived else ""
    return FileNotFoundError(f"{spec.title} {what} not found: expected {path!r}. {spec.missing_hint}{hint}")


def _contiguous_segments(d: dict, index: int, panoptic_json: str, spec: PanopticGenericSpec) -> list[dict]:
    """The image's segments with ``category_id`` = contiguous class and ``isthing`` of the spec's categories."""
    to_class = spec.class_of_category()
    isthing = spec.isthing()
    out = []
    for j, seg in enumerate(d["segments_info"]):
        cid = seg["category_id"]
        if cid not in to_class:
            raise PanopticJSONError(
                f"{panoptic_json}: annotations[{index}].segments_info[{j}] (segment id {seg['id']}) has category_id "
                f"{cid}, which is not one of {spec.title}'s {len(to_class)} categories"
            )
        out.append(dict(seg, category_id=to_class[cid], isthing=isthing[cid], iscrowd=int(seg.get("iscrowd", 0))))
    return out


def load_panoptic_generic(
    image_root: str,
    panoptic_root: str,
    panoptic_json: str,
    sem_seg_root: str,
    instances_json: str,
    spec: PanopticGenericSpec | None = None,
) -> list[dict]:
    """Read a COCO-format panoptic set into dataset dicts for generic evaluation (see the module docstring).

    The panoptic JSON is read and checked by
    :func:`datasets.register_coco_panoptic_interactive.load_coco_panoptic_interactive`; the PNGs are not
    read here (the panoptic evaluator checks each one against its ``segments_info`` when it evaluates it).

    Args:
        spec: the set's categories and messages (default: COCO panoptic's).

    Raises:
        FileNotFoundError: a folder, a JSON or a semantic PNG is missing (names the path, the variable
            and, for the derived files, the command that writes them).
        PanopticJSONError: as :func:`load_coco_panoptic_interactive`, or a segment's category is not one
            of the spec's (names the file, the annotation, the segment and the id).
    """
    spec = coco_panoptic_generic_spec() if spec is None else spec
    dicts = load_coco_panoptic_interactive(image_root, panoptic_root, panoptic_json)
    if not os.path.isdir(sem_seg_root):
        raise _missing(sem_seg_root, "semantic PNG folder", spec, derived=True)
    if not os.path.isfile(instances_json):
        raise _missing(instances_json, "instances JSON", spec, derived=True)
    out = []
    for i, d in enumerate(dicts):
        png_name = os.path.basename(d["pan_seg_file_name"])
        sem_seg = os.path.join(sem_seg_root, os.path.splitext(png_name)[0] + ".png")
        out.append(dict(d, segments_info=_contiguous_segments(d, i, panoptic_json, spec), sem_seg_file_name=sem_seg))
    absent = [d["sem_seg_file_name"] for d in out if not os.path.isfile(d["sem_seg_file_name"])]
    if absent:
        raise FileNotFoundError(
            f"{spec.title} semantic PNG not found: expected {absent[0]!r} ({len(absent)} of {len(out)} missing); "
            f"write them with `{spec.prepare_command}` ({spec.missing_hint})"
        )
    logger.info("Loaded %d images for generic evaluation from %s", len(out), panoptic_json)
    return out


def load_coco_panoptic_generic(
    image_root: str, panoptic_root: str, panoptic_json: str, sem_seg_root: str, instances_json: str
) -> list[dict]:
    """:func:`load_panoptic_generic` of COCO panoptic."""
    return load_panoptic_generic(image_root, panoptic_root, panoptic_json, sem_seg_root, instances_json)


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


def thing_annotations(
    ids: np.ndarray,
    segments: Sequence[dict],
    image_id: Any,
    first_id: int,
    isthing: Mapping[int, bool] | None = None,
) -> list[dict]:
    """COCO instance annotations of an image's thing segments (crowd ones with ``iscrowd`` 1).

    Args:
        ids: (H, W) segment ids of the panoptic PNG.
        segments: the image's segments with the JSON's ``category_id``.
        image_id: the image's id.
        first_id: the annotation id of the first one (then consecutive).
        isthing: JSON category id -> whether it is a thing (default: COCO's categories); other ids are skipped.

    Returns:
        ``{"id", "image_id", "category_id", "segmentation" (compressed RLE), "area", "bbox" (XYWH),
        "iscrowd"}`` per thing segment, in ``segments`` order.
    """
    from pycocotools import mask as mask_util

    isthing = _coco_isthing() if isthing is None else isthing
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


def _thing_categories(spec: PanopticGenericSpec) -> list[dict]:
    things = sorted((c for c in spec.categories if c["isthing"]), key=lambda c: c["id"])
    return [{"id": int(c["id"]), "name": c["name"]} for c in things]


def write_generic_annotations(
    paths: Mapping[str, str], instances: str = "auto", spec: PanopticGenericSpec | None = None
) -> dict[str, Any]:
    """Write the semantic PNGs (and the instances JSON) of a COCO-format panoptic set.

    Every panoptic PNG is read and checked against its ``segments_info``
    (:func:`~semantic_sam.evaluation.generic.check_panoptic_segments`), then ``<sem_seg_root>/<PNG name>``
    is written (:func:`semantic_from_panoptic`). ``instances``: ``"auto"`` writes ``instances_json`` from the
    thing segments (:func:`thing_annotations`; the spec's thing categories) only when it does not exist,
    ``"always"`` overwrites it, ``"never"`` leaves it alone.

    Args:
        paths: ``image_root``, ``panoptic_root``, ``panoptic_json`` (read), ``sem_seg_root``,
            ``instances_json`` (written), as :func:`coco_panoptic_generic_paths` gives them.
        spec: the set's categories and messages (default: COCO panoptic's).

    Returns:
        ``{"images": n, "sem_seg_root": path, "instances_json": path or None (not written)}``.

    Raises:
        FileNotFoundError: the panoptic PNG folder, the JSON or a PNG is missing.
        PanopticJSONError: the JSON is unusable or names a category outside the spec's.
        PanopticSegmentsError: a PNG does not match its segments (names the PNG and the id).
    """
    if instances not in ("auto", "always", "never"):
        raise ValueError(f"instances must be 'auto', 'always' or 'never', got {instances!r}")
    spec = coco_panoptic_generic_spec() if spec is None else spec
    dicts = load_coco_panoptic_interactive(paths["image_root"], paths["panoptic_root"], paths["panoptic_json"])
    write_instances = instances == "always" or (instances == "auto" and not os.path.isfile(paths["instances_json"]))
    os.makedirs(paths["sem_seg_root"], exist_ok=True)
    isthing = spec.isthing()
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
        segments = _contiguous_segments(d, i, paths["panoptic_json"], spec)
        target = os.path.join(paths["sem_seg_root"], os.path.splitext(os.path.basename(png))[0] + ".png")
        Image.fromarray(semantic_from_panoptic(ids, segments)).save(target)
        if write_instances:
            images.append(
                {"id": d["image_id"], "file_name": os.path.basename(d["file_name"]), "height": d["height"],
                 "width": d["width"]}
            )
            annotations += thing_annotations(ids, d["segments_info"], d["image_id"], len(annotations) + 1, isthing)
    if write_instances:
        os.makedirs(os.path.dirname(paths["instances_json"]), exist_ok=True)
        with open(paths["instances_json"], "w", encoding="utf-8") as f:
            json.dump({"images": images, "annotations": annotations, "categories": _thing_categories(spec)}, f)
    logger.info(
        "wrote %d semantic PNGs to %s%s", len(dicts), paths["sem_seg_root"],
        f" and {paths['instances_json']}" if write_instances else "",
    )
    return {
        "images": len(dicts),
        "sem_seg_root": paths["sem_seg_root"],
        "instances_json": paths["instances_json"] if write_instances else None,
    }


def prepare_generic_annotations(root: str, split: str = "val2017", instances: str = "auto") -> dict[str, Any]:
    """:func:`write_generic_annotations` of a COCO panoptic split under ``root``: the semantic PNGs go to
    ``coco/panoptic_semseg_<split>/``, the instances JSON (the 80 thing categories) to
    ``coco/annotations/instances_<split>.json``."""
    return write_generic_annotations(coco_panoptic_generic_paths(root, split), instances)
