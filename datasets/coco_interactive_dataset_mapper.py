"""Dataset mapper for one-click interactive evaluation on COCO panoptic (and on labelled sets in its layout
or in the part sets' layout, such as the built-in model's val scenes)."""
from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BitMasks, Instances

from semantic_sam.data.label_spaces import NO_PART, coco_panoptic_dataset_ids, coco_panoptic_label_space
from semantic_sam.evaluation.click_simulation import CLICK_METHODS, clicks_from_masks

from .labelled_dataset_mapper import _decode

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

    **Labelled datasets** (``from_config(cfg, dataset_name)`` of a dataset whose metadata holds a label
    space, e.g. ``builtin_panoptic_val_interactive``, ``builtin_parts_val_interactive``): the vocabulary is
    the label space's (``{"object": object_classes, "part": part_classes}``) and the dicts are labelled
    ones (:mod:`datasets.register_builtin_labelled`): each segment (panoptic PNG) or annotation (polygons
    or RLE, one mask each, as the part sets' ``annotations``; ``segment_ids`` are then the annotation ids)
    carries its contiguous ``category_id``, ``object_id`` and ``part_id``, which become ``gt_classes``,
    ``gt_object_classes`` and ``gt_part_classes`` (``NO_PART`` = -1: no part label); an annotation without
    an id gets segment id -1.
    """

    @configurable
    def __init__(
        self,
        *,
        augmentations: list[T.Augmentation],
        image_format: str = "RGB",
        click_method: str = "kornia",
        box_prompts: bool = False,
        vocabulary: Mapping[str, Sequence[str]] | None = None,
    ):
        """``vocabulary``: ``{"object": names, "part": names}`` of a labelled dataset (its dicts carry
        ``object_id`` / ``part_id``); None: COCO panoptic's 133 names, labels from the COCO category ids."""
        if click_method not in CLICK_METHODS:
            raise ValueError(
                f"MODEL.DECODER.TEST.CLICK_METHOD: unknown {click_method!r}; expected one of {CLICK_METHODS}"
            )
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.click_method = click_method
        self.box_prompts = box_prompts
        self.labelled = vocabulary is not None
        if vocabulary is None:
            self.vocabulary = {"object": coco_panoptic_label_space().object_classes, "part": ()}
        else:
            self.vocabulary = {"object": tuple(vocabulary["object"]), "part": tuple(vocabulary.get("part") or ())}
        self._class_of_category = {c: i for i, c in enumerate(coco_panoptic_dataset_ids())}
        logger.info("CocoInteractiveDatasetMapper: %s, clicks=%s, boxes=%s", augmentations, click_method, box_prompts)

    @classmethod
    def from_config(cls, cfg, dataset_name: str | None = None) -> dict:
        """Options from ``cfg``; ``dataset_name``: a labelled dataset's metadata gives the vocabulary."""
        vocabulary = None
        if dataset_name is not None:
            meta = MetadataCatalog.get(dataset_name)
            if meta.get("object_classes", None) is not None:
                vocabulary = {"object": meta.object_classes, "part": meta.get("part_classes", None) or ()}
        return {
            "augmentations": build_transform_gen(cfg),
            "image_format": cfg.COCO.INPUT.FORMAT,
            "click_method": cfg.MODEL.DECODER.TEST.CLICK_METHOD,
            "box_prompts": cfg.MODEL.DECODER.TEST.BOX_INTERACTIVE,
            "vocabulary": vocabulary,
        }

    def __call__(self, dataset_dict: dict) -> dict:
        dataset_dict = copy.deepcopy(dataset_dict)
        image = utils.read_image(dataset_dict["file_name"], format=self.image_format)
        utils.check_image_size(dataset_dict, image)
        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        height, width = image.shape[:2]

        if "pan_seg_file_name" in dataset_dict:
            masks, segments = self._panoptic_masks(dataset_dict, transforms, height, width)
        else:
            masks, segments = self._annotation_masks(dataset_dict, transforms, height, width)
        keep = masks.any(axis=(1, 2))
        segments = [s for s, k in zip(segments, keep) if k]
        masks = torch.from_numpy(masks[keep])

        instances = Instances((height, width))
        instances.gt_masks = BitMasks(masks)
        instances.gt_boxes = instances.gt_masks.get_bounding_boxes()
        if self.labelled:
            labels = [(s["category_id"], s["object_id"], s.get("part_id", NO_PART)) for s in segments]
            columns = torch.tensor(labels, dtype=torch.int64).reshape(-1, 3)
            instances.gt_classes = columns[:, 0].clone()
            instances.gt_object_classes = columns[:, 1].clone()
            instances.gt_part_classes = columns[:, 2].clone()
        else:
            classes = [self._class_of_category.get(s["category_id"], NO_OBJECT) for s in segments]
            instances.gt_classes = torch.tensor(classes, dtype=torch.int64)
            instances.gt_object_classes = instances.gt_classes.clone()

        dataset_dict["orig_height"], dataset_dict["orig_width"] = dataset_dict["height"], dataset_dict["width"]
        dataset_dict.update(
            image=torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1))),
            height=height,
            width=width,
            instances=instances,
            segment_ids=torch.tensor([-1 if s.get("id") is None else s["id"] for s in segments], dtype=torch.int64),
            points=clicks_from_masks(masks, self.click_method).to(torch.float32),
            num_dropped_segments=int((~keep).sum()),
            vocabulary=self.vocabulary,
        )
        if self.box_prompts:
            dataset_dict["boxes"] = instances.gt_boxes.tensor.clone()
        return dataset_dict

    def _panoptic_masks(self, d: dict, transforms, height: int, width: int) -> tuple[np.ndarray, list[dict]]:
        """(M, H, W) bool masks of the non-crowd segments of the panoptic PNG (popped from ``d`` with
        ``segments_info``), resized, and the segments."""
        from panopticapi.utils import rgb2id

        pan_rgb = utils.read_image(d.pop("pan_seg_file_name"), format="RGB")
        if pan_rgb.shape[:2] != (d["height"], d["width"]):
            raise ValueError(
                f"{d['file_name']}: panoptic PNG is {pan_rgb.shape[1]}x{pan_rgb.shape[0]}, "
                f"image is {d['width']}x{d['height']}"
            )
        pan_ids = rgb2id(transforms.apply_segmentation(pan_rgb))
        segments = [s for s in d.pop("segments_info") if not s.get("iscrowd", 0)]
        masks = np.stack([pan_ids == s["id"] for s in segments]) if segments else np.zeros((0, height, width), bool)
        return masks, segments

    def _annotation_masks(self, d: dict, transforms, height: int, width: int) -> tuple[np.ndarray, list[dict]]:
        """(M, H, W) bool masks of the non-crowd ``annotations`` (popped from ``d``), resized, and the
        annotations. Each mask is decoded at the dict's size, then resized with the image (nearest)."""
        anns = [a for a in d.pop("annotations", []) if not a.get("iscrowd", 0)]
        masks = []
        for ann in anns:
            segm = ann["segmentation"]
            if isinstance(segm, dict) and list(segm.get("size", ())) != [d["height"], d["width"]]:
                raise ValueError(
                    f"{d['file_name']}: annotation {ann.get('id')} has an RLE of size {segm.get('size')}, "
                    f"the image is {d['height']}x{d['width']}"
                )
            mask = _decode(segm, d["height"], d["width"])
            masks.append(transforms.apply_segmentation(mask).astype(bool, copy=False))
        return (np.stack(masks) if masks else np.zeros((0, height, width), bool)), anns
