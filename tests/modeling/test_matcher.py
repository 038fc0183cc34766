"""Many-to-many matcher: the reference's recorded costs and assignment, and brute force."""

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from semantic_sam.config import load_config
from semantic_sam.modeling.matcher import ManyToManyMatcher, assign_within_prompts, build_matcher
from semantic_sam.utils.random_draws import ReplayRandom

GOLDEN = "tests/fixtures/criterion_tiny/golden.pt"
CONFIG = "tests/fixtures/criterion_tiny/tiny_criterion_m2m.yaml"


@pytest.fixture(scope="module")
def golden():
    return torch.load(GOLDEN)


def _golden_target(g):
    return {
        "ori_masks": g["targets.ori_masks"],
        "ori_boxes": g["targets.ori_boxes"],
        "target_gt_inds": g["targets.level_target_inds_flat"],
        "target_prompt_inds": g["targets.level_target_click"],
        "max_num_tgt_per_click": int(g["targets.max_num_tgt_per_click"]),
    }


def _reference_assignment(cost, target_prompt_inds, k):
    """The reference's formulation: 1e6 outside each prompt's block, one assignment over the whole matrix."""
    owner_q = np.arange(cost.shape[0]) // k
    valid = owner_q[:, None] == np.asarray(target_prompt_inds)[None, :]
    d = np.where(valid, cost, np.float32(1e6)).astype(np.float32)
    return linear_sum_assignment(d), valid


def test_golden_costs_and_assignment(golden):
    matcher = build_matcher(load_config(CONFIG))
    assert [matcher.cost_mask, matcher.cost_dice, matcher.cost_box, matcher.cost_giou] == golden[
        "matcher.cost_weights"
    ].tolist()
    costs = matcher.cost_matrices(
        golden["outputs.layer2.pred_masks"][0],
        golden["outputs.layer2.pred_boxes"][0],
        _golden_target(golden),
        golden["matcher.point_coords"][0],
    )
    for name in ("cost_mask", "cost_dice", "cost_bbox", "cost_giou", "C"):
        torch.testing.assert_close(costs[name], golden[f"matcher.{name}"], atol=1e-5, rtol=0)
    (src, tgt), valid = _reference_assignment(
        golden["matcher.C"].numpy(), golden["targets.level_target_click"].numpy(), 6
    )
    assert np.array_equal(valid, golden["matcher.valid"].numpy())
    assert np.array_equal(src, golden["matcher.src_idx"].numpy()) and np.array_equal(
        tgt, golden["matcher.tgt_idx"].numpy()
    )
    # End to end, drawing the recorded points.
    outputs = {"pred_masks": golden["outputs.layer2.pred_masks"], "pred_boxes": golden["outputs.layer2.pred_boxes"]}
    rng = ReplayRandom([golden["matcher.point_coords"]])
    [(src, tgt)] = matcher(outputs, [_golden_target(golden)], rng=rng)
    assert rng.remaining == 0
    assert torch.equal(src, golden["matcher.src_idx"]) and torch.equal(tgt, golden["matcher.tgt_idx"])
    [(src2, tgt2)] = matcher(outputs, [_golden_target(golden)], point_coords=[golden["matcher.point_coords"]])
    assert torch.equal(src2, src) and torch.equal(tgt2, tgt)


