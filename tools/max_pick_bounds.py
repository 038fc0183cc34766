"""How high can 1-IoU@Max go on a split if the model's masks were perfect?

On data whose masks nest (sub-part, part, object, group, stuff), a click at the centre of one
mask lies inside several GT masks. A model trained many-to-many (Semantic-SAM) returns all of
them, and its IoU head scores each output's *quality*, not which granularity the user meant.
``1-IoU@Max`` keeps the output with the highest predicted IoU and scores it against the clicked
mask only. This tool replaces the model by perfect masks (every GT mask that contains the click)
and a fixed rule that picks one of them, and reports the clicked-mask IoU each rule would get:

* ``uniform``: the expected IoU of a uniformly random containing mask: what a model with
  perfect masks and a perfect, intent-free IoU head (all scores tied) gets on average;
* ``smallest`` / ``largest`` / ``kth_smallest_2``: always the smallest / largest / second
  smallest containing mask (a model that learnt to prefer one end of the hierarchy);
* ``oracle``: the clicked mask itself (100 by construction).

Clicks are placed as the evaluation does (:func:`semantic_sam.evaluation.click_simulation.
clicks_from_masks`, the point farthest from the mask boundary), on the annotations' own masks.

    python tools/max_pick_bounds.py datasets/builtin/sa1b_json/val     # or: python -m tools.max_pick_bounds ...
"""
from __future__ import annotations

import argparse
from typing import Dict, Sequence

import numpy as np
import torch
from tqdm import tqdm

from semantic_sam.data.sa1b import decode_masks, find_sa1b_pairs, record_from_files
from semantic_sam.evaluation.click_simulation import clicks_from_masks
from semantic_sam.evaluation.multi_granularity import pairwise_mask_iou

__all__ = ["RULES", "pick_rule_ious", "main"]

RULES = ("uniform", "smallest", "kth_smallest_2", "largest", "oracle")


def pick_rule_ious(masks: torch.Tensor | np.ndarray) -> Dict[str, np.ndarray]:
    """Clicked-mask IoU of each pick rule, one click per mask.

    Args:
        masks: (N, H, W) bool GT masks of one image, each non-empty.

    Returns:
        ``{rule: (N,) float64}`` for the rules in :data:`RULES`, and ``"num_containing"``
        (N,) the number of masks that contain each click (the clicked one included).
    """
    masks = torch.as_tensor(masks).bool()
    clicks = clicks_from_masks(masks)
    iou = pairwise_mask_iou(masks, masks).numpy()
    area = masks.flatten(1).sum(1).numpy()
    out = {rule: np.zeros(len(masks)) for rule in RULES}
    out["num_containing"] = np.zeros(len(masks), dtype=np.int64)
    for i, (x, y) in enumerate(clicks.tolist()):
        containing = np.nonzero(masks[:, y, x].numpy())[0]
        # ascending area; ties keep annotation order (stable sort)
        containing = containing[np.argsort(area[containing], kind="stable")]
        own = iou[i, containing]
        out["uniform"][i] = own.mean()
        out["smallest"][i] = own[0]
        out["kth_smallest_2"][i] = own[min(1, len(own) - 1)]
        out["largest"][i] = own[-1]
        out["oracle"][i] = own.max()
        out["num_containing"][i] = len(containing)
    return out


def main(argv: Sequence[str] | None = None) -> Dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", help="SA-1B layout folder (sa_N.jpg + sa_N.json)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    pairs, unpaired = find_sa1b_pairs(args.folder)
    if unpaired:
        raise SystemExit(f"{args.folder}: unpaired files, e.g. {unpaired[0][0]} ({unpaired[0][1]})")
    if not pairs:
        raise SystemExit(f"{args.folder}: no sa_N.jpg + sa_N.json pairs")
    per_rule: Dict[str, list] = {rule: [] for rule in RULES}
    containing = []
    for image, ann in tqdm(pairs, desc="images", disable=args.no_progress):
        record = record_from_files(image, ann)
        if not record.annotations:
            continue
        ious = pick_rule_ious(decode_masks(record.annotations, record.where))
        for rule in RULES:
            per_rule[rule].append(ious[rule])
        containing.append(ious["num_containing"])
    results = {rule: 100.0 * float(np.concatenate(v).mean()) for rule, v in per_rule.items()}
    num_clicks = int(sum(len(c) for c in containing))
    print(f"{len(pairs)} images, {num_clicks} clicks, {np.concatenate(containing).mean():.2f} masks contain each click")
    print("| pick rule (perfect masks) | 1-IoU@Max |\n|---|---|")
    for rule, value in results.items():
        print(f"| {rule} | {value:.2f} |")
    return results


if __name__ == "__main__":
    main()
