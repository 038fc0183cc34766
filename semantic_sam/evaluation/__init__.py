"""Interactive evaluation: click simulation, 1-click (Max/Oracle) and multi-granularity evaluators."""
from .build import build_evaluator
from .click_simulation import CLICK_METHODS, click_from_mask, clicks_from_masks
from .interactive_evaluator import InteractiveEvaluator, PromptedInference, mask_ious, summarize_ious
from .multi_granularity import MultiGranularityEvaluator, matched_iou, pairwise_mask_iou

__all__ = [
    "CLICK_METHODS",
    "InteractiveEvaluator",
    "MultiGranularityEvaluator",
    "PromptedInference",
    "build_evaluator",
    "click_from_mask",
    "clicks_from_masks",
    "mask_ious",
    "matched_iou",
    "pairwise_mask_iou",
    "summarize_ious",
]
