"""GenericHungarianMatcher (SEMANTIC_SPEC §5.5): costs against plain-float formulas, the assignment against brute
force over every injective assignment, the part cost rule, images without targets.

The mask costs are checked on the centres of the mask-logit pixels: with (h, w) logits and GT masks that are
the coarse masks upsampled 4x, the point ((k + 0.5) / w, (i + 0.5) / h) reads logit pixel (i, k) exactly and
the GT inside its 4x4 block, so the expected BCE and dice are plain sums over the coarse pixels.
"""
import itertools
import math

import pytest
import torch

from semantic_sam.config import load_config
from semantic_sam.modeling.generic_matcher import GenericHungarianMatcher, focal_class_cost
from semantic_sam.utils.random_draws import ReplayRandom

H = W = 4  # mask-logit size; GT masks are 16 x 16


def _sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def _class_cost(z: float, alpha: float = 0.25, gamma: float = 2.0) -> float:
    p = _sigmoid(z)
    return alpha * (1 - p) ** gamma * -math.log(p + 1e-6) - (1 - alpha) * p**gamma * -math.log(1 - p + 1e-6)


def _block_centres() -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    return torch.stack([(xs.flatten() + 0.5) / W, (ys.flatten() + 0.5) / H], dim=-1)  # (H * W, 2), row-major


def _upsample(coarse: torch.Tensor) -> torch.Tensor:
    return coarse.repeat_interleave(4, -2).repeat_interleave(4, -1)


def _random_box(g: torch.Generator) -> list:
    cx, cy = (0.2 + 0.6 * torch.rand(2, generator=g)).tolist()
    w, h = (0.05 + 0.35 * torch.rand(2, generator=g)).tolist()
    return [cx, cy, w, h]


def _random_case(seed: int, num_queries: int, num_targets: int, num_classes: int = 3):
    g = torch.Generator().manual_seed(seed)
    outputs = {
        "pred_logits": torch.randn(1, num_queries, num_classes, generator=g) * 2,
        "pred_masks": torch.randn(1, num_queries, H, W, generator=g) * 3,
        "pred_boxes": torch.tensor([[_random_box(g) for _ in range(num_queries)]]),
    }
    coarse = torch.rand(num_targets, H, W, generator=g) < 0.5
    target = {
        "labels": torch.randint(num_classes, (num_targets,), generator=g),
        "masks": _upsample(coarse),
        "boxes": torch.tensor([_random_box(g) for _ in range(num_targets)]),
    }
    return outputs, target, coarse


def _giou(a: list, b: list) -> float:
    ax0, ay0, ax1, ay1 = a[0] - a[2] / 2, a[1] - a[3] / 2, a[0] + a[2] / 2, a[1] + a[3] / 2
    bx0, by0, bx1, by1 = b[0] - b[2] / 2, b[1] - b[3] / 2, b[0] + b[2] / 2, b[1] + b[3] / 2
    inter = max(0.0, min(ax1, bx1) - max(ax0, bx0)) * max(0.0, min(ay1, by1) - max(ay0, by0))
    union = a[2] * a[3] + b[2] * b[3] - inter
    hull = (max(ax1, bx1) - min(ax0, bx0)) * (max(ay1, by1) - min(ay0, by0))
    return inter / union - (hull - union) / hull


def _expected_cost(outputs, target, coarse, q: int, t: int, weights=(4, 5, 5, 5, 2)) -> float:
    """Weighted cost of query q for target t, in plain floats."""
    z = outputs["pred_logits"][0, q, int(target["labels"][t])].item()
    logits = outputs["pred_masks"][0, q].flatten().tolist()
    labels = coarse[t].flatten().float().tolist()
    bce = sum(math.log(1 + math.exp(-x)) * y + math.log(1 + math.exp(x)) * (1 - y) for x, y in zip(logits, labels))
    probs = [_sigmoid(x) for x in logits]
    dice = 1 - (2 * sum(p * y for p, y in zip(probs, labels)) + 1) / (sum(probs) + sum(labels) + 1)
    pred_box, gt_box = outputs["pred_boxes"][0, q].tolist(), target["boxes"][t].tolist()
    l1 = sum(abs(a - b) for a, b in zip(pred_box, gt_box))
    w_cls, w_mask, w_dice, w_box, w_giou = weights
    return (
        w_cls * _class_cost(z) + w_mask * bce / len(labels) + w_dice * dice + w_box * l1
        - w_giou * _giou(pred_box, gt_box)
    )


