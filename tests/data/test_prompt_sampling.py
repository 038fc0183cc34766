"""Training prompts and level targets against the reference's recorded step (criterion_tiny)."""

import dataclasses
import random

import pytest
import torch

from semantic_sam.data.prompt_sampling import ClickTargets, PromptDraws, prepare_click_targets
from semantic_sam.modeling.decoder.prompt_encoder import box_to_prompt, click_boxes
from semantic_sam.utils.random_draws import ReplayRandom

GOLDEN = "tests/fixtures/criterion_tiny/golden.pt"


@pytest.fixture(scope="module")
def golden():
    return torch.load(GOLDEN)


@pytest.fixture
def restore_global_rng():
    py_state, torch_state = random.getstate(), torch.get_rng_state()
    yield
    random.setstate(py_state)
    torch.set_rng_state(torch_state)


def _recorded_draws(g):
    return (
        [int(g["targets.box_start_draw"]), g["targets.randperm"]]
        + [int(c) for c in g["targets.click_candidate_choice"]]
        + [g["forward.dn_rand"]]
    )


def _golden_targets(g, **kwargs):
    h, w = g["meta.image_size_hw"].tolist()
    hp, wp = g["meta.padded_size_hw"].tolist()
    return prepare_click_targets(
        g["input.gt_masks"],
        (h, w),
        (hp, wp),
        int(g["meta.num_clicks"]),
        int(g["meta.num_mask_tokens"]),
        gt_boxes=g["input.gt_boxes_xyxy"],
        **kwargs,
    )


def _check_against_golden(t, g):
    for key in ("points", "boxes_dn", "pb", "boxes", "ori_boxes"):
        assert t[key].dtype == torch.float32
        assert torch.equal(t[key], g[f"targets.{key}"]), key
    for key in ("masks", "ori_masks"):
        assert torch.equal(t[key], g[f"targets.{key}"]), key
    assert torch.equal(t.prompt_gt_inds, g["targets.click_gt_index"])
    assert torch.equal(t.clicks_xy, g["targets.clicks_xy"])
    assert torch.equal(t.target_gt_inds, g["targets.level_target_inds_flat"])
    assert torch.equal(t.target_prompt_inds, g["targets.level_target_click"])
    assert [len(x) for x in t.prompt_target_gt_inds] == g["targets.level_target_count"].tolist()
    assert t.max_num_tgt_per_click == int(g["targets.max_num_tgt_per_click"])
    assert t.box_start == int(g["targets.box_start"])
    assert torch.equal(t.anchor_noise, g["forward.dn_rand"][0])


def test_golden_replay_of_recorded_draws(golden):
    rng = ReplayRandom(_recorded_draws(golden))
    t = _golden_targets(golden, rng=rng)
    assert rng.remaining == 0
    _check_against_golden(t, golden)
    assert t.draws.click_choice == golden["targets.click_candidate_choice"].tolist()


def test_golden_from_reference_seed(golden, restore_global_rng):
    """Default sources (torch global generator + Python random) reproduce the reference's draws."""
    seed = int(golden["meta.run_seed"])
    random.seed(seed)
    torch.manual_seed(seed)
    t = _golden_targets(golden)
    assert t.draws.box_start_draw == int(golden["targets.box_start_draw"])
    assert torch.equal(t.draws.randperm, golden["targets.randperm"])
    _check_against_golden(t, golden)


def test_anchor_noise_gives_reference_anchors(golden):
    """The decoder's jitter b + (2u - 1) * 0.01 * (w/2, h/2, w, h) * 0.4 of these draws gives the recorded anchors."""
    t = _golden_targets(golden, rng=ReplayRandom(_recorded_draws(golden)))
    b, u = t.boxes_dn, t.anchor_noise
    diff = torch.cat([b[:, 2:] / 2, b[:, 2:]], 1) * 0.01
    noised = (b + torch.mul(u * 2 - 1.0, diff) * 0.4).clamp(0, 1)
    eps = 1e-5
    unsig = torch.log(noised.clamp(min=eps) / (1 - noised).clamp(min=eps))
    k = int(golden["meta.num_mask_tokens"])
    torch.testing.assert_close(
        unsig.repeat_interleave(k, 0)[None], golden["forward.refpoints_unsigmoid"], atol=1e-5, rtol=0
    )


