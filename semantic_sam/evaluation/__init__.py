"""Evaluation: click simulation, 1-click (Max/Oracle) and multi-granularity evaluators (interactive:
``interactive_evaluator``, ``interactive_metrics``, ``prompted_inference``, ``multi_granularity``);
whole-image segmentation through detectron2's PQ / AP / mIoU evaluators and part AP (generic: ``generic``,
``generic_inference``, ``generic_evaluators``); ``summary``: one table of the headline numbers."""
from .build import build_evaluator
from .click_simulation import CLICK_METHODS, click_from_mask, clicks_from_masks
from .generic import GenericEvaluationError, PanopticSegmentsError, check_panoptic_segments, is_generic_dataset
from .generic_evaluators import GenericEvaluator, PartAPEvaluator, build_generic_evaluator
from .generic_inference import GenericInference
from .interactive_evaluator import SKIPPED_RECORD, InteractiveEvaluator, skipped_record_input
from .interactive_metrics import mask_ious, summarize_ious, summarize_labels
from .multi_granularity import MultiGranularityEvaluator, matched_iou, pairwise_mask_iou
from .prompted_inference import EVAL_PRECISIONS, PromptedInference, evaluation_dtype
from .summary import summary_table

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
