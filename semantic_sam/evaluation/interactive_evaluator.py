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
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import time
from collections import OrderedDict
from typing import Sequence

import numpy as np
import torch
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager
from tabulate import tabulate
from torch import nn

from ..utils.precision import inference_autocast

__all__ = [
    "EVAL_PRECISIONS",
    "SKIPPED_RECORD",
    "InteractiveEvaluator",
    "format_per_class_table",
    "format_results_table",
    "PromptedInference",
    "evaluation_dtype",
    "gt_masks_of",
    "gt_object_classes_of",
    "gt_part_classes_of",
    "log_skipped_records",
    "mask_ious",
    "per_class_accuracy",
    "skipped_record_input",
    "summarize_ious",
    "summarize_labels",
]

logger = logging.getLogger(__name__)

# Key of the mapped input that stands for a record the mapper could not read.
SKIPPED_RECORD = "skipped_record"

# Numerics of the model during evaluation (TEST.PRECISION): "auto" = float16 autocast on CUDA, as
# the reference evaluates, and float32 elsewhere; "fp32"; "fp16" = float16 autocast on any device.
EVAL_PRECISIONS = ("auto", "fp32", "fp16")


def evaluation_dtype(precision: str, device: torch.device | str) -> torch.dtype:
    """The autocast dtype of ``precision`` (one of :data:`EVAL_PRECISIONS`) on ``device``:
    float32 means no autocast."""
    if precision not in EVAL_PRECISIONS:
        raise ValueError(f"unknown evaluation precision {precision!r}; expected one of {EVAL_PRECISIONS}")
    if precision == "auto":
        return torch.float16 if torch.device(device).type == "cuda" else torch.float32
    return torch.float16 if precision == "fp16" else torch.float32


def skipped_record_input(where: str, reason: str) -> dict:
    """The mapped input that stands for an unreadable record: ``{SKIPPED_RECORD: {"where",
    "reason"}}``, no image and no prompts. :class:`PromptedInference` gives it an empty output;
    the evaluators count it in ``num_skipped_records`` and log ``where``."""
    return {SKIPPED_RECORD: {"where": str(where), "reason": str(reason)}}


def log_skipped_records(dataset_name: str | None, skipped: list[dict]) -> None:
    """Log, on the process that reports, every record the evaluation skipped and why."""
    if skipped:
        lines = "".join(f"\n  {s['where']}: {s['reason']}" for s in skipped)
        logger.warning("Evaluation of %s skipped %d unreadable record(s):%s", dataset_name, len(skipped), lines)