def test_class_cost_matches_hand_computed_values():
    # z = 0: p = 1/2: (0.25 * 1/4 - 0.75 * 1/4) * -ln(0.500001) = -0.125 * 0.6931452 = -0.0866431.
    # z = 2: p = 0.8807971: 0.25 * 0.1192029^2 * 0.1269269 - 0.75 * 0.8807971^2 * 2.1269196 = -1.2371029.
    logits = torch.tensor([[0.0, 2.0], [2.0, 0.0]])
    cost = focal_class_cost(logits, torch.tensor([0, 1, 1]))
    assert cost.shape == (2, 3)
    assert cost[0, 0].item() == pytest.approx(-0.0866431, abs=1e-6)
    assert cost[0, 1].item() == pytest.approx(-1.2371029, abs=2e-6)
    assert cost[1, 0].item() == pytest.approx(-1.2371029, abs=2e-6)
    for q in range(2):
        for t, c in enumerate([0, 1, 1]):
            assert cost[q, t].item() == pytest.approx(_class_cost(logits[q, c].item()), abs=1e-6)
    # alpha -1: no alpha weighting, (1/4 - 1/4) * ln 2 = 0 at p = 1/2
    assert focal_class_cost(torch.zeros(1, 1), torch.tensor([0]), alpha=-1)[0, 0].item() == pytest.approx(0, abs=1e-7)


def test_cost_matrix_matches_plain_float_formulas():
    matcher = GenericHungarianMatcher()
    outputs, target, coarse = _random_case(0, num_queries=4, num_targets=3)
    costs = matcher.cost_matrices(outputs, 0, target, _block_centres())
    assert set(costs) == {"cost_class", "cost_mask", "cost_dice", "cost_bbox", "cost_giou", "C"}
    for q in range(4):
        for t in range(3):
            assert costs["C"][q, t].item() == pytest.approx(_expected_cost(outputs, target, coarse, q, t), abs=1e-4)
    assert all(v.dtype == torch.float32 and v.shape == (4, 3) for v in costs.values())


SIZES = list(itertools.product(range(1, 6), range(1, 4), range(2)))  # Q <= 5, G <= 3, two seeds each


@pytest.mark.parametrize("num_queries,num_targets,seed", SIZES)
def test_assignment_has_the_brute_force_minimum_cost(num_queries, num_targets, seed):
    outputs, target, coarse = _random_case(100 * num_queries + 10 * num_targets + seed, num_queries, num_targets)
    cost = [[_expected_cost(outputs, target, coarse, q, t) for t in range(num_targets)] for q in range(num_queries)]
    # every injective assignment of the smaller side into the larger one
    if num_queries >= num_targets:
        choices = itertools.permutations(range(num_queries), num_targets)
        candidates = [list(zip(qs, range(num_targets))) for qs in choices]
    else:
        choices = itertools.permutations(range(num_targets), num_queries)
        candidates = [list(zip(range(num_queries), ts)) for ts in choices]
    best = min(sum(cost[q][t] for q, t in pairs) for pairs in candidates)

    [(query_idx, target_idx)] = GenericHungarianMatcher()(outputs, [target], point_coords=[_block_centres()])
    assert query_idx.dtype == target_idx.dtype == torch.int64
    assert len(query_idx) == min(num_queries, num_targets)
    assert len(set(query_idx.tolist())) == len(query_idx) and len(set(target_idx.tolist())) == len(target_idx)
    assert query_idx.tolist() == sorted(query_idx.tolist())
    chosen = sum(cost[q][t] for q, t in zip(query_idx.tolist(), target_idx.tolist()))
    assert chosen == pytest.approx(best, abs=1e-4)


def test_points_are_drawn_from_the_random_source_or_generator():
    outputs, target, _ = _random_case(3, num_queries=5, num_targets=3)
    matcher = GenericHungarianMatcher(num_points=H * W)
    given = matcher(outputs, [target], point_coords=[_block_centres()])
    replayed = matcher(outputs, [target], rng=ReplayRandom([_block_centres()[None]]))
    for (q1, t1), (q2, t2) in zip(given, replayed):
        assert torch.equal(q1, q2) and torch.equal(t1, t2)
    first = GenericHungarianMatcher(num_points=50)(outputs, [target], torch.Generator().manual_seed(7))
    second = GenericHungarianMatcher(num_points=50)(outputs, [target], torch.Generator().manual_seed(7))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, second))


