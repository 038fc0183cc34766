"""Evaluation: click simulation, 1-click (Max/Oracle) and multi-granularity evaluators (interactive);
whole-image segmentation through detectron2's PQ / AP / mIoU evaluators and part AP (generic)."""
from .build import build_evaluator
from .click_simulation import CLICK_METHODS, click_from_mask, clicks_from_masks
from .generic import (
    GenericEvaluationError,
    GenericEvaluator,
    GenericInference,
    PanopticSegmentsError,
    PartAPEvaluator,
    build_generic_evaluator,
    check_panoptic_segments,
    is_generic_dataset,
    summary_table,
)
from .interactive_evaluator import (
    EVAL_PRECISIONS,
    SKIPPED_RECORD,
    InteractiveEvaluator,
    PromptedInference,
    evaluation_dtype,
    mask_ious,
    skipped_record_input,
    summarize_ious,
    summarize_labels,
)
from .multi_granularity import MultiGranularityEvaluator, matched_iou, pairwise_mask_iou

__all__ = [
    "CLICK_METHODS",
    "EVAL_PRECISIONS",
    "SKIPPED_RECORD",
    "GenericEvaluationError",
    "GenericEvaluator",
    "GenericInference",
    "InteractiveEvaluator",
    "MultiGranularityEvaluator",
    "PanopticSegmentsError",
    "PartAPEvaluator",
    "PromptedInference",
    "build_evaluator",
    "build_generic_evaluator",
    "check_panoptic_segments",
    "click_from_mask",
    "clicks_from_masks",
    "evaluation_dtype",
    "is_generic_dataset",
    "mask_ious",
    "matched_iou",
    "pairwise_mask_iou",
    "skipped_record_input",
    "summarize_ious",
    "summarize_labels",
    "summary_table",
]
