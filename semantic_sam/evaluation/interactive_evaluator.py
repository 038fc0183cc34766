"""One-click interactive segmentation metrics (COCO zero-shot evaluation).

Every GT segment of an image is prompted once (a click, and optionally its box); the model
returns L outputs per prompt with predicted IoUs. Per segment:

* **Max**: the output with the highest predicted IoU (first maximum);
* **Oracle**: the output with the highest true IoU against the GT.

The metrics pool all segments of all images (an instance-level mean, as the reference):
``1-IoU@Max`` and ``1-IoU@Oracle`` (mean IoU, in percent), ``noc@t@Max|Oracle`` (the
reference's NoC, degenerate with one click: 1 if IoU >= t else ``max_clicks``),
``mIoU_token_k`` (mean IoU of output k) and ``token_pick_k`` (percent of segments whose Max
output is k). Output k is the model's token k (0..K-1) when all K tokens are returned (the
default); user granularity levels map to tokens as in :mod:`semantic_sam.predictor.levels`.
Box prompts, if present, get the same metrics under ``"box"``.

When the model names its outputs (a text encoder: the outputs have ``pred_logits``), each
output's object label is the argmax of its logits, and ``label_acc@Max`` / ``label_acc@Oracle``
are the percent of labelled segments (GT object class >= 0) whose Max / Oracle output has the
GT's object label (``num_labelled_segments`` of them). Ties resolve to the first maximum, for
the pick, the Oracle and the label alike. Without logits these keys are absent. Part labels are
scored the same way when the outputs have ``pred_logits_part`` (a vocabulary with parts) and the
inputs carry ``instances.gt_part_classes`` (a part dataset): ``part_label_acc@Max`` /
``part_label_acc@Oracle`` over the ``num_part_labelled_segments`` segments with a part label (>= 0).

Per class: when the inputs carry their ``"vocabulary"`` (``{"object": names, "part": names}``, which
the GT classes index), each accuracy is also given per GT class, under ``<metric>/<name>`` keys
(``label_acc@Max/house``, ``label_acc@Oracle/house``, ``num_labelled_segments/house``;
``part_label_acc@Max/wheel``, ...; only the classes that have segments), and logged as a table.

A mapper that cannot read a record returns :func:`skipped_record_input` in its place rather
than another image: the model never sees it, and the evaluators count it in
``num_skipped_records`` (it is not in ``num_images``) and log where it is.

This module holds :class:`InteractiveEvaluator`, the mapped inputs' GT readers and the skipped records;
the metrics themselves and their tables are :mod:`.interactive_metrics`, the model wrapper
(:class:`~.prompted_inference.PromptedInference`, ``TEST.PRECISION``) :mod:`.prompted_inference`.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
from collections import OrderedDict
from typing import Sequence

import numpy as np
import torch
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager

from .interactive_metrics import (
    format_per_class_table,
    format_results_table,
    mask_ious,
    per_class_accuracy,
    summarize_ious,
    summarize_labels,
)

__all__ = [
    "SKIPPED_RECORD",
    "InteractiveEvaluator",
    "gt_masks_of",
    "gt_object_classes_of",
    "gt_part_classes_of",
    "log_skipped_records",
    "skipped_record_input",
    "with_weights",
]

logger = logging.getLogger(__name__)

# Key of the mapped input that stands for a record the mapper could not read.
SKIPPED_RECORD = "skipped_record"


def skipped_record_input(where: str, reason: str) -> dict:
    """The mapped input that stands for an unreadable record: ``{SKIPPED_RECORD: {"where",
    "reason"}}``, no image and no prompts. :class:`~.prompted_inference.PromptedInference` gives it an empty output;
    the evaluators count it in ``num_skipped_records`` and log ``where``."""
    return {SKIPPED_RECORD: {"where": str(where), "reason": str(reason)}}


def log_skipped_records(dataset_name: str | None, skipped: list[dict]) -> None:
    """Log, on the process that reports, every record the evaluation skipped and why."""
    if skipped:
        lines = "".join(f"\n  {s['where']}: {s['reason']}" for s in skipped)
        logger.warning("Evaluation of %s skipped %d unreadable record(s):%s", dataset_name, len(skipped), lines)


def gt_masks_of(inp: dict) -> torch.Tensor:
    """The (M, H, W) bool GT masks of a mapped input (``instances.gt_masks``)."""
    if "instances" not in inp:
        raise KeyError(f"input {inp.get('file_name', '')!r} has no 'instances' with the GT masks")
    masks = inp["instances"].gt_masks
    masks = getattr(masks, "tensor", masks)
    return torch.as_tensor(masks).bool()


def gt_object_classes_of(inp: dict) -> torch.Tensor:
    """The (M,) int64 GT object classes of a mapped input (``instances.gt_object_classes``)."""
    inst = inp.get("instances")
    if inst is None or not inst.has("gt_object_classes"):
        raise KeyError(
            f"image {inp.get('image_id')!r}: the outputs have object logits but the input has no "
            "instances.gt_object_classes (the evaluation mapper writes them)"
        )
    return torch.as_tensor(inst.gt_object_classes, dtype=torch.int64)


def gt_part_classes_of(inp: dict) -> torch.Tensor | None:
    """The (M,) int64 GT part classes of a mapped input (``instances.gt_part_classes``; -1 = no part
    label), or None when the input has none (object-level data)."""
    inst = inp.get("instances")
    if inst is None or not inst.has("gt_part_classes"):
        return None
    return torch.as_tensor(inst.gt_part_classes, dtype=torch.int64)


def _vocabulary_of(inp: dict) -> dict[str, tuple[str, ...]] | None:
    vocabulary = inp.get("vocabulary")
    if vocabulary is None:
        return None
    return {"object": tuple(vocabulary["object"]), "part": tuple(vocabulary.get("part") or ())}


# (acc_key, count_key, segment field of the labels, segment field of the GT class, vocabulary key)
_LABEL_KINDS = (
    ("label_acc", "num_labelled_segments", "object_labels", "gt_object_class", "object"),
    ("part_label_acc", "num_part_labelled_segments", "part_labels", "gt_part_class", "part"),
)


def _labels_and_gt(inp: dict, out: dict, key: str, gt_classes: torch.Tensor, num: int, what: str):
    """``(labels (P + B, L) argmax of out[key] (first maximum), GT classes as a list)``, checked against the
    prompts' outputs (``pred_ious``) and the ``num`` GT segments."""
    gt = gt_classes.tolist()
    if len(gt) != num or out[key].shape[:2] != out["pred_ious"].shape:
        raise ValueError(
            f"image {inp.get('image_id')!r}: {key} {tuple(out[key].shape)} and {len(gt)} GT {what} classes do not "
            f"match pred_ious {tuple(out['pred_ious'].shape)} and {num} GT segments"
        )
    return out[key].argmax(dim=-1).cpu(), gt