def test_default_gt_boxes_are_mask_boxes(golden):
    t_default = _golden_targets(golden, rng=ReplayRandom(_recorded_draws(golden)))
    h, w = golden["meta.image_size_hw"].tolist()
    t = prepare_click_targets(golden["input.gt_masks"], (h, w), (h, w), 6, 6, rng=ReplayRandom(_recorded_draws(golden)))
    assert torch.equal(t.ori_boxes, t_default.ori_boxes)


def _nested_masks(num=5, size=40):
    """Square masks nested around the centre (every pixel of the smallest is in all of them)."""
    masks = torch.zeros(num, size, size, dtype=torch.bool)
    for i in range(num):
        masks[i, 2 * i : size - 2 * i, 2 * i : size - 2 * i] = True
    return masks


def test_level_targets_are_all_masks_containing_the_click():
    gen = torch.Generator().manual_seed(3)
    masks = torch.rand(7, 48, 40, generator=gen) > 0.5
    t = prepare_click_targets(masks, (48, 40), (64, 64), 20, 8, generator=gen)
    assert len(t.prompt_target_gt_inds) == 20
    for i, (x, y) in enumerate(t.clicks_xy.tolist()):
        g = int(t.prompt_gt_inds[i])
        assert masks[g, y, x]
        containing = masks[:, y, x].nonzero().flatten().tolist()
        assert t.prompt_target_gt_inds[i] == containing  # <= K = 8 masks: all of them, ascending
        torch.testing.assert_close(t.points[i], torch.tensor([x / 40, y / 48, 6 / 40, 6 / 48]))
    assert t.masks.shape == (20, 64, 64) and t.ori_masks.shape == (7, 64, 64)
    assert torch.equal(t.masks, t.ori_masks[t.prompt_gt_inds])
    assert not t.ori_masks[:, 48:].any() and not t.ori_masks[:, :, 40:].any()


def test_more_than_k_levels_keeps_a_shuffled_k():
    masks = _nested_masks(5)
    # Click the centre pixel (inside all 5) from the smallest mask: choice index of (20, 20) in mask 4.
    fg = masks[4].flatten().nonzero().flatten()
    choice = int((fg == 20 * 40 + 20).nonzero())
    rng = ReplayRandom([0, torch.tensor([4, 0, 1, 2, 3]), choice, [3, 0, 4, 1, 2], torch.rand(1, 4)])
    t = prepare_click_targets(masks, (40, 40), (40, 40), 1, 3, rng=rng)
    assert t.prompt_target_gt_inds == [[3, 0, 4]]
    assert t.max_num_tgt_per_click == 3
    gen = torch.Generator().manual_seed(0)
    t = prepare_click_targets(masks, (40, 40), (40, 40), 30, 3, generator=gen)
    for i, targets in enumerate(t.prompt_target_gt_inds):
        x, y = t.clicks_xy[i].tolist()
        containing = masks[:, y, x].nonzero().flatten().tolist()
        assert len(targets) == min(3, len(containing)) and len(set(targets)) == len(targets)
        assert set(targets) <= set(containing)


def test_prompts_repeat_or_subsample_the_masks():
    masks = _nested_masks(4)
    gen = torch.Generator().manual_seed(1)
    t = prepare_click_targets(masks, (40, 40), (40, 40), 10, 6, generator=gen)
    perm = t.draws.randperm
    assert torch.equal(t.prompt_gt_inds, perm.repeat(3)[:10])
    t = prepare_click_targets(masks, (40, 40), (40, 40), 3, 6, generator=gen)
    assert torch.equal(t.prompt_gt_inds, t.draws.randperm[:3])


def test_generator_is_deterministic_and_leaves_global_state(restore_global_rng):
    masks = _nested_masks(4)
    state = torch.get_rng_state()
    py_state = random.getstate()
    a = prepare_click_targets(masks, (40, 40), (40, 40), 8, 6, generator=torch.Generator().manual_seed(5))
    b = prepare_click_targets(masks, (40, 40), (40, 40), 8, 6, generator=torch.Generator().manual_seed(5))
    c = prepare_click_targets(masks, (40, 40), (40, 40), 8, 6, generator=torch.Generator().manual_seed(6))
    assert torch.equal(torch.get_rng_state(), state) and random.getstate() == py_state
    assert torch.equal(a.clicks_xy, b.clicks_xy) and torch.equal(a.anchor_noise, b.anchor_noise)
    assert not (torch.equal(a.clicks_xy, c.clicks_xy) and torch.equal(a.anchor_noise, c.anchor_noise))


