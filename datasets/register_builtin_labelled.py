"""The built-in model's labelled synthetic data: COCO-panoptic objects and Pascal-Part-style parts.

Written by ``python -m tools.make_builtin_data --output ROOT --labelled panoptic parts`` and
registered (lazily: nothing is read until a dataset is loaded) by :func:`register_builtin_labelled`
under the dataset root (``$DETECTRON2_DATASETS``, else ``$DATASET``, else ``./datasets``; the
tool prints ``DETECTRON2_DATASETS=ROOT``)::

    sa1b_json/{train,val}/sa_N.jpg                     the images (those of the SA-1B layout)
    builtin_panoptic/panoptic_{train,val}/sa_N.png     COCO panoptic PNGs
    builtin_panoptic/panoptic_{train,val}.json         COCO panoptic JSONs
    builtin_parts/{train,val}.json                     VLPart's Pascal-Part JSON layout

* ``builtin_panoptic_train`` / ``builtin_panoptic_val``: the objects (things) and stuff regions, one
  segment each; an object's segment holds its parts. Label space
  :func:`datasets.builtin_labels.builtin_panoptic_label_space` (9 things, 5 stuff), config section ``COCO``.
* ``builtin_parts_train`` / ``builtin_parts_val``: every part and sub-part as an ``object:part``
  annotation (compressed RLE, ``bbox``). Label space :func:`datasets.builtin_labels.builtin_part_label_space`
  (46 classes, 8 objects, 39 parts), config section ``PASCAL_PART``.

The dataset dicts are those of the COCO panoptic labelled set
(:mod:`datasets.register_coco_panoptic_labelled`: ``segments_info`` with ``category_id`` =
``object_id`` = contiguous class, ``part_id`` = -1) and of the part sets
(:func:`datasets.register_part_datasets.load_part_json`), so the labelled mapper
(:class:`datasets.labelled_dataset_mapper.LabelledDatasetMapper`) reads them as it reads COCO and
Pascal-Part. Training splits drop images without segments.

Evaluation sets of the val split (:func:`register_builtin_eval_datasets`, :data:`BUILTIN_EVAL_DATASETS`;
``train_net.py --eval_only`` routes them by their metadata)::

    builtin_panoptic/panoptic_semseg_val/sa_N.png      semantic PNGs derived from the panoptic ones
    builtin_panoptic/instances_val.json                the thing segments as COCO instances

* ``builtin_panoptic_val_interactive``: one click per panoptic segment; the inputs carry the 14 names as
  their vocabulary and each segment's class, so a model with a text encoder is also scored for object
  labels (``label_acc@Max`` / ``@Oracle``, per class ``label_acc@Max/<name>``).
* ``builtin_parts_val_interactive``: one click per part and sub-part annotation; vocabulary = the part
  label space's objects and parts, so part labels are scored too (``part_label_acc@Max`` / ``@Oracle``,
  per part ``part_label_acc@Max/<part>``).
* ``builtin_panoptic_val_generic``: whole-image segmentation scored like ``coco_2017_val_panoptic_generic``
  (PQ with a per-class table, box and mask AP on the instances JSON, mIoU on the semantic PNGs); the
  derived files are written by ``tools.make_builtin_data --labelled panoptic`` (or, for an existing root,
  ``python -m tools.prepare_coco_semantic_from_panoptic ROOT --builtin``).
"""
from __future__ import annotations

import logging
import os
from functools import partial
from typing import Any

from detectron2.data import DatasetCatalog, MetadataCatalog


from .builtin_labels import (
    builtin_panoptic_categories,
    builtin_panoptic_label_space,
    builtin_part_categories,
    builtin_part_label_space,
)
from .json_files import read_json_object
from .register_coco_panoptic_generic import PanopticGenericSpec, load_panoptic_generic, panoptic_generic_metadata
from .register_coco_panoptic_interactive import EVALUATOR_TYPE as INTERACTIVE_EVALUATOR_TYPE
from .register_coco_panoptic_interactive import check_panoptic_paths, dataset_root, load_coco_panoptic_interactive
from .register_coco_panoptic_labelled import labelled_segments
from .register_part_datasets import PartJSONError, load_part_json

