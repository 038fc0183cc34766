"""Hungarian matching of the generic queries to the ground truth (SEMANTIC_SPEC §5.5, Mask DINO's matcher).

Shape shorthand: B = images, Q = queries, G = GT segments of an image, C_o / C_p = object / part classes,
(h, w) = mask-logit size, (Hp, Wp) = padded GT size (4x the logits), P = shared points. Boxes are cxcywh
normalized to the padded frame.

Cost of query q for GT segment t of an image (weights ``MODEL.DECODER.COST_*_WEIGHT``):
``C = 4 * cost_class + 5 * BCE + 5 * dice + 5 * L1(boxes) + 2 * (-GIoU)``, where

- ``cost_class`` is the focal cost at the target's class, with p = sigmoid(logit):
  ``alpha (1 - p)^gamma (-log(p + 1e-6)) - (1 - alpha) p^gamma (-log(1 - p + 1e-6))``; on part data
  (outputs with ``pred_logits_part``) it is ``(cost_obj[o] + cost_part[p]) / 2`` for a target with a part
  label p >= 0 and ``cost_obj[o]`` for one without (p = -1);
- BCE and dice are mean point BCE and dice (+1 smoothing) on P uniform random points shared by every
  prediction and target of the image;
- L1 is summed over the 4 coordinates.

Every cost is computed in float32 with autocast off. There is no split between thing and stuff queries
(OpenSeeD's ``split_pano`` is not copied; §5.5 "Trap").
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from detectron2.config import configurable
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from semantic_sam.utils.box_ops import box_cxcywh_to_xyxy, generalized_box_iou
from semantic_sam.utils.random_draws import RandomSource, resolve_random_source

from .losses import pairwise_dice_cost, pairwise_sigmoid_ce_cost
from .point_sampling import point_sample, sample_binary_masks

__all__ = ["GenericHungarianMatcher", "check_generic_target", "focal_class_cost", "target_part_labels"]

_LOG_EPS = 1e-6


def focal_class_cost(logits: Tensor, classes: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Focal matching cost of every prediction for every target's class.

    ``cost[q, t] = alpha (1 - p)^gamma (-log(p + 1e-6)) - (1 - alpha) p^gamma (-log(1 - p + 1e-6))`` with
    ``p = sigmoid(logits[q, classes[t]])``; ``alpha < 0`` drops both alpha weights.

    Args:
        logits: (Q, C) raw class logits.
        classes: (T,) int64 class of each target, in [0, C).

    Returns:
        (Q, T) float32 costs.
    """
    prob = logits.float()[:, classes].sigmoid()
    pos_weight, neg_weight = (alpha, 1 - alpha) if alpha >= 0 else (1.0, 1.0)
    pos = pos_weight * (1 - prob) ** gamma * -(prob + _LOG_EPS).log()
    neg = neg_weight * prob**gamma * -(1 - prob + _LOG_EPS).log()
    return pos - neg


def target_part_labels(target: Mapping[str, Tensor], num_part_classes: int, image: int) -> Tensor:
    """The (G,) part labels of an image's targets (-1: none), checked against C_p.

    Args:
        target: ``labels`` (G,) and ``part_labels`` (G,) int64.
        num_part_classes: C_p.
        image: the image's index, for the error message.

    Raises:
        ValueError: the target has no ``"part_labels"`` (outputs with part logits need them), their
            length differs from ``"labels"``, or a label is < -1 or >= C_p.
    """
    if "part_labels" not in target:
        raise ValueError(f"image {image}: the outputs have part logits but the target has no 'part_labels'")
    parts = target["part_labels"]
    if parts.shape != target["labels"].shape:
        raise ValueError(
            f"image {image}: {tuple(parts.shape)} part labels for {tuple(target['labels'].shape)} object labels"
        )
    if parts.numel() and (int(parts.min()) < -1 or int(parts.max()) >= num_part_classes):
        raise ValueError(f"image {image}: part labels must lie in [-1, {num_part_classes}), got {parts.tolist()}")
    return parts