def test_box_prompts():
    masks = _nested_masks(5)
    n = 12
    for seed in range(5):
        t = prepare_click_targets(
            masks, (40, 40), (40, 40), n, 6, generator=torch.Generator().manual_seed(seed), box_prompts=True
        )
        s = t.box_start
        assert (n - 1) // 2 <= s <= n - 1
        assert torch.equal(t.pb, torch.cat([torch.ones(s), torch.zeros(n - s)]))
        assert t.points.shape == (s, 4) and t.clicks_xy.shape == (s, 2)
        assert torch.equal(t.boxes_dn[:s], t.points)
        assert torch.equal(t.boxes_dn[s:], t.ori_boxes[t.prompt_gt_inds[s:]])
        assert t.prompt_target_gt_inds[s:] == [[int(g)] for g in t.prompt_gt_inds[s:]]
        assert len(t.target_gt_inds) == sum(len(x) for x in t.prompt_target_gt_inds)


def test_eval_mode_padded_frame_and_sizes():
    masks = torch.zeros(2, 50, 30, dtype=torch.bool)
    masks[0, 10:20, 5:15] = True
    masks[1, 30:50, 0:30] = True
    t = prepare_click_targets(masks, (50, 30), (64, 32), 4, 6, generator=torch.Generator(), training=False)
    assert torch.equal(t.pb, torch.zeros(4)) and t.anchor_noise is None
    torch.testing.assert_close(t.ori_boxes[0], torch.tensor([10 / 30, 15 / 50, 10 / 30, 10 / 50]))
    p = prepare_click_targets(masks, (50, 30), (64, 32), 4, 6, generator=torch.Generator(), padded_frame=True)
    scale = torch.tensor([30 / 32, 50 / 64, 30 / 32, 50 / 64])
    torch.testing.assert_close(p.ori_boxes, t.ori_boxes * scale)
    torch.testing.assert_close(p.boxes_dn, t.boxes_dn * scale)


def test_empty_image_gives_placeholder_prompts_without_targets():
    t = prepare_click_targets(
        torch.zeros(0, 32, 32, dtype=torch.bool), (32, 32), (32, 32), 5, 6, generator=torch.Generator()
    )
    assert t.boxes_dn.shape == (5, 4) and t.pb.shape == (5,) and t.anchor_noise.shape == (5, 4)
    assert len(t.target_gt_inds) == 0 and t.max_num_tgt_per_click == 0
    assert (t.prompt_gt_inds == -1).all()


def test_bad_inputs_raise_clear_errors():
    masks = _nested_masks(2)
    with pytest.raises(ValueError, match="padded size"):
        prepare_click_targets(masks, (40, 40), (32, 32), 4, 6)
    with pytest.raises(ValueError, match="gt_masks"):
        prepare_click_targets(masks[0], (40, 40), (40, 40), 4, 6)
    empty = masks.clone()
    empty[1] = False
    with pytest.raises(ValueError, match=r"gt_masks\[1\] is empty"):
        prepare_click_targets(empty, (40, 40), (40, 40), 4, 6, generator=torch.Generator())
    with pytest.raises(ValueError, match="gt_boxes"):
        prepare_click_targets(masks, (40, 40), (40, 40), 4, 6, gt_boxes=torch.zeros(3, 4))


def test_result_is_typed_and_readable_by_key():
    """The criterion and matcher read targets by key; every field is readable both ways."""
    t = prepare_click_targets(_nested_masks(3), (40, 40), (40, 40), 4, 6, generator=torch.Generator().manual_seed(0))
    assert isinstance(t, ClickTargets) and isinstance(t.draws, PromptDraws)
    for field in dataclasses.fields(ClickTargets):
        assert t[field.name] is getattr(t, field.name)
    with pytest.raises(KeyError):
        t["clicks"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.box_start = 0


def test_geometry_is_the_prompt_modules():
    masks = _nested_masks(4)
    t = prepare_click_targets(masks, (40, 36), (64, 64), 6, 6, generator=torch.Generator().manual_seed(2))
    assert torch.equal(t.points, click_boxes(t.clicks_xy, (40, 36), "eval"))
    mask_boxes = torch.tensor([[2 * i, 2 * i, 40 - 2 * i, 40 - 2 * i] for i in range(4)], dtype=torch.float32)
    assert torch.equal(t.ori_boxes, box_to_prompt(mask_boxes, (40, 36)))
