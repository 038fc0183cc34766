"""Pure losses and costs against hand-computed values."""

import math

import pytest
import torch
import torchvision

from semantic_sam.modeling.losses import (
    box_l1_loss,
    dice_loss,
    giou_loss,
    iou_score_loss,
    paired_generalized_box_iou,
    pairwise_dice_cost,
    pairwise_sigmoid_ce_cost,
    sigmoid_ce_loss,
)


def test_sigmoid_ce_loss_hand_values():
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]])
    labels = torch.tensor([[1.0, 0.0], [0.5, 0.25]])
    # BCE(0, 1) = ln 2; BCE(ln 3, 0) = ln(1 + 3) = ln 4; BCE(0, y) = ln 2 for every y.
    expected = torch.tensor([(math.log(2) + math.log(4)) / 2, math.log(2)])
    torch.testing.assert_close(sigmoid_ce_loss(logits, labels), expected)


def test_dice_loss_hand_values():
    logits = torch.tensor([[0.0, 0.0], [20.0, -20.0], [-30.0, -30.0]])
    labels = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    # Row 0: p = (0.5, 0.5): 1 - (2 * 0.5 + 1) / (1 + 1 + 1) = 1/3. Row 1: perfect: 1 - 3/3 = 0.
    # Row 2: both empty: the +1 smoothing gives 1 - 1/1 = 0.
    torch.testing.assert_close(dice_loss(logits, labels), torch.tensor([1 / 3, 0.0, 0.0]), atol=1e-6, rtol=0)


def test_iou_score_and_l1_hand_values():
    torch.testing.assert_close(
        iou_score_loss(torch.tensor([0.2, -1.0]), torch.tensor([0.5, 1.0])), torch.tensor([0.09, 4.0])
    )
    pred = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    tgt = torch.tensor([[0.4, 0.5, 0.2, 0.4]])
    torch.testing.assert_close(box_l1_loss(pred, tgt), torch.tensor([0.3]))


def test_generalized_box_iou_hand_values():
    a = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[2.0, 0.0, 3.0, 1.0], [1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0]])
    # Disjoint: IoU 0, hull 3, union 2 -> -1/3. Overlap: I 1, U 7, hull 9 -> 1/7 - 2/9. Identical: 1.
    expected = torch.tensor([-1 / 3, 1 / 7 - 2 / 9, 1.0])
    torch.testing.assert_close(paired_generalized_box_iou(a, b), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(
        paired_generalized_box_iou(a, b), torchvision.ops.generalized_box_iou(a, b).diag(), atol=1e-6, rtol=0
    )
    # cxcywh: the same boxes as the first pair.
    pa = torch.tensor([[0.5, 0.5, 1.0, 1.0]])
    pb = torch.tensor([[2.5, 0.5, 1.0, 1.0]])
    torch.testing.assert_close(giou_loss(pa, pb), torch.tensor([4 / 3]))


def test_giou_eps_as_reference():
    """IoU = I / (U + 1e-6): two identical empty boxes give GIoU 0, not NaN."""
    z = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    assert paired_generalized_box_iou(z, z).item() == 0.0


@pytest.mark.parametrize("seed", [0, 1])
def test_pairwise_costs_equal_paired_losses(seed):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(5, 64, generator=gen) * 3
    labels = (torch.rand(4, 64, generator=gen) > 0.5).float()
    labels[0, :5] = 0.3  # soft labels at mask edges
    ce = pairwise_sigmoid_ce_cost(logits, labels)
    dice = pairwise_dice_cost(logits, labels)
    assert ce.shape == dice.shape == (5, 4)
    for q in range(5):
        for t in range(4):
            torch.testing.assert_close(
                ce[q, t], sigmoid_ce_loss(logits[q : q + 1], labels[t : t + 1])[0], atol=1e-6, rtol=1e-6
            )
            torch.testing.assert_close(
                dice[q, t], dice_loss(logits[q : q + 1], labels[t : t + 1])[0], atol=1e-6, rtol=1e-6
            )
