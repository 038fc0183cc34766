"""Evaluation data for whole-image (generic) segmentation: mapper and test loader.

    loader = build_generic_test_loader(cfg, "coco_2017_val_panoptic_generic")    # or "pascal_part_val"
    model = GenericInference(model, MetadataCatalog.get(name), precision=cfg.TEST.PRECISION)
    results = inference_on_dataset(model, loader, semantic_sam.evaluation.build_evaluator(cfg, name))

The mapper only reads and resizes the image; the evaluators read the GT themselves (panoptic and
semantic PNGs, the COCO JSONs), from the fields of the dataset dict that the mapper passes on.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_test_loader
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.utils import comm

__all__ = ["GenericEvalMapper", "build_generic_test_loader"]

# Fields of a dataset dict that the evaluators read (file_name and image_id: all; the panoptic ones:
# the panoptic evaluator; sem_seg_file_name: the semantic one), passed on unchanged.
_PASSED_ON = ("file_name", "image_id", "height", "width", "pan_seg_file_name", "segments_info", "sem_seg_file_name")


class GenericEvalMapper:
    """Turn a dataset dict into ``SemanticSAM.segment``'s input.

    1. Read the image (``image_format``) and check its size against the dict's ``height``/``width``.
    2. Resize it so its shortest side is ``min_size`` and its longest at most ``max_size``
       (``ResizeShortestEdge``; SEMANTIC_SPEC §9: 800 / 1333).

    Returns a dict with ``image`` (3, H, W) uint8 (the resized image), ``height``/``width`` = the
    **original** size (the model's outputs are resized back to it, where the GT lives), and the dict's
    ``file_name``, ``image_id``, ``pan_seg_file_name``, ``segments_info``, ``sem_seg_file_name`` when
    present.
    """

    @configurable
    def __init__(self, *, min_size: int, max_size: int, image_format: str = "RGB"):
        self.augmentations = T.AugmentationList([T.ResizeShortestEdge(min_size, max_size)])
        self.image_format = image_format

    @classmethod
    def from_config(cls, cfg, dataset_name: str) -> dict:
        """Sizes and format from the dataset's config section (``COCO.INPUT`` for COCO,
        ``PASCAL_PART.INPUT``, ... for a part dataset): ``MIN_SIZE_TEST``, ``MAX_SIZE_TEST``, ``FORMAT``."""
        section = MetadataCatalog.get(dataset_name).get("config_section", None) or "COCO"
        opts = cfg[section].INPUT
        return {"min_size": opts.MIN_SIZE_TEST, "max_size": opts.MAX_SIZE_TEST, "image_format": opts.FORMAT}

    def __call__(self, dataset_dict: dict) -> dict:
        image = utils.read_image(dataset_dict["file_name"], format=self.image_format)
        utils.check_image_size(dataset_dict, image)
        aug_input = T.AugInput(image)
        self.augmentations(aug_input)
        out = {k: copy.deepcopy(dataset_dict[k]) for k in _PASSED_ON if k in dataset_dict}
        out["height"], out["width"] = image.shape[:2]
        out["image"] = torch.as_tensor(np.ascontiguousarray(aug_input.image.transpose(2, 0, 1)))
        return out


def build_generic_test_loader(cfg, dataset_name: str):
    """detectron2 test loader (``InferenceSampler``: each process maps its share of the images) over
    ``dataset_name`` with :class:`GenericEvalMapper`; ``COCO.TEST.BATCH_SIZE_TOTAL / world size`` images
    per batch, ``COCO.DATALOADER.NUM_WORKERS`` workers."""
    mapper = GenericEvalMapper(cfg, dataset_name)
    batch = max(1, cfg.COCO.TEST.BATCH_SIZE_TOTAL // comm.get_world_size())
    return build_detection_test_loader(
        DatasetCatalog.get(dataset_name), mapper=mapper, batch_size=batch, num_workers=cfg.COCO.DATALOADER.NUM_WORKERS
    )
