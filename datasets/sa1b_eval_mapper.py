"""SA-1B evaluation mapper for the multi-granularity 1-IoU (one click per GT mask)."""
from __future__ import annotations

import logging
import zlib

import numpy as np
import torch
from detectron2.config import configurable

from semantic_sam.data.sa1b import CorruptRecordError
from semantic_sam.evaluation.click_simulation import CLICK_METHODS, clicks_from_masks
from semantic_sam.evaluation.interactive_evaluator import skipped_record_input

from .sa1b_dataset_mapper import SA1BDatasetMapper

__all__ = ["SA1BEvalMapper"]

logger = logging.getLogger(__name__)


class SA1BEvalMapper:
    """Map an SA-1B dataset dict to an evaluation input with clicks.

    1. :class:`SA1BDatasetMapper` in evaluation mode: ResizeShortestEdge(800, 1333), all masks
       as ``instances.gt_masks`` (empty ones dropped).
    2. Choose the clicked masks: all, or ``max_clicks_per_image`` of them drawn with a
       generator seeded by the image id (the same subset on every run).
    3. Click each chosen mask at the pixel farthest from its boundary (``click_method``).

    Adds ``points`` (P, 2) float pixel (x, y) and ``click_gt_index`` (P,) to the base mapper's
    dict and sets ``height``/``width`` to the resized size (the IoUs are computed there);
    the original size moves to ``orig_height``/``orig_width``.

    A corrupt record is never replaced by another image (which would then be scored twice):
    the mapper logs its location and returns
    :func:`~semantic_sam.evaluation.interactive_evaluator.skipped_record_input`, which the
    model does not see and the evaluators count in ``num_skipped_records``.
    """

    @configurable
    def __init__(self, *, base: SA1BDatasetMapper, click_method: str = "kornia", max_clicks_per_image: int = 0):
        if click_method not in CLICK_METHODS:
            raise ValueError(
                f"MODEL.DECODER.TEST.CLICK_METHOD: unknown {click_method!r}; expected one of {CLICK_METHODS}"
            )
        if max_clicks_per_image < 0:
            raise ValueError(f"TEST.MULTI_GRANULARITY.MAX_CLICKS_PER_IMAGE must be >= 0, got {max_clicks_per_image}")
        if base.replace_corrupt:
            raise ValueError("SA1BEvalMapper: the base mapper must not replace corrupt records (replace_corrupt=False)")
        self.base = base
        self.click_method = click_method
        self.max_clicks_per_image = int(max_clicks_per_image)

    @classmethod
    def from_config(cls, cfg, dataset_name: str | None = None) -> dict:
        return {
            "base": SA1BDatasetMapper(cfg, is_train=False, dataset_name=dataset_name),
            "click_method": cfg.MODEL.DECODER.TEST.CLICK_METHOD,
            "max_clicks_per_image": cfg.TEST.MULTI_GRANULARITY.MAX_CLICKS_PER_IMAGE,
        }

    def _chosen(self, num_masks: int, image_id, file_name: str) -> torch.Tensor:
        if not self.max_clicks_per_image or num_masks <= self.max_clicks_per_image:
            return torch.arange(num_masks)
        seed = image_id if isinstance(image_id, int) else zlib.crc32(str(file_name).encode())
        rng = np.random.default_rng(seed)
        return torch.from_numpy(np.sort(rng.choice(num_masks, self.max_clicks_per_image, replace=False)))

    def __call__(self, dataset_dict: dict) -> dict:
        try:
            out = self.base(dataset_dict)
        except CorruptRecordError as e:
            logger.warning("SA-1B evaluation: skipping corrupt record %s: %s", e.where, e.reason)
            return skipped_record_input(e.where, e.reason)
        masks = out["instances"].gt_masks.tensor
        chosen = self._chosen(len(masks), out.get("image_id"), out.get("file_name", ""))
        out["orig_height"], out["orig_width"] = out["height"], out["width"]
        out["height"], out["width"] = int(masks.shape[-2]), int(masks.shape[-1])
        out["click_gt_index"] = chosen
        out["points"] = clicks_from_masks(masks[chosen], self.click_method).to(torch.float32)
        return out