def check_generic_target(target: Mapping[str, Tensor], num_classes: int, image: int) -> Tensor:
    """The (G,) object labels of an image's targets, checked.

    Args:
        target: ``labels`` (G,) int64, ``masks`` (G, Hp, Wp), ``boxes`` (G, 4).
        num_classes: C_o.
        image: the image's index, for the error message.

    Raises:
        ValueError: wrong shapes, counts that differ, or a label outside [0, C_o).
    """
    labels = target["labels"]
    masks, boxes = target["masks"], target["boxes"]
    if labels.dim() != 1 or masks.dim() != 3 or boxes.shape != (len(labels), 4) or len(masks) != len(labels):
        raise ValueError(
            f"image {image}: need labels (G,), masks (G, Hp, Wp) and boxes (G, 4); got {tuple(labels.shape)}, "
            f"{tuple(masks.shape)} and {tuple(boxes.shape)}"
        )
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"image {image}: object labels must lie in [0, {num_classes}), got {labels.tolist()}")
    return labels


class GenericHungarianMatcher:
    """One-to-one minimum-cost assignment of the generic queries to the GT segments, image by image.

    Holds no parameters or buffers. Call it with one output set (the final layer, an auxiliary layer or the
    two-stage ``interm_outputs``) and the per-image targets.
    """

    @configurable
    def __init__(
        self,
        cost_class: float = 4.0,
        cost_mask: float = 5.0,
        cost_dice: float = 5.0,
        cost_box: float = 5.0,
        cost_giou: float = 2.0,
        num_points: int = 12544,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ):
        """
        Args:
            cost_class, cost_mask, cost_dice, cost_box, cost_giou: weights of the focal class cost, the point
                BCE and dice costs, the box L1 cost and the negative GIoU cost (4, 5, 5, 5, 2).
            num_points: P, uniform points per image shared by all masks (``TRAIN_NUM_POINTS``).
            focal_alpha, focal_gamma: focal cost parameters (0.25, 2; alpha -1: no alpha weighting).
        """
        weights = (cost_class, cost_mask, cost_dice, cost_box, cost_giou)
        if any(w < 0 for w in weights) or all(w == 0 for w in weights):
            raise ValueError(f"matching cost weights must be >= 0 and not all 0, got {weights}")
        if num_points < 1:
            raise ValueError(f"num_points must be >= 1, got {num_points}")
        self.cost_class = cost_class
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice
        self.cost_box = cost_box
        self.cost_giou = cost_giou
        self.num_points = num_points
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma

    @classmethod
    def from_config(cls, cfg) -> Dict[str, Any]:
        dec = cfg.MODEL.DECODER
        return {
            "cost_class": dec.COST_CLASS_WEIGHT,
            "cost_mask": dec.COST_MASK_WEIGHT,
            "cost_dice": dec.COST_DICE_WEIGHT,
            "cost_box": dec.COST_BOX_WEIGHT,
            "cost_giou": dec.COST_GIOU_WEIGHT,
            "num_points": dec.TRAIN_NUM_POINTS,
            "focal_alpha": dec.FOCAL_ALPHA,
            "focal_gamma": dec.FOCAL_GAMMA,
        }

    @torch.no_grad()
    def cost_matrices(
        self,
        outputs: Mapping[str, Tensor],
        image: int,
        target: Mapping[str, Tensor],
        point_coords: Tensor,
    ) -> Dict[str, Tensor]:
        """The matching costs of one image.

        Args:
            outputs: the batch's output set (``pred_logits`` (B, Q, C_o), optional ``pred_logits_part``
                (B, Q, C_p), ``pred_masks`` (B, Q, h, w), ``pred_boxes`` (B, Q, 4)).
            image: b, the image's index in the batch.
            target: its targets (``labels`` (G,), ``part_labels`` (G,) with part logits, ``masks``
                (G, Hp, Wp) bool, ``boxes`` (G, 4) cxcywh).
            point_coords: (P, 2) or (1, P, 2) shared points (x, y) in [0, 1].

        Returns:
            dict of unweighted (Q, G) float32 costs ``cost_class``, ``cost_mask``, ``cost_dice``,
            ``cost_bbox``, ``cost_giou`` (= -GIoU) and their weighted sum ``C``.
        """
        pred_masks = outputs["pred_masks"][image]
        device = pred_masks.device
        with torch.autocast(device_type=device.type, enabled=False):
            logits = outputs["pred_logits"][image].float()
            labels = check_generic_target(target, logits.shape[-1], image).to(device)
            cost_class = focal_class_cost(logits, labels, self.focal_alpha, self.focal_gamma)
            if "pred_logits_part" in outputs:
                part_logits = outputs["pred_logits_part"][image].float()
                parts = target_part_labels(target, part_logits.shape[-1], image).to(device)
                cost_part = focal_class_cost(part_logits, parts.clamp(min=0), self.focal_alpha, self.focal_gamma)
                cost_class = torch.where(parts[None] >= 0, (cost_class + cost_part) / 2, cost_class)

            coords = point_coords.to(device).float().reshape(1, -1, 2)
            # All Q masks are channels of one map, sampled at the same points.
            point_logits = point_sample(pred_masks[None].float(), coords, align_corners=False)[0]
            gt_inds = torch.arange(len(labels), device=device)
            point_labels = sample_binary_masks(
                target["masks"].to(device), gt_inds, coords.expand(len(labels), -1, -1)
            )
            cost_mask = pairwise_sigmoid_ce_cost(point_logits, point_labels)
            cost_dice = pairwise_dice_cost(point_logits, point_labels)

            out_boxes = outputs["pred_boxes"][image].float()
            tgt_boxes = target["boxes"].to(device).float()
            cost_bbox = torch.cdist(out_boxes, tgt_boxes, p=1)
            cost_giou = -generalized_box_iou(box_cxcywh_to_xyxy(out_boxes), box_cxcywh_to_xyxy(tgt_boxes))
            total = (
                self.cost_class * cost_class
                + self.cost_mask * cost_mask
                + self.cost_dice * cost_dice
                + self.cost_box * cost_bbox
                + self.cost_giou * cost_giou
            )
        return {
            "cost_class": cost_class,
            "cost_mask": cost_mask,
            "cost_dice": cost_dice,
            "cost_bbox": cost_bbox,
            "cost_giou": cost_giou,
            "C": total,
        }

    @torch.no_grad()
    def __call__(
        self,
        outputs: Mapping[str, Any],
        targets: Sequence[Mapping[str, Tensor]],
        generator: Optional[torch.Generator] = None,
        rng: Optional[RandomSource] = None,
        point_coords: Optional[Sequence[Tensor]] = None,
    ) -> List[Tuple[Tensor, Tensor]]:
        """Match one output set, image by image.

        Args:
            outputs: ``pred_logits`` (B, Q, C_o) raw, optional ``pred_logits_part`` (B, Q, C_p),
                ``pred_masks`` (B, Q, h, w) logits, ``pred_boxes`` (B, Q, 4) cxcywh normalized.
            targets: B dicts: ``labels`` (G_i,) int64, ``part_labels`` (G_i,) int64 (-1: none; needed when
                the outputs have part logits), ``masks`` (G_i, Hp, Wp) bool, ``boxes`` (G_i, 4) cxcywh.
            generator: draw each image's (1, P, 2) uniform points from this generator.
            rng: draw them from this :class:`~semantic_sam.utils.random_draws.RandomSource` instead
                (default: torch's global generator).
            point_coords: B tensors of (P, 2) points to use instead of drawing them.

        Returns:
            B pairs ``(query_idx, target_idx)`` of int64 CPU tensors of length min(Q, G_i): query
            ``query_idx[j]`` is matched to target ``target_idx[j]``; sorted by query; empty for an image
            without targets.

        Raises:
            ValueError: wrong batch size, a label out of range, missing part labels, or a non-finite cost
                (NaN or infinite predictions).
        """
        num_images = outputs["pred_masks"].shape[0]
        if len(targets) != num_images:
            raise ValueError(f"{len(targets)} targets for a batch of {num_images} images")
        if point_coords is not None and len(point_coords) != num_images:
            raise ValueError(f"point_coords has {len(point_coords)} entries for {num_images} images")
        rng = resolve_random_source(rng, generator)
        device = outputs["pred_masks"].device
        indices = []
        for b, target in enumerate(targets):
            if len(target["labels"]) == 0:
                empty = torch.zeros(0, dtype=torch.int64)
                indices.append((empty, empty))
                continue
            coords = rng.rand(1, self.num_points, 2, device=device) if point_coords is None else point_coords[b]
            cost = self.cost_matrices(outputs, b, target, coords)["C"]
            if not bool(torch.isfinite(cost).all()):
                raise ValueError(f"image {b}: the matching cost has non-finite entries (NaN or inf predictions?)")
            rows, cols = linear_sum_assignment(cost.cpu().numpy())
            indices.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return indices

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(cost_class={self.cost_class}, cost_mask={self.cost_mask}, "
            f"cost_dice={self.cost_dice}, cost_box={self.cost_box}, cost_giou={self.cost_giou}, "
            f"num_points={self.num_points}, focal_alpha={self.focal_alpha}, focal_gamma={self.focal_gamma})"
        )