__all__ = [
    "BUILTIN_EVAL_DATASETS",
    "BUILTIN_LABELLED_DATASETS",
    "BUILTIN_SPLITS",
    "MAKE_COMMAND",
    "builtin_panoptic_generic_paths",
    "builtin_panoptic_generic_spec",
    "builtin_panoptic_metadata",
    "builtin_panoptic_paths",
    "builtin_parts_paths",
    "load_builtin_panoptic",
    "load_builtin_panoptic_generic",
    "load_builtin_parts",
    "register_builtin_eval_datasets",
    "register_builtin_labelled",
]

logger = logging.getLogger(__name__)

BUILTIN_SPLITS = ("train", "val")
BUILTIN_LABELLED_DATASETS = tuple(f"builtin_{kind}_{s}" for kind in ("panoptic", "parts") for s in BUILTIN_SPLITS)
BUILTIN_EVAL_DATASETS = (
    "builtin_panoptic_val_interactive",
    "builtin_parts_val_interactive",
    "builtin_panoptic_val_generic",
)
MAKE_COMMAND = "python -m tools.make_builtin_data --output ROOT --labelled panoptic parts"


def _check_split(split: str) -> None:
    if split not in BUILTIN_SPLITS:
        raise ValueError(f"split must be one of {BUILTIN_SPLITS}, got {split!r}")


def builtin_panoptic_paths(split: str, root: str | None = None) -> dict[str, str]:
    """``image_root``, ``panoptic_root`` and ``panoptic_json`` of a split under ``root`` (default: the
    environment's dataset root)."""
    _check_split(split)
    root = dataset_root() if root is None else root
    return {
        "image_root": os.path.join(root, "sa1b_json", split),
        "panoptic_root": os.path.join(root, "builtin_panoptic", f"panoptic_{split}"),
        "panoptic_json": os.path.join(root, "builtin_panoptic", f"panoptic_{split}.json"),
    }


def builtin_parts_paths(split: str, root: str | None = None) -> dict[str, str]:
    """``image_root`` and ``json_file`` of a split under ``root`` (default: the environment's dataset root)."""
    _check_split(split)
    root = dataset_root() if root is None else root
    return {
        "image_root": os.path.join(root, "sa1b_json", split),
        "json_file": os.path.join(root, "builtin_parts", f"{split}.json"),
    }


def builtin_panoptic_generic_paths(split: str = "val", root: str | None = None) -> dict[str, str]:
    """:func:`builtin_panoptic_paths` plus the derived files of generic evaluation: ``sem_seg_root``
    (``builtin_panoptic/panoptic_semseg_<split>``) and ``instances_json``
    (``builtin_panoptic/instances_<split>.json``)."""
    paths = builtin_panoptic_paths(split, root)
    folder = os.path.dirname(paths["panoptic_json"])
    return {
        **paths,
        "sem_seg_root": os.path.join(folder, f"panoptic_semseg_{split}"),
        "instances_json": os.path.join(folder, f"instances_{split}.json"),
    }


def builtin_panoptic_generic_spec() -> PanopticGenericSpec:
    """The built-in panoptic categories (9 things, 5 stuff) and messages, for
    :mod:`datasets.register_coco_panoptic_generic`'s loader and derived-file writer."""
    return PanopticGenericSpec(
        "built-in panoptic",
        tuple(builtin_panoptic_categories()),
        "Set $DETECTRON2_DATASETS to ROOT (see DATASET.md, 'Built-in labelled data'); for an existing ROOT, "
        "python -m tools.prepare_coco_semantic_from_panoptic ROOT --builtin writes the derived files only",
        MAKE_COMMAND,
    )


