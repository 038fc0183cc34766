"""Dataset mapper for one-click interactive evaluation on COCO panoptic."""
from __future__ import annotations

import copy
import logging

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BitMasks, Instances

from semantic_sam.data.label_spaces import coco_panoptic_dataset_ids, coco_panoptic_label_space
from semantic_sam.evaluation.click_simulation import CLICK_METHODS, clicks_from_masks

__all__ = ["NO_OBJECT", "CocoInteractiveDatasetMapper", "build_transform_gen"]

logger = logging.getLogger(__name__)

NO_OBJECT = -1
"""Object label of a segment whose category is not one of COCO panoptic's 133 (not scored for labels)."""


def build_transform_gen(cfg) -> list[T.Augmentation]:
    """``ResizeShortestEdge(COCO.INPUT.MIN_SIZE_TEST, COCO.INPUT.MAX_SIZE_TEST)`` (800, 1333)."""
    return [T.ResizeShortestEdge(cfg.COCO.INPUT.MIN_SIZE_TEST, cfg.COCO.INPUT.MAX_SIZE_TEST)]


class CocoInteractiveDatasetMapper:
    """Turn a COCO panoptic dataset dict into the model's inference input plus the GT.

    1. Read the image (RGB) and resize it (shortest edge 800, longest at most 1333).
    2. Read the panoptic PNG, resize it the same way (nearest), and decode segment ids with
       ``panopticapi.utils.rgb2id``.
    3. GT = one mask per non-crowd segment (things and stuff), in ``segments_info`` order.
       Segments that vanish in the resize are dropped and counted in ``num_dropped_segments``.
    4. Click each mask at the pixel farthest from its boundary (``click_method``: ``"kornia"``,
       the reference's distance transform, or ``"exact"``) and, if
       ``box_prompts``, take each mask's bounding box as a box prompt.

    5. Label each segment with its COCO panoptic class: the contiguous id (0-132, detectron2's
       order, :func:`~semantic_sam.data.label_spaces.coco_panoptic_label_space`) of its
       ``category_id``; :data:`NO_OBJECT` for a category outside COCO panoptic.

    Returns a dict with ``image`` (3, H, W) uint8, ``height``/``width`` = the resized (H, W)
    (so the model's outputs and the IoUs live at the resized resolution, as in the
    reference), ``instances`` (``gt_masks`` BitMasks, ``gt_boxes``, ``gt_classes`` and
    ``gt_object_classes`` (M,) = the contiguous COCO panoptic class, as the labelled mapper
    writes them), ``vocabulary`` (``{"object": the 133 class names, "part": ()}``: index =
    ``gt_object_classes``; a model with a text encoder names the masks with it),
    ``segment_ids`` (M,), ``points`` (M, 2) float pixel (x, y), optionally ``boxes`` (M, 4)
    float xyxy pixels, and ``file_name``, ``image_id``, ``orig_height``, ``orig_width``,
    ``num_dropped_segments``. Images without segments give M = 0.
    """

    @configurable
    def __init__(
        self,
        *,
        augmentations: list[T.Augmentation],
        image_format: str = "RGB",
        click_method: str = "kornia",
        box_prompts: bool = False,
    ):
        if click_method not in CLICK_METHODS:
            raise ValueError(
                f"MODEL.DECODER.TEST.CLICK_METHOD: unknown {click_method!r}; expected one of {CLICK_METHODS}"
            )
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.click_method = click_method
        self.box_prompts = box_prompts
        self.vocabulary = {"object": coco_panoptic_label_space().object_classes, "part": ()}
        self._class_of_category = {c: i for i, c in enumerate(coco_panoptic_dataset_ids())}
        logger.info("CocoInteractiveDatasetMapper: %s, clicks=%s, boxes=%s", augmentations, click_method, box_prompts)

    @classmethod
    def from_config(cls, cfg) -> dict:
        return {
            "augmentations": build_transform_gen(cfg),
            "image_format": cfg.COCO.INPUT.FORMAT,
            "click_method": cfg.MODEL.DECODER.TEST.CLICK_METHOD,
            "box_prompts": cfg.MODEL.DECODER.TEST.BOX_INTERACTIVE,
        }

    def __call__(self, dataset_dict: dict) -> dict:
        from panopticapi.utils import rgb2id

        dataset_dict = copy.deepcopy(dataset_dict)
        image = utils.read_image(dataset_dict["file_name"], format=self.image_format)
        utils.check_image_size(dataset_dict, image)
        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        height, width = image.shape[:2]

        pan_rgb = utils.read_image(dataset_dict.pop("pan_seg_file_name"), format="RGB")
        if pan_rgb.shape[:2] != (dataset_dict["height"], dataset_dict["width"]):
            raise ValueError(
                f"{dataset_dict['file_name']}: panoptic PNG is {pan_rgb.shape[1]}x{pan_rgb.shape[0]}, "
                f"image is {dataset_dict['width']}x{dataset_dict['height']}"
            )
        pan_ids = rgb2id(transforms.apply_segmentation(pan_rgb))

        segments = [s for s in dataset_dict.pop("segments_info") if not s.get("iscrowd", 0)]
        masks = np.stack([pan_ids == s["id"] for s in segments]) if segments else np.zeros((0, height, width), bool)
        keep = masks.any(axis=(1, 2))
        segments = [s for s, k in zip(segments, keep) if k]
        masks = torch.from_numpy(masks[keep])

        instances = Instances((height, width))
        instances.gt_masks = BitMasks(masks)
        instances.gt_boxes = instances.gt_masks.get_bounding_boxes()
        classes = [self._class_of_category.get(s["category_id"], NO_OBJECT) for s in segments]
        instances.gt_classes = torch.tensor(classes, dtype=torch.int64)
        instances.gt_object_classes = instances.gt_classes.clone()

        dataset_dict["orig_height"], dataset_dict["orig_width"] = dataset_dict["height"], dataset_dict["width"]
        dataset_dict.update(
            image=torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1))),
            height=height,
            width=width,
            instances=instances,
            segment_ids=torch.tensor([s["id"] for s in segments], dtype=torch.int64),
            points=clicks_from_masks(masks, self.click_method).to(torch.float32),
            num_dropped_segments=int((~keep).sum()),
            vocabulary=self.vocabulary,
        )
        if self.box_prompts:
            dataset_dict["boxes"] = instances.gt_boxes.tensor.clone()
        return dataset_dict
