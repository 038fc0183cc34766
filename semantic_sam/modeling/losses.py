"""Pure loss and matching-cost functions (no reduction over pairs, no normalization).

Shape shorthand: M = matched (prediction, target) pairs, P = sampled points per mask,
Q = predictions, T = targets. Mask inputs are point-sampled logits (raw) and point-sampled GT
labels in [0, 1] (fractional at mask edges). Boxes are cxcywh, normalized.

The criterion sums the per-pair values and divides by the number of targets; the matcher
weights and adds the pairwise costs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from semantic_sam.utils.box_ops import box_area, box_cxcywh_to_xyxy

__all__ = [
    "sigmoid_ce_loss",
    "dice_loss",
    "iou_score_loss",
    "box_l1_loss",
    "giou_loss",
    "paired_generalized_box_iou",
    "pairwise_sigmoid_ce_cost",
    "pairwise_dice_cost",
    "sigmoid_focal_loss",
]


def sigmoid_ce_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Binary cross-entropy with logits, averaged over the points of each pair.

    Args:
        logits: (M, P) point logits.
        labels: (M, P) point labels in [0, 1].

    Returns:
        (M,) mean BCE of each pair.
    """
    return F.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(1)


def sigmoid_focal_loss(logits: Tensor, labels: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Elementwise sigmoid focal loss (Lin et al.), as Mask DINO and the reference's criteria.

    ``FL = alpha_t * (1 - p_t) ** gamma * BCE(z, y)`` with ``p = sigmoid(z)``,
    ``p_t = p y + (1 - p)(1 - y)``, ``alpha_t = alpha y + (1 - alpha)(1 - y)``; ``alpha < 0`` disables
    the alpha weighting.

    Args:
        logits: (..., C) raw class logits.
        labels: (..., C) float targets in {0, 1} (one-hot).

    Returns:
        (..., C) losses, not reduced.
    """
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    p_t = prob * labels + (1 - prob) * (1 - labels)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * labels + (1 - alpha) * (1 - labels)) * loss
    return loss


def dice_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Soft dice loss with +1 smoothing: ``1 - (2 sum(p y) + 1) / (sum(p) + sum(y) + 1)``, p = sigmoid.

    Args:
        logits: (M, P) point logits.
        labels: (M, P) point labels in [0, 1].

    Returns:
        (M,) dice loss of each pair, in [0, 1).
    """
    probs = logits.sigmoid().flatten(1)
    numerator = 2 * (probs * labels).sum(-1)
    denominator = probs.sum(-1) + labels.sum(-1)
    return 1 - (numerator + 1) / (denominator + 1)


def iou_score_loss(pred_ious: Tensor, target_ious: Tensor) -> Tensor:
    """Squared error of the predicted IoU scores (raw, no sigmoid) against their targets.

    Args:
        pred_ious: (M,) raw IoU-head outputs.
        target_ious: (M,) targets (``1 - dice`` of the supervised output in the reference).

    Returns:
        (M,) ``(pred - target) ** 2``.
    """
    return F.mse_loss(pred_ious, target_ious, reduction="none")


def box_l1_loss(pred_boxes: Tensor, target_boxes: Tensor) -> Tensor:
    """L1 distance of boxes, summed over the 4 cxcywh coordinates.

    Args:
        pred_boxes, target_boxes: (M, 4) cxcywh normalized.

    Returns:
        (M,) L1 distances.
    """
    return F.l1_loss(pred_boxes, target_boxes, reduction="none").sum(-1)


def paired_generalized_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-6) -> Tensor:
    """Generalized IoU of corresponding xyxy boxes (the diagonal of the pairwise GIoU).

    ``IoU = I / (U + eps)``, ``GIoU = IoU - (A_c - U) / (A_c + eps)`` with A_c the area of the
    smallest enclosing box, as the reference computes it.

    Args:
        boxes1, boxes2: (M, 4) xyxy.

    Returns:
        (M,) values in [-1, 1].
    """
    inter_wh = (torch.min(boxes1[:, 2:], boxes2[:, 2:]) - torch.max(boxes1[:, :2], boxes2[:, :2])).clamp(min=0)
    inter = inter_wh[:, 0] * inter_wh[:, 1]
    union = box_area(boxes1) + box_area(boxes2) - inter
    iou = inter / (union + eps)
    hull_wh = (torch.max(boxes1[:, 2:], boxes2[:, 2:]) - torch.min(boxes1[:, :2], boxes2[:, :2])).clamp(min=0)
    hull = hull_wh[:, 0] * hull_wh[:, 1]
    return iou - (hull - union) / (hull + eps)


def giou_loss(pred_boxes: Tensor, target_boxes: Tensor) -> Tensor:
    """``1 - GIoU`` of corresponding boxes.

    Args:
        pred_boxes, target_boxes: (M, 4) cxcywh normalized.

    Returns:
        (M,) values in [0, 2].
    """
    return 1 - paired_generalized_box_iou(box_cxcywh_to_xyxy(pred_boxes), box_cxcywh_to_xyxy(target_boxes))


def pairwise_sigmoid_ce_cost(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean BCE of every prediction against every target, on shared points.

    ``cost[q, t] = mean_p [BCE(x_qp, 1) * y_tp + BCE(x_qp, 0) * (1 - y_tp)]``, which equals
    ``sigmoid_ce_loss`` of the pair (q, t).

    Args:
        logits: (Q, P) point logits of the predictions.
        labels: (T, P) point labels of the targets, at the same points.

    Returns:
        (Q, T) costs.
    """
    num_points = logits.shape[1]
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    return (pos @ labels.T + neg @ (1 - labels).T) / num_points


def pairwise_dice_cost(logits: Tensor, labels: Tensor) -> Tensor:
    """Dice loss (+1 smoothing) of every prediction against every target, on shared points.

    Args:
        logits: (Q, P) point logits of the predictions.
        labels: (T, P) point labels of the targets, at the same points.

    Returns:
        (Q, T) costs, ``cost[q, t] = dice_loss`` of the pair (q, t).
    """
    probs = logits.sigmoid().flatten(1)
    numerator = 2 * (probs @ labels.T)
    denominator = probs.sum(-1)[:, None] + labels.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)