def _missing(path: str, what: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"built-in labelled data: {what} not found: expected {path!r}. Write it with "
        f"{MAKE_COMMAND}, and set $DETECTRON2_DATASETS to ROOT (see DATASET.md)."
    )


def builtin_panoptic_metadata() -> dict[str, Any]:
    """The label space plus detectron2's panoptic class metadata: every class name under
    ``thing_classes`` and ``stuff_classes`` (as for COCO), dataset id -> contiguous id for things and stuff."""
    cats = builtin_panoptic_categories()
    return {
        "stuff_classes": [c["name"] for c in cats],
        "thing_dataset_id_to_contiguous_id": {c["id"]: k for k, c in enumerate(cats) if c["isthing"]},
        "stuff_dataset_id_to_contiguous_id": {c["id"]: k for k, c in enumerate(cats) if not c["isthing"]},
        **builtin_panoptic_label_space().metadata(),
    }


def load_builtin_panoptic(
    image_root: str, panoptic_root: str, panoptic_json: str, drop_empty_images: bool = False
) -> list[dict]:
    """Read a built-in panoptic split into labelled dataset dicts (as COCO panoptic labelled's).

    Raises:
        FileNotFoundError: a folder or the JSON is missing (names the path and the command that writes it).
        PanopticJSONError: as :func:`load_coco_panoptic_interactive`, or a segment's category id is not
            a built-in panoptic class (names the file, the segment and the id).
    """
    check_panoptic_paths(image_root, panoptic_root, panoptic_json, _missing)
    to_class = {c["id"]: k for k, c in enumerate(builtin_panoptic_categories())}
    records = load_coco_panoptic_interactive(image_root, panoptic_root, panoptic_json)
    classes = f"the built-in panoptic categories (ids 1..{len(to_class)})"
    dicts, _ = labelled_segments(records, to_class, panoptic_json, classes, drop_empty_images)
    logger.info("built-in panoptic: %d images from %s", len(dicts), panoptic_json)
    return dicts


def load_builtin_panoptic_generic(
    image_root: str, panoptic_root: str, panoptic_json: str, sem_seg_root: str, instances_json: str
) -> list[dict]:
    """Read the built-in panoptic val split for generic evaluation (as COCO panoptic generic's dicts:
    :func:`datasets.register_coco_panoptic_generic.load_panoptic_generic` with the built-in categories).

    Raises:
        FileNotFoundError: a file or folder is missing, the derived ones included (names the path and
            the command that writes it).
        PanopticJSONError: as :func:`load_builtin_panoptic`.
    """
    check_panoptic_paths(image_root, panoptic_root, panoptic_json, _missing)
    return load_panoptic_generic(
        image_root, panoptic_root, panoptic_json, sem_seg_root, instances_json, builtin_panoptic_generic_spec()
    )


def load_builtin_parts(json_file: str, image_root: str, drop_empty_images: bool = False) -> list[dict]:
    """Read a built-in part split into part dataset dicts (as :func:`load_part_json`'s).

    The JSON must list exactly the built-in ``object:part`` classes as ``categories``, with ids 1..K in
    class order, so that class, object and part ids are those of :func:`builtin_part_label_space`.

    Raises:
        FileNotFoundError: the image folder or the JSON is missing.
        PartJSONError: as :func:`load_part_json`, or the categories are not the built-in classes.
    """
    if not os.path.isdir(image_root):
        raise _missing(image_root, "image folder")
    if not os.path.isfile(json_file):
        raise _missing(json_file, "part JSON")
    categories = read_json_object(json_file, PartJSONError, "part JSON", "COCO-style JSON").get("categories")
    expected = [(c["id"], c["name"]) for c in builtin_part_categories()]
    found = None
    if isinstance(categories, list) and all(isinstance(c, dict) for c in categories):
        found = [(c.get("id"), c.get("name")) for c in categories]
    if found != expected:
        raise PartJSONError(
            f"{json_file}: 'categories' must be the {len(expected)} built-in part classes with ids 1..{len(expected)} "
            f"in order ({expected[0][1]!r}, {expected[1][1]!r}, ...), as tools/make_builtin_data.py writes them"
        )
    return load_part_json(
        json_file, image_root, "builtin_parts", None, drop_empty_images, label_space=builtin_part_label_space()
    )


