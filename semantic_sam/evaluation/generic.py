"""What generic (whole-image) evaluation shares: which datasets it covers, its errors, and the GT readers.

* :func:`is_generic_dataset` / :func:`is_part_dataset`: whether a registered dataset is evaluated by
  whole-image segmentation (COCO panoptic with ``evaluator_type`` in :data:`GENERIC_EVALUATOR_TYPES`, or a
  part dataset, metadata ``config_section`` in :data:`PART_CONFIG_SECTIONS`).
* :class:`GenericEvaluationError`, :class:`PanopticSegmentsError`: the one-line errors of a model or a
  dataset that generic evaluation cannot use.
* :func:`read_panoptic_ids`, :func:`read_semantic_png`, :func:`check_panoptic_segments`: GT PNG readers
  and the check that a panoptic PNG holds exactly the segments of its ``segments_info``.

The model wrapper is :mod:`.generic_inference`, the evaluators :mod:`.generic_evaluators`, the table of
headline numbers :mod:`.summary`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from detectron2.data import MetadataCatalog
from detectron2.data.catalog import Metadata
from detectron2.utils.file_io import PathManager
from PIL import Image

from ..errors import UserError

__all__ = [
    "GENERIC_EVALUATOR_TYPES",
    "PART_CONFIG_SECTIONS",
    "GenericEvaluationError",
    "PanopticSegmentsError",
    "check_panoptic_segments",
    "is_generic_dataset",
    "is_part_dataset",
    "read_panoptic_ids",
    "read_semantic_png",
]

# The reference's evaluator type of COCO panoptic val with semantic PNGs (SEMANTIC_SPEC §7).
GENERIC_EVALUATOR_TYPES = ("coco_panoptic_seg",)
# Metadata ``config_section`` of the part datasets (datasets/register_part_datasets.py).
PART_CONFIG_SECTIONS = ("PASCAL_PART", "PARTIMAGENET", "PACO")


class GenericEvaluationError(ValueError, UserError):
    """A model or a dataset that generic evaluation cannot use; the one-line message says which and why."""


class PanopticSegmentsError(ValueError, UserError):
    """A panoptic PNG whose segment ids do not match its ``segments_info``; the message names the file and the id."""


# ------------------------------------------------------------------------------------------ datasets
def is_part_dataset(metadata: Metadata) -> bool:
    """Whether a dataset's metadata is a part dataset's (its ``config_section`` is a part family's)."""
    return metadata.get("config_section", None) in PART_CONFIG_SECTIONS


def is_generic_dataset(dataset_name: str) -> bool:
    """Whether ``dataset_name`` is evaluated by whole-image segmentation (generic queries): COCO panoptic
    with ``evaluator_type`` in :data:`GENERIC_EVALUATOR_TYPES`, or a part dataset without an
    ``evaluator_type`` of its own (a part set's interactive evaluation has the interactive one)."""
    meta = MetadataCatalog.get(dataset_name)
    evaluator_type = meta.get("evaluator_type", None)
    return evaluator_type in GENERIC_EVALUATOR_TYPES or (evaluator_type is None and is_part_dataset(meta))


def read_panoptic_ids(path: str) -> np.ndarray:
    """The (H, W) int64 segment ids of a COCO panoptic PNG (``R + 256 G + 256² B``; 0 = void)."""
    with PathManager.open(path, "rb") as f:
        rgb = np.asarray(Image.open(f).convert("RGB"), dtype=np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def read_semantic_png(path: str, dtype: Any = np.int64) -> np.ndarray:
    """The (H, W) class ids of a semantic PNG, as ``dtype``. (detectron2's own reader asks NumPy for
    ``np.array(..., copy=False)``, which NumPy 2 refuses for a PIL image.)"""
    with PathManager.open(path, "rb") as f:
        return np.asarray(Image.open(f), dtype=dtype)


def check_panoptic_segments(ids: np.ndarray, segments_info: Sequence[Mapping], where: str) -> None:
    """Check that the segment ids of a panoptic PNG and of its ``segments_info`` are the same set.

    Args:
        ids: (H, W) segment ids of the PNG (0 = void, not a segment).
        segments_info: the annotation's segments (each with ``"id"``).
        where: the PNG (and JSON) named in the error.

    Raises:
        PanopticSegmentsError: a listed segment id absent from the PNG, a non-zero PNG id that no segment
            lists, or an id listed twice (the first such id, and how many there are).
    """
    listed = [int(s["id"]) for s in segments_info]
    repeated = sorted({i for i in listed if listed.count(i) > 1})
    if repeated:
        raise PanopticSegmentsError(f"{where}: segment id {repeated[0]} is listed more than once in segments_info")
    present = set(np.unique(ids).tolist()) - {0}
    absent = [i for i in listed if i not in present]
    if absent:
        more = f" ({len(absent)} such ids)" if len(absent) > 1 else ""
        raise PanopticSegmentsError(
            f"{where}: segment id {absent[0]} is in segments_info but has no pixel in the PNG{more}"
        )
    unlisted = sorted(present - set(listed))
    if unlisted:
        more = f" ({len(unlisted)} such ids)" if len(unlisted) > 1 else ""
        raise PanopticSegmentsError(
            f"{where}: the PNG has pixels of segment id {unlisted[0]}, which segments_info does not list{more}"
        )
