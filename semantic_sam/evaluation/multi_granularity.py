"""Multi-granularity 1-IoU on SA-1B-format data (the paper's "1-IoU@All Granularity").

For each click, every GT mask of the image that contains the clicked pixel is a valid
answer at some granularity. Those G masks are matched one-to-one to the model's L outputs
by maximum total IoU (Hungarian, ``scipy.optimize.linear_sum_assignment``); the click
scores the mean IoU of the min(G, L) matched pairs. ``1-IoU@MultiGranularity`` is the mean
over all clicks of all images, in percent. The clicked mask's own Max/Oracle 1-IoU (as in
:mod:`.interactive_evaluator`) is reported alongside.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
from collections import OrderedDict

import numpy as np
import torch
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager
from scipy.optimize import linear_sum_assignment

from .interactive_evaluator import SKIPPED_RECORD, gt_masks_of, log_skipped_records, with_weights
from .interactive_metrics import format_results_table, summarize_ious

__all__ = ["MultiGranularityEvaluator", "matched_iou", "pairwise_mask_iou"]

logger = logging.getLogger(__name__)


def pairwise_mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of every pair of binary masks.

    Args:
        a: (N, H, W) bool.
        b: (M, H, W) bool.

    Returns:
        (N, M) float64; 1.0 for two empty masks.
    """
    if a.shape[-2:] != b.shape[-2:]:
        raise ValueError(f"mask sizes differ: {tuple(a.shape[-2:])} vs {tuple(b.shape[-2:])}")
    # 0/1 products summed in float64: exact counts on any device.
    fa, fb = a.flatten(1).double(), b.flatten(1).double()
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def matched_iou(ious: np.ndarray) -> float:
    """Mean IoU of the maximum-IoU one-to-one matching of a (G, L) IoU matrix (G, L >= 1)."""
    rows, cols = linear_sum_assignment(ious, maximize=True)
    return float(ious[rows, cols].mean())


class MultiGranularityEvaluator(DatasetEvaluator):
    """Hungarian-matched 1-IoU over all GT masks containing each click.

    ``process`` reads from each input ``instances.gt_masks`` (G, H, W), ``points`` (P, 2)
    pixel (x, y) and ``click_gt_index`` (P,) (the GT mask each click was placed on; default
    ``arange(P)``); from each output ``pred_masks`` (P, L, H, W) logits and ``pred_ious``.

    ``evaluate`` returns on the main process ``OrderedDict(multi_granularity={
    "1-IoU@MultiGranularity", "mean_gt_per_click", "num_clicks", "num_images", "1-IoU@Max",
    "1-IoU@Oracle", ..., "num_skipped_records"})`` and writes ``multi_granularity_results.json``
    to ``output_dir`` (with ``"weights"``, the evaluated checkpoint, when given). Inputs from :func:`~.interactive_evaluator.skipped_record_input` (records
    the mapper could not read) are counted in ``num_skipped_records`` and logged, not scored.
    """

    def __init__(
        self,
        dataset_name: str | None = None,
        output_dir: str | None = None,
        *,
        distributed: bool = True,
        weights: str | None = None,
    ):
        self.dataset_name = dataset_name
        self.output_dir = output_dir
        self.weights = weights
        self.distributed = distributed
        self.reset()

    def reset(self) -> None:
        self._clicks: list[dict] = []
        self._num_images = 0
        self._skipped: list[dict] = []

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for inp, out in zip(inputs, outputs):
            if SKIPPED_RECORD in inp:
                self._skipped.append(inp[SKIPPED_RECORD])
                continue
            self._num_images += 1
            gt = gt_masks_of(inp)
            points = inp.get("points")
            num = 0 if points is None else len(points)
            if num == 0:
                continue
            if "pred_masks" not in out or out["pred_masks"].shape[0] != num:
                got = tuple(out["pred_masks"].shape) if "pred_masks" in out else "no pred_masks"
                raise ValueError(f"image {inp.get('image_id')!r}: expected {num} click outputs, got {got}")
            gt_index = torch.as_tensor(inp.get("click_gt_index", torch.arange(num))).tolist()
            gt = gt.to(out["pred_masks"].device)
            height, width = gt.shape[-2:]
            for p in range(num):
                x, y = (int(v) for v in torch.as_tensor(points[p]).round().tolist())
                x, y = min(max(x, 0), width - 1), min(max(y, 0), height - 1)
                containing = gt[:, y, x]
                if not containing[gt_index[p]]:
                    raise ValueError(
                        f"image {inp.get('image_id')!r}: click {p} at ({x}, {y}) is outside its GT mask {gt_index[p]}"
                    )
                pred = out["pred_masks"][p] > 0
                ious = pairwise_mask_iou(gt[containing], pred).cpu().numpy()
                own = pairwise_mask_iou(gt[gt_index[p] : gt_index[p] + 1], pred)[0].cpu().numpy()
                self._clicks.append(
                    {
                        "image_id": inp.get("image_id"),
                        "num_gt": int(containing.sum()),
                        "matched_iou": matched_iou(ious),
                        "ious": own,
                        "pick": int(torch.argmax(out["pred_ious"][p])),
                    }
                )

    def evaluate(self) -> "OrderedDict[str, dict]":
        clicks, num_images, skipped = self._clicks, self._num_images, self._skipped
        if self.distributed and comm.get_world_size() > 1:
            comm.synchronize()
            all_clicks = comm.gather(clicks, dst=0)
            per_rank = comm.gather((num_images, skipped), dst=0)
            if not comm.is_main_process():
                return OrderedDict()
            clicks, num_images = list(itertools.chain(*all_clicks)), sum(n for n, _ in per_rank)
            skipped = [s for _, rank_skipped in per_rank for s in rank_skipped]
        res: OrderedDict[str, float] = OrderedDict()
        n = len(clicks)
        if n:
            res["1-IoU@MultiGranularity"] = 100.0 * float(np.mean([c["matched_iou"] for c in clicks]))
            res["mean_gt_per_click"] = float(np.mean([c["num_gt"] for c in clicks]))
        else:
            logger.warning("Multi-granularity evaluation of %s: no clicks in %d images", self.dataset_name, num_images)
        res["num_clicks"] = n
        res["num_images"] = num_images
        res["num_skipped_records"] = len(skipped)
        log_skipped_records(self.dataset_name, skipped)
        if n:
            own = summarize_ious(np.stack([c["ious"] for c in clicks]), np.array([c["pick"] for c in clicks]))
            for k in ("1-IoU@Max", "1-IoU@Oracle"):
                res[k] = own[k]
        results = OrderedDict(multi_granularity=res)
        logger.info("Multi-granularity evaluation of %s:\n%s", self.dataset_name, format_results_table(results))
        if self.output_dir:
            PathManager.mkdirs(self.output_dir)
            with PathManager.open(os.path.join(self.output_dir, "multi_granularity_results.json"), "w") as f:
                json.dump(with_weights(results, self.weights), f, indent=2)
        return results
