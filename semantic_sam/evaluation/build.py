"""Pick the evaluator of a registered dataset from its metadata (``evaluator_type``, or a part dataset's
``config_section``)."""
from __future__ import annotations

import os

from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator

from .generic import GENERIC_EVALUATOR_TYPES, is_generic_dataset
from .generic_evaluators import build_generic_evaluator
from .interactive_evaluator import InteractiveEvaluator
from .multi_granularity import MultiGranularityEvaluator

__all__ = [
    "GENERIC_EVALUATOR_TYPES",
    "INTERACTIVE_EVALUATOR_TYPES",
    "MULTI_GRANULARITY_EVALUATOR_TYPES",
    "build_evaluator",
]

# The reference's evaluator types for COCO panoptic interactive and SA-1B validation data.
INTERACTIVE_EVALUATOR_TYPES = ("coco_panoptic_seg_interactive_jointboxpoint", "coco_panoptic_seg_interactive")
MULTI_GRANULARITY_EVALUATOR_TYPES = ("sam_interactive",)


def build_evaluator(
    cfg, dataset_name: str, output_dir: str | None = None, weights: str | None = None
) -> DatasetEvaluator:
    """The evaluator for ``dataset_name`` (registered, with ``evaluator_type`` in its metadata, or a part
    dataset): :class:`InteractiveEvaluator` (COCO interactive), :class:`MultiGranularityEvaluator` (SA-1B),
    or detectron2's PQ / AP / mIoU evaluators and the part-AP evaluator
    (:func:`~semantic_sam.evaluation.generic_evaluators.build_generic_evaluator`) for COCO panoptic generic
    and part datasets.

    Args:
        cfg: the config (``TEST.INTERACTIVE`` options; ``COCO.TEST.DETECTIONS_PER_IMAGE`` for AP).
        dataset_name: a registered dataset name.
        output_dir: where the JSON results go; default ``cfg.OUTPUT_DIR/inference/<dataset_name>``.
        weights: the checkpoint being evaluated, recorded in the JSON results (``--eval_only``).

    Raises:
        ValueError: the dataset has no evaluator type this project knows.
    """
    if output_dir is None:
        output_dir = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
    evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
    if evaluator_type in INTERACTIVE_EVALUATOR_TYPES:
        opts = cfg.TEST.INTERACTIVE
        return InteractiveEvaluator(
            dataset_name,
            output_dir,
            max_clicks=opts.MAX_CLICKS,
            noc_thresholds=opts.NOC_THRESHOLDS,
            save_per_segment=opts.SAVE_PER_SEGMENT,
            weights=weights,
        )
    if evaluator_type in MULTI_GRANULARITY_EVALUATOR_TYPES:
        return MultiGranularityEvaluator(dataset_name, output_dir, weights=weights)
    if is_generic_dataset(dataset_name):
        return build_generic_evaluator(
            dataset_name, output_dir, weights, max_dets_per_image=cfg.COCO.TEST.DETECTIONS_PER_IMAGE
        )
    known = ", ".join(INTERACTIVE_EVALUATOR_TYPES + MULTI_GRANULARITY_EVALUATOR_TYPES + GENERIC_EVALUATOR_TYPES)
    raise ValueError(
        f"no evaluator for dataset {dataset_name!r} (evaluator_type {evaluator_type!r}); known types: {known}, "
        "or a part dataset. Is the dataset registered (datasets.builtin.register_datasets(cfg))?"
    )