def _brute_force(cost, owners, k):
    """Cheapest injective map of targets to queries, each target to a query of its own prompt."""
    num_q, num_t = cost.shape
    best, best_assign = np.inf, None
    for queries in itertools.permutations(range(num_q), num_t):
        if any(q // k != owners[t] for t, q in enumerate(queries)):
            continue
        total = sum(cost[q, t] for t, q in enumerate(queries))
        if total < best:
            best, best_assign = total, queries
    return best, best_assign


@pytest.mark.parametrize("seed", range(6))
def test_blockwise_assignment_equals_brute_force_and_reference_formulation(seed):
    rng = np.random.default_rng(seed)
    k, n = 3, 3
    counts = rng.integers(0, k + 1, size=n)
    owners = np.repeat(np.arange(n), counts)
    cost = rng.normal(size=(n * k, len(owners))).astype(np.float32)
    src, tgt = assign_within_prompts(cost, owners, k)
    assert np.all(np.diff(src) > 0) and len(src) == len(owners)
    best, assign = _brute_force(cost, owners, k)
    assert np.isclose(cost[src, tgt].sum(), best, atol=1e-5)
    assert sorted(zip(assign, range(len(owners)))) == sorted(zip(src.tolist(), tgt.tolist()))
    (ref_src, ref_tgt), _ = _reference_assignment(cost, owners, k)
    assert np.array_equal(ref_src, src) and np.array_equal(ref_tgt, tgt)


def _synthetic_image(gen, num_prompts=3, k=4, size=32):
    """GT squares; every prompt has 1..3 targets; returns targets and a perfect prediction per target."""
    num_gt = 5
    masks = torch.zeros(num_gt, size, size, dtype=torch.bool)
    boxes = torch.zeros(num_gt, 4)
    for g in range(num_gt):
        x0, y0 = torch.randint(0, size // 2, (2,), generator=gen).tolist()
        w, h = torch.randint(4, size // 2, (2,), generator=gen).tolist()
        masks[g, y0 : y0 + h, x0 : x0 + w] = True
        boxes[g] = torch.tensor([(x0 + w / 2) / size, (y0 + h / 2) / size, w / size, h / size])
    levels = [torch.randperm(num_gt, generator=gen)[: 1 + p % 3].tolist() for p in range(num_prompts)]
    target = {
        "ori_masks": masks,
        "ori_boxes": boxes,
        "target_gt_inds": torch.tensor(sum(levels, [])),
        "target_prompt_inds": torch.tensor([p for p, lv in enumerate(levels) for _ in lv]),
        "max_num_tgt_per_click": max(len(lv) for lv in levels),
    }
    # Query (p, perm_p[j]) predicts target j of prompt p perfectly; the other queries predict noise.
    pred_masks = torch.randn(num_prompts * k, size // 4, size // 4, generator=gen)
    pred_boxes = torch.rand(num_prompts * k, 4, generator=gen) * 0.3 + 0.2
    expected = {}
    t = 0
    for p, lv in enumerate(levels):
        perm = torch.randperm(k, generator=gen).tolist()
        for j, g in enumerate(lv):
            q = p * k + perm[j]
            small = F.interpolate(masks[g][None, None].float(), size=(size // 4, size // 4), mode="area")[0, 0]
            pred_masks[q] = (small - 0.5) * 40
            pred_boxes[q] = boxes[g]
            expected[t] = q
            t += 1
    return target, pred_masks, pred_boxes, expected


def test_perfect_predictions_are_found_and_batch_equals_separate_images():
    gen = torch.Generator().manual_seed(0)
    matcher = ManyToManyMatcher(num_points=256, num_tokens=4)
    images = [_synthetic_image(gen) for _ in range(2)]
    coords = [torch.rand(1, 256, 2, generator=gen) for _ in images]
    separate = []
    for (target, pm, pbx, expected), c in zip(images, coords):
        [(src, tgt)] = matcher({"pred_masks": pm[None], "pred_boxes": pbx[None]}, [target], point_coords=[c])
        assert {int(t): int(s) for s, t in zip(src, tgt)} == expected
        separate.append((src, tgt))
    batch = matcher(
        {"pred_masks": torch.stack([im[1] for im in images]), "pred_boxes": torch.stack([im[2] for im in images])},
        [im[0] for im in images],
        point_coords=coords,
    )
    for (s1, t1), (s2, t2) in zip(batch, separate):
        assert torch.equal(s1, s2) and torch.equal(t1, t2)


def test_generator_draws_and_edge_cases():
    gen = torch.Generator().manual_seed(1)
    target, pm, pbx, _ = _synthetic_image(gen)
    matcher = ManyToManyMatcher(num_points=64, num_tokens=4)
    outputs = {"pred_masks": pm[None], "pred_boxes": pbx[None]}
    a = matcher(outputs, [target], generator=torch.Generator().manual_seed(3))
    b = matcher(outputs, [target], generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y) for x, y in zip(a[0], b[0]))
    empty = dict(
        target, target_gt_inds=torch.zeros(0, dtype=torch.long), target_prompt_inds=torch.zeros(0, dtype=torch.long)
    )
    [(src, tgt)] = matcher(outputs, [empty])
    assert len(src) == len(tgt) == 0
    with pytest.raises(ValueError, match="more than the 2 outputs"):
        ManyToManyMatcher(num_points=64, num_tokens=2)(outputs, [dict(target, max_num_tgt_per_click=3)])
    with pytest.raises(ValueError, match="2 targets for a batch of 1"):
        matcher(outputs, [target, target])
    with pytest.raises(ValueError, match="only 1 outputs"):
        assign_within_prompts(np.zeros((4, 2), np.float32), [0, 0], 1)