def mask_ious(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """IoU of binary masks against one GT mask: intersection / union over all pixels.

    Args:
        pred: (..., H, W) bool predictions.
        gt: (H, W) bool ground truth.

    Returns:
        (...) float64 IoUs; 1.0 where prediction and GT are both empty (the reference gives NaN).
    """
    if pred.shape[-2:] != gt.shape[-2:]:
        raise ValueError(f"prediction masks are {tuple(pred.shape[-2:])}, GT mask is {tuple(gt.shape)}")
    inter = (pred & gt).flatten(-2).sum(-1).double()
    union = (pred | gt).flatten(-2).sum(-1).double()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def gt_masks_of(inp: dict) -> torch.Tensor:
    """The (M, H, W) bool GT masks of a mapped input (``instances.gt_masks``)."""
    if "instances" not in inp:
        raise KeyError(f"input {inp.get('file_name', '')!r} has no 'instances' with the GT masks")
    masks = inp["instances"].gt_masks
    masks = getattr(masks, "tensor", masks)
    return torch.as_tensor(masks).bool()


def summarize_ious(
    ious: np.ndarray, picks: np.ndarray, max_clicks: int = 20, noc_thresholds: Sequence[float] = (0.5, 0.8, 0.85, 0.9)
) -> "OrderedDict[str, float]":
    """Pool per-segment IoUs into the metrics of this module.

    Args:
        ious: (S, L) IoU of each of the L outputs (tokens) for S segments.
        picks: (S,) index of the output with the highest predicted IoU.
        max_clicks: NoC value of a segment that does not reach the threshold.
        noc_thresholds: IoU thresholds of the NoC metrics.

    Returns:
        ``num_segments``, ``1-IoU@Max``, ``1-IoU@Oracle`` (percent), ``noc@t@Max``,
        ``noc@t@Oracle``, ``mIoU_token_k`` (percent) and ``token_pick_k`` (percent of segments).
    """
    ious = np.asarray(ious, dtype=np.float64)
    picks = np.asarray(picks, dtype=np.int64)
    if ious.ndim != 2 or picks.shape != (ious.shape[0],):
        raise ValueError(f"ious must be (S, L) and picks (S,), got {ious.shape} and {picks.shape}")
    res: OrderedDict[str, float] = OrderedDict()
    n, num_outputs = ious.shape
    res["num_segments"] = n
    if n == 0:
        return res
    chosen = {"Max": ious[np.arange(n), picks], "Oracle": ious.max(axis=1)}
    for name, v in chosen.items():
        res[f"1-IoU@{name}"] = 100.0 * float(v.mean())
    for name, v in chosen.items():
        for t in noc_thresholds:
            res[f"noc@{t:g}@{name}"] = float(np.where(v >= t, 1, max_clicks).mean())
    for k in range(num_outputs):
        res[f"mIoU_token_{k}"] = 100.0 * float(ious[:, k].mean())
    for k in range(num_outputs):
        res[f"token_pick_{k}"] = 100.0 * float((picks == k).mean())
    return res


def _label_hits(
    labels: np.ndarray, gt_classes: np.ndarray, ious: np.ndarray, picks: np.ndarray
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``(scored, {"Max": hits, "Oracle": hits})``: the (S,) mask of labelled segments (GT class >= 0) and,
    for those, whether the Max / Oracle output's label is the GT's (checks the shapes)."""
    labels = np.asarray(labels, dtype=np.int64)
    gt_classes = np.asarray(gt_classes, dtype=np.int64)
    ious = np.asarray(ious, dtype=np.float64)
    picks = np.asarray(picks, dtype=np.int64)
    n = labels.shape[0]
    if labels.ndim != 2 or ious.shape != labels.shape or gt_classes.shape != (n,) or picks.shape != (n,):
        raise ValueError(
            f"labels and ious must be (S, L), gt_classes and picks (S,); got {labels.shape}, {ious.shape}, "
            f"{gt_classes.shape} and {picks.shape}"
        )
    scored = gt_classes >= 0
    rows = np.arange(n)[scored]
    chosen = {"Max": picks[scored], "Oracle": ious[scored].argmax(axis=1) if n else picks[scored]}
    return scored, {name: labels[rows, index] == gt_classes[scored] for name, index in chosen.items()}


def summarize_labels(
    labels: np.ndarray,
    gt_classes: np.ndarray,
    ious: np.ndarray,
    picks: np.ndarray,
    *,
    acc_key: str = "label_acc",
    count_key: str = "num_labelled_segments",
) -> "OrderedDict[str, float]":
    """Top-1 label accuracy of the Max and Oracle outputs (object labels; part labels with the part keys).

    Args:
        labels: (S, L) label (argmax of the logits) of each of the L outputs of S segments.
        gt_classes: (S,) GT class of each segment; negative = unlabelled (not scored).
        ious: (S, L) IoU of each output with the GT; the Oracle output is its first maximum.
        picks: (S,) index of the output with the highest predicted IoU (the Max output).
        acc_key, count_key: the names of the metrics (``part_label_acc``, ``num_part_labelled_segments``
            for part labels).

    Returns:
        ``num_labelled_segments`` and, when it is not 0, ``label_acc@Max`` and
        ``label_acc@Oracle`` (percent of the labelled segments).
    """
    scored, hits = _label_hits(labels, gt_classes, ious, picks)
    res: OrderedDict[str, float] = OrderedDict()
    res[count_key] = int(scored.sum())
    if not scored.any():
        return res
    for name, hit in hits.items():
        res[f"{acc_key}@{name}"] = 100.0 * float(hit.mean())
    return res


def per_class_accuracy(
    labels: np.ndarray,
    gt_classes: np.ndarray,
    ious: np.ndarray,
    picks: np.ndarray,
    class_names: Sequence[str],
    *,
    acc_key: str = "label_acc",
    count_key: str = "num_labelled_segments",
) -> OrderedDict[str, float]:
    """:func:`summarize_labels` of each GT class, under ``<key>/<class name>`` keys.

    Args:
        labels, gt_classes, ious, picks, acc_key, count_key: as for :func:`summarize_labels`.
        class_names: the names the GT classes index (the vocabulary's ``"object"`` or ``"part"`` names).

    Returns:
        For each class that has labelled segments, in class order: ``<count_key>/<name>``,
        ``<acc_key>@Max/<name>`` and ``<acc_key>@Oracle/<name>`` (percent of that class's segments).

    Raises:
        ValueError: a GT class is not an index of ``class_names``.
    """
    scored, hits = _label_hits(labels, gt_classes, ious, picks)
    gt = np.asarray(gt_classes, dtype=np.int64)[scored]
    if gt.size and gt.max() >= len(class_names):
        raise ValueError(f"GT class {int(gt.max())} is not an index of the {len(class_names)} class names")
    res: OrderedDict[str, float] = OrderedDict()
    for c in np.unique(gt).tolist():
        of_class = gt == c
        name = class_names[c]
        res[f"{count_key}/{name}"] = int(of_class.sum())
        for metric, hit in hits.items():
            res[f"{acc_key}@{metric}/{name}"] = 100.0 * float(hit[of_class].mean())
    return res


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


class PromptedInference(nn.Module):
    """Run ``model.inference`` on the inputs that have prompts; give empty outputs to the rest.

    Images without GT segments have no prompts, which the model rejects; the evaluators
    still count them. Use it as the model of ``inference_on_dataset``. The wrapper starts in
    the model's train/eval mode, so that ``inference_on_dataset``, which restores the mode of
    the module it is given, leaves the model as it found it.

    Object labels: when the model has a text encoder (``model.text_encoder`` is not None) and an
    input carries a ``"vocabulary"`` (``{"object": names, "part": names}``, as the COCO evaluation
    mapper writes it), the model also returns ``pred_logits`` for that vocabulary. Its class
    embeddings (``model.class_embeddings``, every prompt template averaged) are computed once per
    vocabulary by this wrapper, in float32, outside autocast. A model without a text encoder gets
    exactly the calls it got before (no vocabulary, no logits).

    Args:
        model: a model with ``inference(batched_inputs, **inference_kwargs)``.
        precision: ``TEST.PRECISION``, one of :data:`EVAL_PRECISIONS`. The default ``"auto"``
            runs the model under float16 autocast on CUDA, as the reference evaluates (its
            outputs are then float16), and in plain float32 on the CPU.
        inference_kwargs: passed to ``model.inference`` (e.g. ``tokens``); an explicit
            ``class_embeddings`` is passed as is, for every input.
    """

    def __init__(self, model: nn.Module, *, precision: str = "auto", **inference_kwargs):
        super().__init__()
        if precision not in EVAL_PRECISIONS:
            raise ValueError(f"TEST.PRECISION: unknown {precision!r}; expected one of {EVAL_PRECISIONS}")
        self.model = model
        self.precision = precision
        self.inference_kwargs = inference_kwargs
        self._logged_dtype = False
        self._class_embeddings: dict[tuple, dict[str, torch.Tensor]] = {}
        self.train(model.training)

    @staticmethod
    def num_prompts(inp: dict) -> int:
        return sum(len(inp[k]) for k in ("points", "boxes") if inp.get(k) is not None)

    def forward(self, batched_inputs: list[dict]) -> list[dict]:
        todo = [i for i, x in enumerate(batched_inputs) if self.num_prompts(x) > 0]
        outputs: list[dict] = [{} for _ in batched_inputs]
        if not todo:
            return outputs
        device = _device_of(self.model)
        dtype = evaluation_dtype(self.precision, device)
        if not self._logged_dtype:
            how = "float32" if dtype == torch.float32 else f"{dtype} autocast"
            logger.info("Evaluating on %s in %s (TEST.PRECISION=%s)", device, how, self.precision)
            self._logged_dtype = True
        groups: dict[tuple | None, list[int]] = {}  # inputs by vocabulary (one group without labels)
        for i in todo:
            groups.setdefault(self._vocabulary_key(batched_inputs[i]), []).append(i)
        for vocabulary, indices in groups.items():
            kwargs = self.inference_kwargs
            if vocabulary is not None:
                kwargs = dict(kwargs, class_embeddings=self.class_embeddings(*vocabulary))
            with inference_autocast(device, dtype):
                results = self.model.inference([batched_inputs[i] for i in indices], **kwargs)
            for i, out in zip(indices, results):
                outputs[i] = out
        return outputs

    def _vocabulary_key(self, inp: dict) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
        """``(object names, part names)`` of the input's vocabulary if the model names outputs with it."""
        vocabulary = inp.get("vocabulary")
        if vocabulary is None or "class_embeddings" in self.inference_kwargs:
            return None
        if getattr(self.model, "text_encoder", None) is None:
            return None
        return tuple(vocabulary["object"]), tuple(vocabulary.get("part") or ())

    def class_embeddings(self, objects: Sequence[str], parts: Sequence[str] = ()) -> dict[str, torch.Tensor]:
        """``model.class_embeddings(objects, parts)`` (``{"object": (C_o, D), "part": (C_p, D)}``),
        computed on the first call for a vocabulary and kept for this wrapper's lifetime."""
        key = (tuple(objects), tuple(parts))
        if key not in self._class_embeddings:
            start = time.perf_counter()
            self._class_embeddings[key] = self.model.class_embeddings(list(key[0]), list(key[1]) or None)
            logger.info(
                "Object labels: embedded a vocabulary of %d object and %d part names in %.1f s",
                len(key[0]), len(key[1]), time.perf_counter() - start,
            )
        return self._class_embeddings[key]


def _device_of(model: nn.Module) -> torch.device:
    """The model's device: its ``device`` attribute, else that of its first parameter, else the CPU."""
    device = getattr(model, "device", None)
    if isinstance(device, (torch.device, str)):
        return torch.device(device)
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


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


def format_results_table(results: dict) -> str:
    """A metric x prompt-kind table of :class:`InteractiveEvaluator` results (the per-class keys,
    ``<metric>/<class>``, left out: see :func:`format_per_class_table`)."""
    keys = list(dict.fromkeys(k for res in results.values() for k in res if "/" not in k))
    rows = [[k] + [_fmt(res.get(k)) for res in results.values()] for k in keys]
    return tabulate(rows, headers=["metric"] + list(results), tablefmt="pipe", stralign="right")


def format_per_class_table(
    per_class: dict, acc_key: str = "label_acc", count_key: str = "num_labelled_segments"
) -> str:
    """A class x (segments, Max, Oracle accuracy) table of :func:`per_class_accuracy`'s keys."""
    prefix = f"{count_key}/"
    names = [k[len(prefix):] for k in per_class if k.startswith(prefix)]
    rows = [
        [name, per_class[f"{count_key}/{name}"], _fmt(per_class[f"{acc_key}@Max/{name}"]),
         _fmt(per_class[f"{acc_key}@Oracle/{name}"])]
        for name in names
    ]
    headers = ["class", "segments", f"{acc_key}@Max", f"{acc_key}@Oracle"]
    return tabulate(rows, headers=headers, tablefmt="pipe", stralign="right", disable_numparse=True)


def _fmt(v) -> str:
    if v is None:
        return ""
    return f"{v:.2f}" if isinstance(v, float) else str(v)
