"""Interactive evaluation: click simulation, 1-click (Max/Oracle) and multi-granularity evaluators."""
from .build import build_evaluator
from .click_simulation import CLICK_METHODS, click_from_mask, clicks_from_masks
from .interactive_evaluator import (
    SKIPPED_RECORD,
    InteractiveEvaluator,
    PromptedInference,
    mask_ious,
    skipped_record_input,
    summarize_ious,
)
from .multi_granularity import MultiGranularityEvaluator, matched_iou, pairwise_mask_iou

__all__ = [
    "CLICK_METHODS",
    "SKIPPED_RECORD",
    "InteractiveEvaluator",
    "MultiGranularityEvaluator",
    "PromptedInference",
    "build_evaluator",
    "click_from_mask",
    "clicks_from_masks",
    "mask_ious",
    "matched_iou",
    "pairwise_mask_iou",
    "skipped_record_input",
    "summarize_ious",
]
