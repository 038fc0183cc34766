"""Interactive evaluation: click simulation, 1-click (Max/Oracle) and multi-granularity evaluators."""
from .build import build_evaluator
from .click_simulation import CLICK_METHODS, click_from_mask, clicks_from_masks
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
    "InteractiveEvaluator",
    "MultiGranularityEvaluator",
    "PromptedInference",
    "build_evaluator",
    "click_from_mask",
    "clicks_from_masks",
    "evaluation_dtype",
    "mask_ious",
    "matched_iou",
    "pairwise_mask_iou",
    "skipped_record_input",
    "summarize_ious",
    "summarize_labels",
]
