"""Register the part datasets (Pascal-Part, PartImageNet, PACO-LVIS) with detectron2's catalogs.

Registration is a function call, never an import side effect::

    from datasets.register_part_datasets import register_all_part_datasets
    register_all_part_datasets()          # reads $DETECTRON2_DATASETS now
    DatasetCatalog.get("pascal_part_train")

Names, and where their files are looked up under the dataset root (``$DETECTRON2_DATASETS``, else
``$DATASET``, else ``./datasets``) when the dataset is loaded (see DATASET.md):

======================== ================================== ===========================================
name                     images                             annotations (COCO-style JSON)
======================== ================================== ===========================================
``pascal_part_train``    pascal_part/VOCdevkit/VOC2010/     pascal_part/train.json (VLPart's
                         JPEGImages                         ``pascal_part_mat2json.py``)
``pascal_part_val``      same                               pascal_part/val.json
``pascal_part_train_base`` same                             pascal_part/train_base.json (77 classes)
``partimagenet_train``   partimagenet/train                 partimagenet/train_format.json (VLPart's
                                                            ``partimagenet_format_json.py``)
``partimagenet_val``     partimagenet/val                   partimagenet/val_format.json
``paco_lvis_train``      coco (file names ``train2017/..``) paco/annotations/paco_lvis_v1_train.json
``paco_lvis_val``        coco (file names ``val2017/..``)   paco/annotations/paco_lvis_v1_val.json
======================== ================================== ===========================================

Dataset dicts (one per image, JSON order): ``file_name``, ``image_id``, ``height``, ``width`` and
``annotations``, each with ``category_id`` (the contiguous class id in the family's label space,
:mod:`semantic_sam.data.label_spaces`), ``object_id``, ``part_id``, ``is_whole`` (True for PACO's
object entries, whose part is ``whole``), ``segmentation`` (polygons ``[[x0, y0, x1, y1, ...], ...]``
or a compressed COCO RLE at the image size), ``bbox`` (XYWH, ``bbox_mode`` ``BoxMode.XYWH_ABS``) and
``id``. Crowd annotations, annotations without a valid segmentation (polygons of fewer than 3 points
are removed first, as detectron2's ``load_coco_json`` does) and, in the training splits, images left
without annotations are dropped and counted in the log.

Ids are the family's (one label space for all splits): a JSON category is matched to the family's
class by name, so ``car:license plate`` is class 24 and object ``car`` is 5 in ``pascal_part_train_base``
(whose JSON numbers it 19) as in ``pascal_part_train``. PACO's label space is built from the JSON's own
``categories`` (every PACO-LVIS JSON lists all 531), the others are fixed in the label-space module.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from semantic_sam.data.label_spaces import (
    LabelSpace,
    LabelSpaceError,
    paco_class_name,
    paco_label_space,
    partimagenet_label_space,
    partimagenet_object_part,
    pascal_part_label_space,
    split_object_part,
)
from semantic_sam.errors import UserError

from .json_files import json_field, json_list, read_json_object
from .register_coco_panoptic_interactive import dataset_root

__all__ = [
    "PART_DATASETS",
    "PartDatasetSplit",
    "PartJSONError",
    "load_part_json",
    "register_all_part_datasets",
    "register_part_dataset",
]

logger = logging.getLogger(__name__)


class PartJSONError(ValueError, UserError):
    """A part-dataset JSON cannot be used; the one-line message names the file and the key."""


@dataclass(frozen=True)
class PartDatasetSplit:
    """Where a registered split lives (relative to the dataset root) and how it is read."""

    family: str  # "pascal_part", "partimagenet" or "paco_lvis"
    image_root: str
    json_file: str
    drop_empty_images: bool  # training splits: images without annotations are dropped


_PASCAL_IMAGES = os.path.join("pascal_part", "VOCdevkit", "VOC2010", "JPEGImages")
PART_DATASETS: dict[str, PartDatasetSplit] = {
    "pascal_part_train": PartDatasetSplit("pascal_part", _PASCAL_IMAGES, "pascal_part/train.json", True),
    "pascal_part_val": PartDatasetSplit("pascal_part", _PASCAL_IMAGES, "pascal_part/val.json", False),
    "pascal_part_train_base": PartDatasetSplit("pascal_part", _PASCAL_IMAGES, "pascal_part/train_base.json", True),
    "partimagenet_train": PartDatasetSplit(
        "partimagenet", "partimagenet/train", "partimagenet/train_format.json", True
    ),
    "partimagenet_val": PartDatasetSplit("partimagenet", "partimagenet/val", "partimagenet/val_format.json", False),
    "paco_lvis_train": PartDatasetSplit("paco_lvis", "coco", "paco/annotations/paco_lvis_v1_train.json", True),
    "paco_lvis_val": PartDatasetSplit("paco_lvis", "coco", "paco/annotations/paco_lvis_v1_val.json", False),
}

# family -> (config section of its mapper settings, label space when fixed, category -> class id resolver)
_CONFIG_SECTIONS = {"pascal_part": "PASCAL_PART", "partimagenet": "PARTIMAGENET", "paco_lvis": "PACO"}
_FIXED_SPACES: dict[str, Callable[[], LabelSpace]] = {
    "pascal_part": pascal_part_label_space,
    "partimagenet": partimagenet_label_space,
}


# ------------------------------------------------------------------------------------------ JSON checks
def _read_json(path: str) -> dict:
    return read_json_object(path, PartJSONError, "annotation JSON", "COCO-style JSON")


def _items(data: dict, key: str, path: str) -> list[dict]:
    return json_list(data, key, path, PartJSONError, "COCO-style JSON")


def _field(item: dict, name: str, types: type | tuple, where: str, path: str) -> Any:
    return json_field(item, name, types, where, path, PartJSONError)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _segmentation(segm: Any, height: int, width: int, where: str, path: str) -> list | dict | None:
    """Polygons with fewer than 3 points removed (None when none is left), or a compressed RLE."""
    from pycocotools import mask as mask_util

    if isinstance(segm, list):
        polygons = []
        for k, poly in enumerate(segm):
            if not isinstance(poly, list) or not all(_is_number(v) for v in poly):
                raise PartJSONError(f"{path}: {where}.segmentation[{k}] must be a list of numbers (a polygon)")
            if len(poly) % 2 == 0 and len(poly) >= 6:
                polygons.append([float(v) for v in poly])
        return polygons or None
    if isinstance(segm, dict):
        size, counts = segm.get("size"), segm.get("counts")
        if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) for v in size)):
            raise PartJSONError(f"{path}: {where}.segmentation.size must be [height, width], got {size!r:.60}")
        if list(size) != [height, width]:
            raise PartJSONError(
                f"{path}: {where}.segmentation.size is {size}, but the image is {height}x{width} (height x width)"
            )
        if isinstance(counts, list):
            if not all(isinstance(v, int) and v >= 0 for v in counts) or sum(counts) != height * width:
                raise PartJSONError(
                    f"{path}: {where}.segmentation.counts must be non-negative run lengths summing to {height * width}"
                )
            return mask_util.frPyObjects(segm, height, width)
        if isinstance(counts, (str, bytes)):
            return {"size": [height, width], "counts": counts}
        raise PartJSONError(f"{path}: {where}.segmentation.counts must be a string or a list, got {counts!r:.60}")
    raise PartJSONError(
        f"{path}: {where}.segmentation must be a list of polygons or an RLE object, got {type(segm).__name__}"
    )


def _bbox(value: Any, where: str, path: str) -> list[float]:
    if not (isinstance(value, list) and len(value) == 4 and all(_is_number(v) for v in value)):
        raise PartJSONError(f"{path}: {where}.bbox must be [x, y, width, height], got {value!r:.60}")
    return [float(v) for v in value]


def _bbox_of(segm: list | dict, height: int, width: int) -> list[float]:
    from pycocotools import mask as mask_util

    rle = mask_util.merge(mask_util.frPyObjects(segm, height, width)) if isinstance(segm, list) else segm
    return [float(v) for v in mask_util.toBbox(rle)]


# ------------------------------------------------------------------------------------------ categories
def _family_classes(
    family: str, categories: list[dict], path: str, label_space: LabelSpace | None = None
) -> tuple[LabelSpace, dict[int, int]]:
    """The family's label space (or ``label_space``) and JSON category id -> contiguous class id."""
    cat_ids: dict[int, str] = {}
    for i, c in enumerate(categories):
        where = f"categories[{i}]"
        cid = _field(c, "id", int, where, path)
        name = _field(c, "name", str, where, path)
        if cid in cat_ids:
            raise PartJSONError(f"{path}: {where}: category id {cid} appears twice")
        cat_ids[cid] = name
    if not cat_ids:
        raise PartJSONError(f"{path}: 'categories' is empty")

    if label_space is not None:  # a given label space: categories matched by their object:part name
        to_class = {}
        for cid, name in cat_ids.items():
            try:
                split_object_part(name)
                to_class[cid] = label_space.class_id(name)
            except LabelSpaceError as e:
                raise PartJSONError(f"{path}: category {cid}: {e}") from None
        return label_space, to_class

    if family == "paco_lvis":
        try:
            for cid, name in cat_ids.items():
                split_object_part(paco_class_name(name))
        except LabelSpaceError as e:
            raise PartJSONError(f"{path}: category {cid}: {e}") from None
        space = paco_label_space([{"id": k, "name": v} for k, v in cat_ids.items()])
        return space, {cid: i for i, cid in enumerate(sorted(cat_ids))}

    space = _FIXED_SPACES[family]()
    supercategory = {c["id"]: c.get("supercategory") for c in categories}
    to_class = {}
    for cid, name in cat_ids.items():
        try:
            if family == "pascal_part":
                split_object_part(name)  # a part name without an object is reported as such
                to_class[cid] = space.class_id(name)
            else:  # partimagenet: match on (supercategory, part), whatever the spacing or case
                sup = supercategory[cid] if isinstance(supercategory[cid], str) else None
                pair = partimagenet_object_part(name, sup)
                matches = [i for i, n in enumerate(space.class_names) if partimagenet_object_part(n) == pair]
                if not matches:
                    raise LabelSpaceError(f"{name!r} is not a partimagenet class ({space.num_classes} classes)")
                to_class[cid] = matches[0]
        except LabelSpaceError as e:
            raise PartJSONError(f"{path}: category {cid}: {e}") from None
    return space, to_class


