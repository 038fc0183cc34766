"""One table of the headline numbers of several evaluated datasets: interactive 1-IoU and label accuracy
(:mod:`.interactive_evaluator`), PQ, box and mask AP, part AP and mIoU (:mod:`.generic_evaluators`).
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

from tabulate import tabulate

__all__ = ["headline_metrics", "summary_table"]


# (task, metric, row name) of the numbers in the summary table, in its row order.
_HEADLINES: tuple[tuple[str, str, str], ...] = (
    ("interactive", "1-IoU@Max", "1-IoU@Max"),
    ("interactive", "1-IoU@Oracle", "1-IoU@Oracle"),
    ("interactive", "label_acc@Max", "label_acc@Max"),
    ("interactive", "label_acc@Oracle", "label_acc@Oracle"),
    ("interactive", "part_label_acc@Max", "part_label_acc@Max"),
    ("interactive", "part_label_acc@Oracle", "part_label_acc@Oracle"),
    ("box", "1-IoU@Max", "box prompt 1-IoU@Max"),
    ("box", "1-IoU@Oracle", "box prompt 1-IoU@Oracle"),
    ("panoptic_seg", "PQ", "PQ"),
    ("panoptic_seg", "SQ", "SQ"),
    ("panoptic_seg", "RQ", "RQ"),
    ("panoptic_seg", "PQ_th", "PQ things"),
    ("panoptic_seg", "SQ_th", "SQ things"),
    ("panoptic_seg", "RQ_th", "RQ things"),
    ("panoptic_seg", "PQ_st", "PQ stuff"),
    ("panoptic_seg", "SQ_st", "SQ stuff"),
    ("panoptic_seg", "RQ_st", "RQ stuff"),
    ("bbox", "AP", "box AP"),
    ("bbox", "AP50", "box AP50"),
    ("segm", "AP", "mask AP"),
    ("segm", "AP50", "mask AP50"),
    ("bbox", "AP_seen", "box AP seen"),
    ("bbox", "AP50_seen", "box AP50 seen"),
    ("bbox", "AP_unseen", "box AP unseen"),
    ("bbox", "AP50_unseen", "box AP50 unseen"),
    ("segm", "AP_seen", "mask AP seen"),
    ("segm", "AP50_seen", "mask AP50 seen"),
    ("segm", "AP_unseen", "mask AP unseen"),
    ("segm", "AP50_unseen", "mask AP50 unseen"),
    ("sem_seg", "mIoU", "mIoU"),
)


def headline_metrics(results: Mapping[str, Mapping]) -> "OrderedDict[str, float]":
    """``{row name: value}`` of one dataset's results (``{task: {metric: value}}``) for the summary table:
    interactive 1-IoU (and object and part label accuracy), PQ/SQ/RQ (all, things, stuff), box and mask AP and AP50
    (with the seen/unseen averages of part datasets) and mIoU, those present."""
    out: OrderedDict[str, float] = OrderedDict()
    for task, metric, row in _HEADLINES:
        value = results.get(task, {}).get(metric) if isinstance(results.get(task), Mapping) else None
        if value is not None:
            out[row] = float(value)
    return out


def summary_table(results_by_dataset: Mapping[str, Mapping[str, Mapping]]) -> str:
    """A metric x dataset table of :func:`headline_metrics` of each dataset: ``pipe`` format, rows in a
    fixed order (interactive, PQ/SQ/RQ, box and mask AP, part AP seen/unseen, mIoU), 2 decimals, ``nan``
    where detectron2 could not compute a number, empty where a dataset has no such number."""
    heads = {name: headline_metrics(res) for name, res in results_by_dataset.items()}
    rows = [row for _, _, row in _HEADLINES if any(row in h for h in heads.values())]
    table = [[row] + [_fmt(h.get(row)) for h in heads.values()] for row in rows]
    headers = ["metric", *heads]
    return tabulate(table, headers=headers, tablefmt="pipe", stralign="right", disable_numparse=True)


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"