def test_part_cost_is_the_mean_of_object_and_part_costs_when_the_part_is_known():
    outputs, target, _ = _random_case(5, num_queries=3, num_targets=2, num_classes=4)
    outputs["pred_logits_part"] = torch.tensor([[[1.5, -0.5, 0.0], [-2.0, 0.3, 1.0], [0.0, 0.0, 3.0]]])
    target["part_labels"] = torch.tensor([2, -1])
    cost = GenericHungarianMatcher().cost_matrices(outputs, 0, target, _block_centres())["cost_class"]
    for q in range(3):
        obj = [_class_cost(outputs["pred_logits"][0, q, int(c)].item()) for c in target["labels"]]
        part = _class_cost(outputs["pred_logits_part"][0, q, 2].item())
        assert cost[q, 0].item() == pytest.approx((obj[0] + part) / 2, abs=1e-6)
        assert cost[q, 1].item() == pytest.approx(obj[1], abs=1e-6)  # p = -1: object only


def test_part_logits_decide_between_otherwise_identical_queries():
    # two queries identical in object logits, masks and boxes; only their part logits differ
    outputs, target, _ = _random_case(6, num_queries=1, num_targets=1, num_classes=2)
    outputs = {k: torch.cat([v, v], dim=1) for k, v in outputs.items()}
    outputs["pred_logits_part"] = torch.tensor([[[4.0, -4.0], [-4.0, 4.0]]])
    matcher = GenericHungarianMatcher()
    for part, query in ((0, 0), (1, 1)):
        target["part_labels"] = torch.tensor([part])
        [(query_idx, _)] = matcher(outputs, [target], point_coords=[_block_centres()])
        assert query_idx.tolist() == [query]
    target["part_labels"] = torch.tensor([-1])  # no part: both cost the same
    costs = matcher.cost_matrices(outputs, 0, target, _block_centres())["C"]
    assert costs[0, 0].item() == pytest.approx(costs[1, 0].item(), abs=1e-6)


def test_images_without_targets_get_empty_indices():
    outputs, target, _ = _random_case(8, num_queries=4, num_targets=2)
    outputs = {k: torch.cat([v, v], dim=0) for k, v in outputs.items()}
    empty = {"labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, 16, 16, dtype=torch.bool),
             "boxes": torch.zeros(0, 4)}
    indices = GenericHungarianMatcher(num_points=32)(outputs, [empty, target], torch.Generator().manual_seed(0))
    assert [len(q) for q, _ in indices] == [0, 2]
    assert indices[0][0].dtype == indices[0][1].dtype == torch.int64


def test_invalid_inputs_are_refused():
    outputs, target, _ = _random_case(9, num_queries=3, num_targets=2)
    matcher = GenericHungarianMatcher(num_points=16)
    with pytest.raises(ValueError, match="2 targets for a batch of 1"):
        matcher(outputs, [target, target])
    with pytest.raises(ValueError, match=r"object labels must lie in \[0, 3\)"):
        matcher(outputs, [{**target, "labels": torch.tensor([0, 3])}])
    with pytest.raises(ValueError, match="no 'part_labels'"):
        matcher({**outputs, "pred_logits_part": torch.zeros(1, 3, 2)}, [target])
    nan_masks = outputs["pred_masks"].clone()
    nan_masks[0, 1] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        matcher({**outputs, "pred_masks": nan_masks}, [target])
    with pytest.raises(ValueError, match="not all 0"):
        GenericHungarianMatcher(cost_class=0, cost_mask=0, cost_dice=0, cost_box=0, cost_giou=0)


def test_built_from_the_config():
    cfg = load_config(None, ["MODEL.DECODER.COST_CLASS_WEIGHT=3.0", "MODEL.DECODER.TRAIN_NUM_POINTS=100"])
    matcher = GenericHungarianMatcher(cfg)
    assert (matcher.cost_class, matcher.cost_mask, matcher.cost_dice, matcher.cost_box, matcher.cost_giou) == (
        3.0, 5.0, 5.0, 5.0, 2.0
    )
    assert (matcher.num_points, matcher.focal_alpha, matcher.focal_gamma) == (100, 0.25, 2.0)
