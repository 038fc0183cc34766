"""Many-to-many Hungarian matching of each prompt's K outputs to its targets (the GT masks containing its click).

Shape shorthand: N = prompts per image, K = output tokens per prompt, Q = N * K predictions
(query q = prompt q // K, token q % K), T = targets of the image (target t belongs to prompt
``target_prompt_inds[t]`` and is GT mask ``target_gt_inds[t]``), P = shared points.

Cost of prediction q for target t (weights from ``MODEL.DECODER.COST_*``):
``5 * BCE + 5 * dice`` on P uniform points shared by all masks, ``+ 5 * L1(boxes) + 2 * (-GIoU)``.
The reference sets every entry whose query and target belong to different prompts to 1e6 and
solves the whole (Q, T) problem. Since each prompt has at most K targets and K queries of its own,
the optimum never uses a 1e6 entry and splits into independent prompt blocks, so this matcher
solves each prompt's (K, T_i) block on its own, which gives the same assignment.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.config import configurable
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from semantic_sam.utils.box_ops import box_cxcywh_to_xyxy, generalized_box_iou
from semantic_sam.utils.random_draws import RandomSource, resolve_random_source

from .losses import pairwise_dice_cost, pairwise_sigmoid_ce_cost
from .point_sampling import point_sample, sample_binary_masks

__all__ = ["ManyToManyMatcher", "build_matcher", "assign_within_prompts"]


def assign_within_prompts(
    cost: np.ndarray, target_prompt_inds: Sequence[int], num_tokens: int
) -> Tuple[np.ndarray, np.ndarray]:
    """Minimum-cost assignment of every target to a distinct query of its own prompt.

    Args:
        cost: (Q, T) cost matrix, Q = N * K.
        target_prompt_inds: (T,) owning prompt of each target.
        num_tokens: K.

    Returns:
        ``(src, tgt)`` int64 arrays of length T: query ``src[j]`` is matched to target ``tgt[j]``,
        sorted by query (as ``scipy.optimize.linear_sum_assignment`` on the full matrix returns them).

    Raises:
        ValueError: a prompt has more than K targets.
    """
    owners = np.asarray(target_prompt_inds, dtype=np.int64)
    src_all, tgt_all = [], []
    for prompt in np.unique(owners):
        cols = np.nonzero(owners == prompt)[0]
        if len(cols) > num_tokens:
            raise ValueError(f"prompt {prompt} has {len(cols)} targets but only {num_tokens} outputs")
        rows = np.arange(prompt * num_tokens, (prompt + 1) * num_tokens)
        if rows[-1] >= cost.shape[0]:
            raise ValueError(f"prompt {prompt} needs queries up to {rows[-1]}, but the cost has {cost.shape[0]} rows")
        r, c = linear_sum_assignment(cost[np.ix_(rows, cols)])
        src_all.append(rows[r])
        tgt_all.append(cols[c])
    if not src_all:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    src, tgt = np.concatenate(src_all), np.concatenate(tgt_all)
    order = np.argsort(src, kind="stable")
    return src[order].astype(np.int64), tgt[order].astype(np.int64)


class ManyToManyMatcher:
    """Matches each prompt's K outputs to its targets (at most K), per image.

    Holds no parameters or buffers. Call it with one decoder layer's outputs and the per-image
    targets of :func:`semantic_sam.data.prompt_sampling.prepare_click_targets`.
    """

    @configurable
    def __init__(
        self,
        *,
        cost_mask: float = 5.0,
        cost_dice: float = 5.0,
        cost_box: float = 5.0,
        cost_giou: float = 2.0,
        num_points: int = 12544,
        num_tokens: int = 6,
    ):
        """
        Args:
            cost_mask, cost_dice, cost_box, cost_giou: weights of the point BCE, point dice, box L1
                and negative GIoU costs.
            num_points: P, uniform points shared by all masks of an image (``TRAIN_NUM_POINTS``).
            num_tokens: K, outputs per prompt.
        """
        if cost_mask == 0 and cost_dice == 0 and cost_box == 0 and cost_giou == 0:
            raise ValueError("all matching costs are 0")
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice
        self.cost_box = cost_box
        self.cost_giou = cost_giou
        self.num_points = num_points
        self.num_tokens = num_tokens

    @classmethod
    def from_config(cls, cfg) -> Dict[str, Any]:
        dec = cfg.MODEL.DECODER
        return {
            "cost_mask": dec.COST_MASK_WEIGHT,
            "cost_dice": dec.COST_DICE_WEIGHT,
            "cost_box": dec.COST_BOX_WEIGHT,
            "cost_giou": dec.COST_GIOU_WEIGHT,
            "num_points": dec.TRAIN_NUM_POINTS,
            "num_tokens": dec.NUM_INTERACTIVE_TOKENS,
        }

    @torch.no_grad()
    def cost_matrices(
        self, pred_masks: Tensor, pred_boxes: Tensor, target: Dict[str, Any], point_coords: Tensor
    ) -> Dict[str, Tensor]:
        """The matching costs of one image.

        Args:
            pred_masks: (Q, h, w) mask logits.
            pred_boxes: (Q, 4) cxcywh normalized boxes.
            target: the image's targets (``ori_masks``, ``ori_boxes``, ``target_gt_inds``).
            point_coords: (P, 2) shared points (x, y) in [0, 1).

        Returns:
            dict of (Q, T) float32 tensors: ``cost_mask``, ``cost_dice``, ``cost_bbox``,
            ``cost_giou`` (unweighted; ``cost_giou`` = -GIoU) and their weighted sum ``C``.
        """
        gt_inds = target["target_gt_inds"].to(pred_masks.device)
        coords = point_coords.to(pred_masks.device).float().reshape(1, -1, 2)
        # All Q masks are channels of one map, sampled at the same points.
        logits = point_sample(pred_masks[None].float(), coords, align_corners=False)[0]
        labels = sample_binary_masks(
            target["ori_masks"].to(pred_masks.device), gt_inds, coords.expand(len(gt_inds), -1, -1)
        )
        cost_mask = pairwise_sigmoid_ce_cost(logits, labels)
        cost_dice = pairwise_dice_cost(logits, labels)
        out_boxes = pred_boxes.float()
        tgt_boxes = target["ori_boxes"].to(out_boxes)[gt_inds]
        cost_bbox = torch.cdist(out_boxes, tgt_boxes, p=1)
        cost_giou = -generalized_box_iou(box_cxcywh_to_xyxy(out_boxes), box_cxcywh_to_xyxy(tgt_boxes))
        total = (
            self.cost_mask * cost_mask
            + self.cost_dice * cost_dice
            + self.cost_box * cost_bbox
            + self.cost_giou * cost_giou
        )
        return {
            "cost_mask": cost_mask,
            "cost_dice": cost_dice,
            "cost_bbox": cost_bbox,
            "cost_giou": cost_giou,
            "C": total,
        }

    @torch.no_grad()
    def __call__(
        self,
        outputs: Dict[str, Any],
        targets: List[Dict[str, Any]],
        rng: Optional[RandomSource] = None,
        point_coords: Optional[Sequence[Tensor]] = None,
        generator: Optional[torch.Generator] = None,
    ) -> List[Tuple[Tensor, Tensor]]:
        """Match one decoder layer's outputs, image by image.

        Args:
            outputs: ``pred_masks`` (B, Q, h, w) logits and ``pred_boxes`` (B, Q, 4) cxcywh.
            targets: B target dicts (``target_gt_inds``, ``target_prompt_inds``, ``ori_masks``,
                ``ori_boxes``).
            rng: source of each image's (1, P, 2) uniform points (default: torch's global
                generator, as the reference; or ``generator``).
            point_coords: B tensors of (P, 2) (or (1, P, 2)) points to use instead of drawing them.
            generator: draw the points from this generator.

        Returns:
            B pairs ``(src, tgt)`` of int64 CPU tensors of length T_b: query ``src[j]`` of image b
            is matched to its target ``tgt[j]``; sorted by query.
        """
        pred_masks, pred_boxes = outputs["pred_masks"], outputs["pred_boxes"]
        if len(targets) != pred_masks.shape[0]:
            raise ValueError(f"{len(targets)} targets for a batch of {pred_masks.shape[0]} images")
        if point_coords is not None and len(point_coords) != len(targets):
            raise ValueError(f"point_coords has {len(point_coords)} entries for {len(targets)} images")
        rng = resolve_random_source(rng, generator)
        indices = []
        for b, target in enumerate(targets):
            num_targets = len(target["target_gt_inds"])
            empty = torch.zeros(0, dtype=torch.int64)
            if num_targets == 0:
                indices.append((empty, empty))
                continue
            if target["max_num_tgt_per_click"] > self.num_tokens:
                raise ValueError(
                    f"image {b}: a prompt has {target['max_num_tgt_per_click']} targets, more than the "
                    f"{self.num_tokens} outputs per prompt"
                )
            if point_coords is None:
                coords = rng.rand(1, self.num_points, 2, device=pred_masks.device)
            else:
                coords = point_coords[b]
            costs = self.cost_matrices(pred_masks[b], pred_boxes[b], target, coords)
            src, tgt = assign_within_prompts(
                costs["C"].cpu().numpy(), target["target_prompt_inds"].tolist(), self.num_tokens
            )
            indices.append((torch.as_tensor(src, dtype=torch.int64), torch.as_tensor(tgt, dtype=torch.int64)))
        return indices

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(cost_mask={self.cost_mask}, cost_dice={self.cost_dice}, "
            f"cost_box={self.cost_box}, cost_giou={self.cost_giou}, num_points={self.num_points}, "
            f"num_tokens={self.num_tokens})"
        )


def build_matcher(cfg) -> ManyToManyMatcher:
    """The many-to-many matcher configured by ``cfg.MODEL.DECODER``."""
    return ManyToManyMatcher(cfg)