class InteractiveEvaluator(DatasetEvaluator):
    """1-click interactive metrics (Max, Oracle, per-output) for points and, if given, boxes.

    ``process`` reads from each input ``instances.gt_masks`` (M, H, W), ``points`` (M, 2)
    (click i belongs to segment i) and optionally ``boxes`` (M, 4); from each output
    ``pred_masks`` (P + B, L, H, W) logits (thresholded at 0) and ``pred_ious`` (P + B, L),
    points first, as ``SemanticSAM.inference`` returns them. Predictions must be at the GT
    resolution (the mapper sets ``height``/``width`` to the resized image). Outputs with
    ``pred_logits`` (P + B, L, C_o) (a model with a text encoder) are also scored for object
    labels against the input's ``instances.gt_object_classes`` (M,), outputs with ``pred_logits_part``
    (P + B, L, C_p) for part labels against ``instances.gt_part_classes`` (M,) when the input has them,
    and per class when the inputs carry their ``"vocabulary"`` (see the module docstring).

    ``evaluate`` gathers the per-segment IoUs of every process (``comm.gather``) and returns,
    on the main process, ``OrderedDict(interactive={...}, box={...})`` (``box`` only when box
    prompts were evaluated), logs a table and writes ``interactive_results.json`` (and
    ``interactive_per_segment.json``) to ``output_dir``, with ``"weights"`` (the evaluated
    checkpoint) when given. Other processes return ``{}``.
    Inputs from :func:`skipped_record_input` are counted in ``interactive.num_skipped_records``
    and logged, not scored.
    """

    def __init__(
        self,
        dataset_name: str | None = None,
        output_dir: str | None = None,
        *,
        max_clicks: int = 20,
        noc_thresholds: Sequence[float] = (0.5, 0.8, 0.85, 0.9),
        save_per_segment: bool = True,
        distributed: bool = True,
        weights: str | None = None,
    ):
        self.dataset_name = dataset_name
        self.output_dir = output_dir
        self.weights = weights
        self.max_clicks = int(max_clicks)
        self.noc_thresholds = tuple(float(t) for t in noc_thresholds)
        self.save_per_segment = save_per_segment
        self.distributed = distributed
        self.reset()

    def reset(self) -> None:
        self._segments: list[dict] = []
        self._images: list[dict] = []  # one entry per input; a skipped record's is {SKIPPED_RECORD: ...}
        self._vocabulary: dict | None = None  # the last vocabulary recorded in an image entry

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for inp, out in zip(inputs, outputs):
            if SKIPPED_RECORD in inp:
                self._images.append({SKIPPED_RECORD: inp[SKIPPED_RECORD]})
                continue
            gt = gt_masks_of(inp)
            num = gt.shape[0]
            entry = {
                "image_id": inp.get("image_id"),
                "num_segments": num,
                "num_dropped_segments": int(inp.get("num_dropped_segments", 0)),
            }
            vocabulary = _vocabulary_of(inp)
            if vocabulary is not None and vocabulary != self._vocabulary:  # recorded when it changes
                entry["vocabulary"] = self._vocabulary = vocabulary
            self._images.append(entry)
            if num == 0:
                continue
            kinds = [("point", inp.get("points"))] + ([("box", inp["boxes"])] if inp.get("boxes") is not None else [])
            for kind, prompts in kinds:
                if prompts is None:
                    raise KeyError(f"image {inp.get('image_id')!r}: {num} GT segments but no 'points' prompts")
                if len(prompts) != num:
                    raise ValueError(
                        f"image {inp.get('image_id')!r}: {len(prompts)} {kind} prompts for {num} GT segments; "
                        "the mapper gives one prompt per segment"
                    )
            expected = num * len(kinds)
            if "pred_masks" not in out or out["pred_masks"].shape[0] != expected:
                got = tuple(out["pred_masks"].shape) if "pred_masks" in out else "no pred_masks"
                raise ValueError(f"image {inp.get('image_id')!r}: expected {expected} prompt outputs, got {got}")
            gt = gt.to(out["pred_masks"].device)
            segment_ids = inp.get("segment_ids", torch.arange(num)).tolist()
            labels = gt_classes = part_labels = gt_parts = None
            if "pred_logits" in out:
                labels, gt_classes = _labels_and_gt(inp, out, "pred_logits", gt_object_classes_of(inp), num, "object")
            gt_part_classes = gt_part_classes_of(inp) if "pred_logits_part" in out else None
            if gt_part_classes is not None:
                part_labels, gt_parts = _labels_and_gt(inp, out, "pred_logits_part", gt_part_classes, num, "part")
            for j, (kind, prompts) in enumerate(kinds):
                for i in range(num):
                    row = j * num + i
                    ious = mask_ious(out["pred_masks"][row] > 0, gt[i]).cpu().numpy()
                    pick = int(torch.argmax(out["pred_ious"][row]))
                    segment = {
                        "kind": kind,
                        "image_id": inp.get("image_id"),
                        "segment_id": int(segment_ids[i]),
                        "prompt": [float(v) for v in prompts[i].tolist()],
                        "ious": ious,
                        "pick": pick,
                    }
                    if labels is not None:
                        segment["object_labels"] = labels[row].tolist()
                        segment["gt_object_class"] = int(gt_classes[i])
                    if part_labels is not None:
                        segment["part_labels"] = part_labels[row].tolist()
                        segment["gt_part_class"] = int(gt_parts[i])
                    self._segments.append(segment)

    def _gathered(self) -> tuple[list[dict], list[dict]] | None:
        if not self.distributed or comm.get_world_size() == 1:
            return self._segments, self._images
        comm.synchronize()
        segments = comm.gather(self._segments, dst=0)
        images = comm.gather(self._images, dst=0)
        if not comm.is_main_process():
            return None
        return list(itertools.chain(*segments)), list(itertools.chain(*images))

    def evaluate(self) -> "OrderedDict[str, dict]":
        gathered = self._gathered()
        if gathered is None:
            return OrderedDict()
        segments, entries = gathered
        images = [im for im in entries if SKIPPED_RECORD not in im]
        skipped = [im[SKIPPED_RECORD] for im in entries if SKIPPED_RECORD in im]
        results: OrderedDict[str, dict] = OrderedDict()
        scored: list[tuple] = []  # (results key, label kind, labels, GT classes, ious, picks) for the per-class tables
        for kind, key in (("point", "interactive"), ("box", "box")):
            segs = [s for s in segments if s["kind"] == kind]
            if kind == "box" and not segs:
                continue
            ious = np.stack([s["ious"] for s in segs]) if segs else np.zeros((0, 0))
            picks = np.array([s["pick"] for s in segs], dtype=np.int64)
            results[key] = summarize_ious(ious, picks, self.max_clicks, self.noc_thresholds)
            for label_kind in _LABEL_KINDS:
                acc_key, count_key, field, gt_field, what = label_kind
                labelled = sum(field in s for s in segs)
                if labelled and labelled != len(segs):
                    raise ValueError(
                        f"{self.dataset_name}: {labelled} of {len(segs)} {kind} segments have {what} labels; "
                        "a model names all its outputs or none"
                    )
                if labelled:
                    labels = np.array([s[field] for s in segs], dtype=np.int64)
                    gt_classes = np.array([s[gt_field] for s in segs], dtype=np.int64)
                    results[key].update(
                        summarize_labels(labels, gt_classes, ious, picks, acc_key=acc_key, count_key=count_key)
                    )
                    scored.append((key, label_kind, labels, gt_classes, ious, picks))
        info = results["interactive"]
        info["num_images"] = len(images)
        info["num_images_without_segments"] = sum(1 for im in images if im["num_segments"] == 0)
        info["num_dropped_segments"] = sum(im["num_dropped_segments"] for im in images)
        info["num_skipped_records"] = len(skipped)
        log_skipped_records(self.dataset_name, skipped)
        if info["num_segments"] == 0:
            logger.warning("Interactive evaluation of %s: no GT segment in %d images", self.dataset_name, len(images))
        logger.info("Interactive evaluation of %s:\n%s", self.dataset_name, format_results_table(results))
        self._add_per_class(results, scored, images)
        self._write(results, segments)
        return results

    def _add_per_class(self, results: dict, scored: list[tuple], images: list[dict]) -> None:
        """Put the per-class accuracies into ``results`` and log them as tables, when the inputs named one
        vocabulary."""
        if not scored:
            return
        vocabularies = []
        for im in images:
            if "vocabulary" in im and im["vocabulary"] not in vocabularies:
                vocabularies.append(im["vocabulary"])
        if len(vocabularies) != 1:
            if vocabularies:
                logger.warning(
                    "Interactive evaluation of %s: the inputs name %d vocabularies; no per-class accuracy",
                    self.dataset_name, len(vocabularies),
                )
            return
        vocabulary = vocabularies[0]
        for key, (acc_key, count_key, _, _, what), labels, gt_classes, ious, picks in scored:
            per_class = per_class_accuracy(
                labels, gt_classes, ious, picks, vocabulary[what], acc_key=acc_key, count_key=count_key
            )
            results[key].update(per_class)
            if per_class:
                logger.info(
                    "Per-class %s of %s (%s prompts):\n%s", acc_key, self.dataset_name, key,
                    format_per_class_table(per_class, acc_key, count_key),
                )

    def _write(self, results: dict, segments: list[dict]) -> None:
        if not self.output_dir:
            return
        PathManager.mkdirs(self.output_dir)
        with PathManager.open(os.path.join(self.output_dir, "interactive_results.json"), "w") as f:
            json.dump(with_weights(results, self.weights), f, indent=2)
        if self.save_per_segment:
            records = [dict(s, ious=[float(v) for v in s["ious"]]) for s in segments]
            with PathManager.open(os.path.join(self.output_dir, "interactive_per_segment.json"), "w") as f:
                json.dump(records, f)


def with_weights(results: dict, weights: str | None) -> dict:
    """The results as written to JSON: with ``"weights"``, the evaluated checkpoint, when known."""
    return dict(results, weights=weights) if weights else dict(results)