# ------------------------------------------------------------------------------------------ loading
def _missing(path: str, what: str, dataset: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"{dataset}: {what} not found: expected {path!r}. Set $DETECTRON2_DATASETS (or $DATASET) to the "
        f"folder that holds the dataset folders (see DATASET.md, 'Labelled data')."
    )


def load_part_json(
    json_file: str,
    image_root: str,
    family: str,
    dataset_name: str | None = None,
    drop_empty_images: bool = False,
    label_space: LabelSpace | None = None,
) -> list[dict]:
    """Read a part dataset's COCO-style JSON into detectron2 dataset dicts (see the module docstring).

    ``label_space``: the classes of a family this module does not know (e.g. the built-in synthetic parts):
    JSON categories are matched to its ``object:part`` class names (``family`` then only names it).

    Checks the parts of the JSON that are used: ``categories`` (``id``, ``name``; names must be
    classes of the family, e.g. ``object:part`` for Pascal-Part), ``images`` (``id``, ``file_name``,
    ``height``, ``width``) and ``annotations`` (``image_id`` of a listed image, ``category_id`` of a
    listed category, ``segmentation``: polygons or an RLE of the image's size, optional ``bbox``,
    ``iscrowd``). When ``dataset_name`` is given, the label space is also put in its metadata.

    Raises:
        FileNotFoundError: the image folder or the JSON is missing (names the path and the variable).
        PartJSONError: the JSON is unreadable, lacks a key, has a value of the wrong type, names an
            unknown image or category, or a category that is not a class of the family (one line
            naming the file and the key).
    """
    what = dataset_name or family
    if not os.path.isdir(image_root):
        raise _missing(image_root, "image folder", what)
    if not os.path.isfile(json_file):
        raise _missing(json_file, "annotation JSON", what)
    p = json_file
    data = _read_json(p)
    categories = _items(data, "categories", p)
    images = _items(data, "images", p)
    annotations = _items(data, "annotations", p)
    space, to_class = _family_classes(family, categories, p, label_space)
    if dataset_name is not None:
        MetadataCatalog.get(dataset_name).set(**space.metadata())

    records: dict[Any, dict] = {}
    for i, img in enumerate(images):
        where = f"images[{i}]"
        image_id = _field(img, "id", (int, str), where, p)
        if image_id in records:
            raise PartJSONError(f"{p}: {where}: image id {image_id!r} appears twice")
        records[image_id] = {
            "file_name": os.path.join(image_root, _field(img, "file_name", str, where, p)),
            "image_id": image_id,
            "height": _field(img, "height", int, where, p),
            "width": _field(img, "width", int, where, p),
            "annotations": [],
        }

    n_crowd = n_no_segm = 0
    for i, ann in enumerate(annotations):
        where = f"annotations[{i}]"
        image_id = _field(ann, "image_id", (int, str), where, p)
        record = records.get(image_id)
        if record is None:
            raise PartJSONError(f"{p}: {where} names unknown image_id {image_id!r}")
        category_id = _field(ann, "category_id", int, where, p)
        if category_id not in to_class:
            known = sorted(to_class)
            raise PartJSONError(
                f"{p}: {where} has category_id {category_id}, which is not in 'categories' "
                f"({len(known)} categories, ids {known[0]}..{known[-1]})"
            )
        if ann.get("iscrowd", 0):
            n_crowd += 1
            continue
        segm = ann.get("segmentation")
        segm = _segmentation(segm, record["height"], record["width"], where, p) if segm else None
        if segm is None:
            n_no_segm += 1
            continue
        class_id = to_class[category_id]
        bbox = _bbox(ann["bbox"], where, p) if "bbox" in ann else _bbox_of(segm, record["height"], record["width"])
        record["annotations"].append(
            {
                "id": ann.get("id"),
                "category_id": class_id,
                "object_id": space.class_to_object[class_id],
                "part_id": space.class_to_part[class_id],
                "is_whole": family == "paco_lvis" and ":" not in space.class_names[class_id],
                "segmentation": segm,
                "bbox": bbox,
                "bbox_mode": BoxMode.XYWH_ABS,
                "iscrowd": 0,
            }
        )

    dicts = list(records.values())
    n_empty = sum(1 for d in dicts if not d["annotations"])
    if drop_empty_images:
        dicts = [d for d in dicts if d["annotations"]]
    logger.info(
        "Loaded %d images from %s (%s %d without annotations; dropped %d crowd annotations and %d without a valid "
        "segmentation)",
        len(dicts),
        json_file,
        "dropped" if drop_empty_images else "kept",
        n_empty,
        n_crowd,
        n_no_segm,
    )
    return dicts


