"""Dataset mapper for labelled data (COCO panoptic, Pascal-Part, PartImageNet, PACO-LVIS).

Training augmentation is large-scale jitter (SEMANTIC_SPEC §8), from the dataset family's config
section ``<SECTION>.INPUT`` (``COCO``, ``PASCAL_PART``, ``PARTIMAGENET``, ``PACO``; the section is
named by the dataset's metadata ``config_section``): random flip (``RANDOM_FLIP``), resize so the
image fits in ``IMAGE_SIZE`` x U(``MIN_SCALE``, ``MAX_SCALE``) keeping its aspect ratio
(``ResizeScale``; defaults 0.1-2.0, 1024), then crop to ``IMAGE_SIZE``² at a random offset when
larger and pad bottom/right to ``IMAGE_SIZE``² (``FixedSizeCrop``; image padded with 128, masks
with 0). Evaluation: ``ResizeShortestEdge(MIN_SIZE_TEST, MAX_SIZE_TEST)``. These are the SA-1B
mapper's augmentations (:func:`datasets.sa1b_dataset_mapper.build_transform_gen`) with the
family's values; SA-1B keeps its own scale range (0.99-1.01).

Masks come from the panoptic PNG (dicts with ``pan_seg_file_name`` and ``segments_info``, from
:mod:`datasets.register_coco_panoptic_labelled`) or from each annotation's polygons or COCO RLE
(dicts with ``annotations``, from :mod:`datasets.register_part_datasets`). Each mask is made at
the original size and transformed like a segmentation map (nearest-neighbour resize), the panoptic
PNG as a whole. Boxes are the tight boxes of the transformed masks; masks left empty by the crop
are dropped.
"""
from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BitMasks, Boxes, Instances

from semantic_sam.data.label_spaces import NO_PART
from semantic_sam.data.labelled_config import WHOLE_INSTANCE_POLICIES
from semantic_sam.errors import UserError

from .sa1b_dataset_mapper import build_transform_gen

__all__ = ["LabelledDataError", "LabelledDatasetMapper", "build_labelled_transform_gen"]

logger = logging.getLogger(__name__)


class LabelledDataError(ValueError, UserError):
    """A labelled dataset dict the mapper cannot use (a panoptic PNG of the wrong size, an unknown
    dataset, an RLE of the wrong size); the message names the file."""


def build_labelled_transform_gen(cfg: Any, section: str, is_train: bool) -> list[T.Augmentation]:
    """The augmentations of ``cfg.<section>.INPUT`` (see the module docstring)."""
    return build_transform_gen(cfg[section]["INPUT"], is_train)


def _decode(segm: list | dict, height: int, width: int) -> np.ndarray:
    """(H, W) uint8 mask of polygons or a (compressed or uncompressed) COCO RLE."""
    from pycocotools import mask as mask_util

    if isinstance(segm, list):
        rle = mask_util.merge(mask_util.frPyObjects(segm, height, width))
    elif isinstance(segm["counts"], list):
        rle = mask_util.frPyObjects(segm, height, width)
    else:
        rle = segm
    return mask_util.decode(rle)


