"""The metrics of one-click interactive evaluation (defined in :mod:`.interactive_evaluator`), from
per-segment numbers: mask IoU, Max / Oracle / per-output 1-IoU and NoC (:func:`summarize_ious`), object
and part label accuracy, overall (:func:`summarize_labels`) and per GT class (:func:`per_class_accuracy`),
and the tables that log them.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import numpy as np
import torch
from tabulate import tabulate

__all__ = [
    "format_per_class_table",
    "format_results_table",
    "mask_ious",
    "per_class_accuracy",
    "summarize_ious",
    "summarize_labels",
]


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