# ------------------------------------------------------------------------------------------ registration
def register_part_dataset(name: str, split: PartDatasetSplit, root: str | None = None) -> str:
    """Register ``name`` as ``split`` under ``root`` (default :func:`dataset_root`) and return it.

    Only paths and (for Pascal-Part and PartImageNet) the fixed label space are recorded; the JSON
    is read when the dataset is loaded (PACO's label space is put in the metadata then).
    Registering again replaces the earlier registration.
    """
    root = dataset_root() if root is None else root
    json_file = os.path.join(root, split.json_file)
    image_root = os.path.join(root, split.image_root)
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    DatasetCatalog.register(
        name, lambda: load_part_json(json_file, image_root, split.family, name, split.drop_empty_images)
    )
    meta: dict[str, Any] = {
        "json_file": json_file,
        "image_root": image_root,
        "config_section": _CONFIG_SECTIONS[split.family],
    }
    if split.family in _FIXED_SPACES:
        space = _FIXED_SPACES[split.family]()
        meta.update(space.metadata())
    MetadataCatalog.get(name).set(**meta)
    return name


def register_all_part_datasets(root: str | None = None) -> list[str]:
    """Register every split of :data:`PART_DATASETS` under ``root`` (default: the environment, read
    now); missing files raise only when a dataset is loaded. Returns the names."""
    root = dataset_root() if root is None else root
    names = [register_part_dataset(name, split, root) for name, split in PART_DATASETS.items()]
    logger.info("registered part datasets under %s: %s", root, ", ".join(names))
    return names