class LabelledDatasetMapper:
    """Map a labelled dataset dict to the model's training input.

    1. Read the image and apply the augmentations.
    2. One mask per non-crowd segment (panoptic PNG) or annotation (polygons / RLE), transformed
       with the image; PACO's object entries (``is_whole``) are handled by ``whole_instances``.
    3. ``Instances`` of the augmented size with ``gt_masks`` (BitMasks), ``gt_boxes`` (tight boxes
       of the masks, XYXY pixels, exclusive max), ``gt_classes`` (the contiguous class),
       ``gt_object_classes`` (object id), ``gt_part_classes`` (part id, or ``NO_PART`` = -1 for
       object-level data such as COCO); instances whose mask is empty after augmentation are dropped
       (an image may end with none).

    Returns a dict with ``image`` uint8 (3, H', W') in ``image_format`` order, ``instances``,
    ``height`` / ``width`` (the original size), ``file_name`` and ``image_id``.
    """

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations: Sequence[T.Augmentation | T.Transform],
        image_format: str = "RGB",
        whole_instances: str = "drop",
        dataset_name: str | None = None,
        vocabulary: dict[str, Sequence[str]] | None = None,
    ):
        """
        Args:
            is_train: training or evaluation (only recorded; the augmentations decide).
            augmentations: detectron2 augmentations applied in order.
            image_format: "RGB" or "BGR".
            whole_instances: PACO's object entries (annotations with ``is_whole``): ``"drop"``
                (the reference), ``"object_only"`` (kept, part label ``NO_PART``) or ``"whole_part"``
                (kept, part label ``whole``).
            dataset_name: written into each output (``"dataset_name"``), so that a batch names its dataset.
            vocabulary: ``{"object": object names, "part": part names}`` of the dataset's label space
                (index = ``gt_object_classes`` / ``gt_part_classes``), written into each output
                (``"vocabulary"``) for the model's class losses; None: not written.
        """
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        if whole_instances not in WHOLE_INSTANCE_POLICIES:
            raise ValueError(f"whole_instances must be one of {WHOLE_INSTANCE_POLICIES}, got {whole_instances!r}")
        self.is_train = is_train
        self.augmentations = T.AugmentationList(list(augmentations))
        self.image_format = image_format
        self.whole_instances = whole_instances
        self.dataset_name = dataset_name
        self.vocabulary = (
            None if vocabulary is None else {"object": tuple(vocabulary["object"]), "part": tuple(vocabulary["part"])}
        )
        logger.info("LabelledDatasetMapper (%s) augmentations: %s", "train" if is_train else "eval", self.augmentations)

    @classmethod
    def from_config(cls, cfg, is_train: bool = True, dataset_name: str | None = None) -> dict:
        """Config -> constructor kwargs for ``dataset_name`` (default: the first of
        ``DATASETS.TRAIN`` / ``DATASETS.TEST``), a registered labelled dataset: its metadata's
        ``config_section`` names the config section read."""
        if dataset_name is None:
            names = cfg.DATASETS.TRAIN if is_train else cfg.DATASETS.TEST
            if not names:
                raise ValueError(f"cfg.DATASETS.{'TRAIN' if is_train else 'TEST'} is empty")
            dataset_name = names[0]
        section = MetadataCatalog.get(dataset_name).get("config_section", None)
        if section is None:
            raise LabelledDataError(
                f"dataset {dataset_name!r} is not a registered labelled dataset; register it with "
                "datasets.register_part_datasets.register_all_part_datasets() or "
                "datasets.register_coco_panoptic_labelled.register_coco_panoptic_labelled()"
            )
        if is_train and MetadataCatalog.get(dataset_name).get("object_classes", None) is None:
            DatasetCatalog.get(dataset_name)  # PACO puts its label space in the metadata when it is loaded
        meta = MetadataCatalog.get(dataset_name)
        node = cfg[section]
        whole = node["DATASET"].get("WHOLE_INSTANCES", "drop") if "DATASET" in node else "drop"
        return {
            "is_train": is_train,
            "augmentations": build_labelled_transform_gen(cfg, section, is_train),
            "image_format": node["INPUT"]["FORMAT"],
            "whole_instances": whole,
            "dataset_name": dataset_name,
            "vocabulary": {"object": meta.object_classes, "part": meta.part_classes} if is_train else None,
        }

    def __call__(self, dataset_dict: dict) -> dict:
        dataset_dict = copy.deepcopy(dataset_dict)
        image = utils.read_image(dataset_dict["file_name"], format=self.image_format)
        utils.check_image_size(dataset_dict, image)
        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        h, w = image.shape[:2]

        if "pan_seg_file_name" in dataset_dict:
            masks, labels = self._panoptic_masks(dataset_dict, transforms)
        else:
            masks, labels = self._annotation_masks(dataset_dict, transforms)

        keep = [i for i, m in enumerate(masks) if m.any()]
        instances = Instances((h, w))
        stacked = np.stack([masks[i] for i in keep]) if keep else np.zeros((0, h, w), bool)
        instances.gt_masks = BitMasks(torch.from_numpy(stacked))
        instances.gt_boxes = instances.gt_masks.get_bounding_boxes() if keep else Boxes(torch.zeros((0, 4)))
        for field, column in (("gt_classes", 0), ("gt_object_classes", 1), ("gt_part_classes", 2)):
            instances.set(field, torch.tensor([labels[i][column] for i in keep], dtype=torch.int64))
        out = {
            "image": torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "instances": instances,
            "height": dataset_dict["height"],
            "width": dataset_dict["width"],
            "file_name": dataset_dict["file_name"],
            "image_id": dataset_dict.get("image_id"),
        }
        if self.dataset_name is not None:
            out["dataset_name"] = self.dataset_name
        if self.vocabulary is not None:
            out["vocabulary"] = self.vocabulary
        return out

    # -- mask sources ----------------------------------------------------------------------------
    def _panoptic_masks(self, d: dict, transforms: T.TransformList) -> tuple[list[np.ndarray], list[tuple]]:
        from panopticapi.utils import rgb2id

        pan_rgb = utils.read_image(d["pan_seg_file_name"], format="RGB")
        if pan_rgb.shape[:2] != (d["height"], d["width"]):
            raise LabelledDataError(
                f"{d['pan_seg_file_name']}: panoptic PNG is {pan_rgb.shape[1]}x{pan_rgb.shape[0]}, "
                f"image {d['file_name']} is {d['width']}x{d['height']}"
            )
        # The RGB id image is transformed as a segmentation map (nearest resize; padding 0 = void).
        ids = rgb2id(transforms.apply_segmentation(pan_rgb))
        masks, labels = [], []
        for seg in d["segments_info"]:
            if seg.get("iscrowd", 0):
                continue
            masks.append(ids == seg["id"])
            labels.append((seg["category_id"], seg["object_id"], seg.get("part_id", NO_PART)))
        return masks, labels

    def _annotation_masks(self, d: dict, transforms: T.TransformList) -> tuple[list[np.ndarray], list[tuple]]:
        height, width = d["height"], d["width"]
        masks, labels = [], []
        for ann in d.get("annotations", []):
            if ann.get("iscrowd", 0):
                continue
            part = ann["part_id"]
            if ann.get("is_whole", False):
                if self.whole_instances == "drop":
                    continue
                if self.whole_instances == "object_only":
                    part = NO_PART
            segm = ann["segmentation"]
            if isinstance(segm, dict) and list(segm.get("size", ())) != [height, width]:
                raise LabelledDataError(
                    f"{d['file_name']}: annotation {ann.get('id')} has an RLE of size {segm.get('size')}, "
                    f"the image is {height}x{width}"
                )
            mask = _decode(segm, height, width)
            masks.append(transforms.apply_segmentation(mask).astype(bool, copy=False))
            labels.append((ann["category_id"], ann["object_id"], part))
        return masks, labels