def register_builtin_labelled(root: str | None = None) -> list[str]:
    """Register :data:`BUILTIN_LABELLED_DATASETS` under ``root`` (default: the environment, read now)
    and return the names. Files are read when a dataset is loaded; registering again replaces the
    earlier registration."""
    root = dataset_root() if root is None else root
    part_space = builtin_part_label_space()
    names = []
    for split in BUILTIN_SPLITS:
        drop_empty = split == "train"
        pan = builtin_panoptic_paths(split, root)
        parts = builtin_parts_paths(split, root)
        entries = (
            (
                f"builtin_panoptic_{split}",
                partial(load_builtin_panoptic, **pan, drop_empty_images=drop_empty),
                dict(config_section="COCO", ignore_label=255, **pan, **builtin_panoptic_metadata()),
            ),
            (
                f"builtin_parts_{split}",
                partial(load_builtin_parts, **parts, drop_empty_images=drop_empty),
                dict(
                    config_section="PASCAL_PART",
                    thing_dataset_id_to_contiguous_id={c["id"]: k for k, c in enumerate(builtin_part_categories())},
                    **parts,
                    **part_space.metadata(),
                ),
            ),
        )
        names += [_register(name, load, meta) for name, load, meta in entries]
    logger.info("registered the built-in labelled datasets under %s: %s", root, ", ".join(names))
    return names


def _register(name: str, load, meta: dict) -> str:
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, load)
    MetadataCatalog.get(name).set(**meta)
    return name


def register_builtin_eval_datasets(root: str | None = None) -> list[str]:
    """Register :data:`BUILTIN_EVAL_DATASETS` (the val split's interactive and generic evaluation sets, see
    the module docstring) under ``root`` (default: the environment, read now) and return the names.

    Files are read when a dataset is loaded. The interactive sets have the interactive ``evaluator_type``
    and the label space's ``object_classes`` / ``part_classes`` (the vocabulary the evaluation mapper
    writes into the inputs), and no ``config_section``, so they are never taken for training or part-AP
    sets; the generic set has COCO panoptic generic's metadata
    (:func:`~datasets.register_coco_panoptic_generic.panoptic_generic_metadata`).
    """
    root = dataset_root() if root is None else root
    pan = builtin_panoptic_paths("val", root)
    parts = builtin_parts_paths("val", root)
    generic = builtin_panoptic_generic_paths("val", root)
    interactive = {"evaluator_type": INTERACTIVE_EVALUATOR_TYPE, "ignore_label": 255}
    entries = (
        (
            "builtin_panoptic_val_interactive",
            partial(load_builtin_panoptic, **pan),
            dict(**interactive, **pan, **builtin_panoptic_label_space().metadata()),
        ),
        (
            "builtin_parts_val_interactive",
            partial(load_builtin_parts, **parts),
            dict(**interactive, **parts, **builtin_part_label_space().metadata()),
        ),
        (
            "builtin_panoptic_val_generic",
            partial(load_builtin_panoptic_generic, **generic),
            dict(
                image_root=generic["image_root"],
                panoptic_root=generic["panoptic_root"],
                panoptic_json=generic["panoptic_json"],
                sem_seg_root=generic["sem_seg_root"],
                json_file=generic["instances_json"],
                **panoptic_generic_metadata(builtin_panoptic_generic_spec()),
            ),
        ),
    )
    names = [_register(name, load, meta) for name, load, meta in entries]
    logger.info("registered the built-in evaluation datasets under %s: %s", root, ", ".join(names))
    return names
