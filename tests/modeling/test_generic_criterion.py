"""GenericCriterion (SEMANTIC_SPEC §5.6): class, part, mask and box terms against plain-float computations, the
denoising pairing and its N * G normalisation, key naming, independent matching of every set, gradients,
batches without targets.

Expected focal values use ``FL(z, y) = alpha_t (1 - p_t) ** gamma * -log(p_t)`` in plain floats. Mask terms are
checked on the centres of the mask-logit pixels (replayed as the random points), where the GT (the coarse mask
upsampled 4x) and the logits are read exactly.
"""
import math

import pytest
import torch

from semantic_sam.config import ConfigError, load_config
from semantic_sam.modeling import generic_criterion as generic_criterion_module
from semantic_sam.modeling.generic_criterion import (
    GENERIC_LOSS_NAMES,
    GenericCriterion,
    build_generic_criterion,
    denoising_pairs,
    generic_weight_dict,
)
from semantic_sam.modeling.generic_matcher import GenericHungarianMatcher
from semantic_sam.utils.random_draws import ReplayRandom

H = W = 4  # mask-logit size; GT masks are 16 x 16
GT_BOX = [0.5, 0.5, 0.5, 0.5]
FAR_BOX = [0.15, 0.15, 0.1, 0.1]


def _focal(z: float, y: int, alpha: float = 0.25, gamma: float = 2.0) -> float:
    p = 1 / (1 + math.exp(-z))
    p_t = p if y else 1 - p
    return (alpha if y else 1 - alpha) * (1 - p_t) ** gamma * -math.log(p_t)


def _focal_sum(logits: torch.Tensor, positives: set) -> float:
    """Sum of FL over a (B, Q, C) tensor with targets 1 at the (b, q, c) in ``positives``, 0 elsewhere."""
    b_, q_, c_ = logits.shape
    return sum(
        _focal(logits[b, q, c].item(), int((b, q, c) in positives))
        for b in range(b_) for q in range(q_) for c in range(c_)
    )


def _block_centres() -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    return torch.stack([(xs.flatten() + 0.5) / W, (ys.flatten() + 0.5) / H], dim=-1)


def _coarse(rows: slice, cols: slice) -> torch.Tensor:
    mask = torch.zeros(H, W, dtype=torch.bool)
    mask[rows, cols] = True
    return mask


def _target(labels, coarse_masks, boxes, parts=None) -> dict:
    target = {
        "labels": torch.tensor(labels, dtype=torch.int64),
        "masks": torch.stack(coarse_masks).repeat_interleave(4, -2).repeat_interleave(4, -1)
        if coarse_masks else torch.zeros(0, 4 * H, 4 * W, dtype=torch.bool),
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
    }
    if parts is not None:
        target["part_labels"] = torch.tensor(parts, dtype=torch.int64)
    return target


def _set(logits, masks, boxes, parts=None) -> dict:
    out = {
        "pred_logits": torch.as_tensor(logits, dtype=torch.float32).clone().requires_grad_(),
        "pred_masks": torch.as_tensor(masks, dtype=torch.float32).clone().requires_grad_(),
        "pred_boxes": torch.as_tensor(boxes, dtype=torch.float32).clone().requires_grad_(),
    }
    if parts is not None:
        out["pred_logits_part"] = torch.as_tensor(parts, dtype=torch.float32).clone().requires_grad_()
    return out


def _perfect_logits(coarse: torch.Tensor) -> torch.Tensor:
    return torch.where(coarse, 10.0, -10.0)


def _criterion(num_sets: int = 3, num_points: int = 64, **kwargs) -> GenericCriterion:
    return GenericCriterion(
        GenericHungarianMatcher(num_points=num_points),
        generic_weight_dict({name: 1.0 for name in GENERIC_LOSS_NAMES}, num_sets),
        num_points=num_points,
        oversample_ratio=kwargs.pop("oversample_ratio", 3.0),
        importance_sample_ratio=kwargs.pop("importance_sample_ratio", 0.75),
        **kwargs,
    )


def _random_set(g: torch.Generator, num_images: int, num_queries: int, num_classes: int = 3, parts: int = 0) -> dict:
    boxes = torch.cat([0.3 + 0.4 * torch.rand(num_images, num_queries, 2, generator=g),
                       0.1 + 0.3 * torch.rand(num_images, num_queries, 2, generator=g)], dim=-1)
    return _set(
        torch.randn(num_images, num_queries, num_classes, generator=g),
        torch.randn(num_images, num_queries, H, W, generator=g) * 3,
        boxes,
        torch.randn(num_images, num_queries, parts, generator=g) if parts else None,
    )


def _two_image_targets(parts: bool = False) -> list:
    return [
        _target([0, 2], [_coarse(slice(0, 2), slice(0, 2)), _coarse(slice(1, 4), slice(2, 4))],
                [[0.25, 0.25, 0.5, 0.5], [0.75, 0.6, 0.5, 0.75]], [1, -1] if parts else None),
        _target([1], [_coarse(slice(2, 4), slice(0, 3))], [[0.375, 0.75, 0.75, 0.5]], [0] if parts else None),
    ]


# ------------------------------------------------------------------------------------------------
# Terms of one matched set
# ------------------------------------------------------------------------------------------------
def test_class_and_part_losses_match_hand_computation():
    """One GT (object 1, part 2), two queries: query 0 is its perfect mask and box, so it is matched.
    cls = sum over both queries and classes of FL, one-hot at (0, 1), divided by N = 1."""
    gt = _coarse(slice(1, 3), slice(1, 3))
    logits = [[[2.0, -1.0], [0.0, 0.5]]]
    part_logits = [[[0.3, -0.2, 1.0], [-1.0, 2.0, 0.0]]]
    out = _set(logits, torch.stack([_perfect_logits(gt), -_perfect_logits(gt)])[None], [[GT_BOX, FAR_BOX]], part_logits)
    details = {}
    target = _target([1], [gt], [GT_BOX], [2])
    losses = _criterion(num_sets=1)(out, [target], generator=torch.Generator().manual_seed(0), details=details)
    assert [t.tolist() for t in details["indices"]["0"][0]] == [[0], [0]]
    expected_cls = _focal(2.0, 0) + _focal(-1.0, 1) + _focal(0.0, 0) + _focal(0.5, 0)
    assert losses["generic_loss_mask_cls_0"].item() == pytest.approx(expected_cls, rel=1e-5)
    expected_part = _focal_sum(torch.tensor(part_logits), {(0, 0, 2)})
    assert losses["generic_loss_mask_part_cls_0"].item() == pytest.approx(expected_part, rel=1e-5)
    assert losses["generic_loss_bbox_0"].item() == pytest.approx(0.0, abs=1e-6)
    assert losses["generic_loss_giou_0"].item() == pytest.approx(0.0, abs=1e-5)

    # part -1 (a whole object): the matched query's part target is all zeros, like the unmatched query's
    target = _target([1], [gt], [GT_BOX], [-1])
    losses = _criterion(num_sets=1)(out, [target], generator=torch.Generator().manual_seed(0))
    expected_part = _focal_sum(torch.tensor(part_logits), set())
    assert losses["generic_loss_mask_part_cls_0"].item() == pytest.approx(expected_part, rel=1e-5)
    assert losses["generic_loss_mask_cls_0"].item() == pytest.approx(expected_cls, rel=1e-5)


def test_mask_and_box_losses_match_hand_computation():
    """Points replayed at the logit-pixel centres: BCE and dice are plain sums over the 16 coarse pixels."""
    g = torch.Generator().manual_seed(3)
    gt = _coarse(slice(0, 3), slice(1, 4))
    q0 = torch.randn(H, W, generator=g) * 2
    pred_box = [0.55, 0.45, 0.6, 0.5]
    out = _set([[[0.0, 0.0], [0.0, 0.0]]], torch.stack([q0, torch.full((H, W), -10.0)])[None], [[pred_box, FAR_BOX]])
    criterion = _criterion(num_sets=1, num_points=H * W, oversample_ratio=1.0, importance_sample_ratio=0.0)
    points = _block_centres()[None]
    # the matcher's points, then the loss's (unused) candidates and its uniform points
    losses = criterion(out, [_target([0], [gt], [GT_BOX])], rng=ReplayRandom([points, points, points]))

    xs, ys = q0.flatten().tolist(), gt.flatten().float().tolist()
    bce = sum(math.log(1 + math.exp(-x)) * y + math.log(1 + math.exp(x)) * (1 - y) for x, y in zip(xs, ys)) / 16
    probs = [1 / (1 + math.exp(-x)) for x in xs]
    dice = 1 - (2 * sum(p * y for p, y in zip(probs, ys)) + 1) / (sum(probs) + sum(ys) + 1)
    assert losses["generic_loss_mask_bce_0"].item() == pytest.approx(bce, rel=1e-5)
    assert losses["generic_loss_mask_dice_0"].item() == pytest.approx(dice, rel=1e-5)
    # L1: |0.05| + |-0.05| + |0.1| + |0| = 0.2; boxes [0.25, 0.2, 0.85, 0.7] and [0.25, 0.25, 0.75, 0.75]:
    # I = 0.5 * 0.45 = 0.225, U = 0.3 + 0.25 - 0.225 = 0.325, hull = 0.6 * 0.55 = 0.33
    giou = 0.225 / 0.325 - (0.33 - 0.325) / 0.33
    assert losses["generic_loss_bbox_0"].item() == pytest.approx(0.2, rel=1e-5)
    assert losses["generic_loss_giou_0"].item() == pytest.approx(1 - giou, rel=1e-4)


# ------------------------------------------------------------------------------------------------
# Denoising
# ------------------------------------------------------------------------------------------------
def test_denoising_pairs_follow_the_groups_and_skip_padding():
    pairs = denoising_pairs(num_groups=2, max_gt=3, counts=[3, 1, 0])
    assert [q.tolist() for q, _ in pairs] == [[0, 1, 2, 3, 4, 5], [0, 3], []]
    assert [t.tolist() for _, t in pairs] == [[0, 1, 2, 0, 1, 2], [0, 0], []]
    with pytest.raises(ValueError, match="max_gt = 2"):
        denoising_pairs(num_groups=1, max_gt=2, counts=[3])


def _dn_case(padding_logit: float = 0.0, padding_mask: float = 0.0, padding_box=(0.9, 0.9, 0.1, 0.1)):
    """Two images with 2 and 1 GT; G = 2 groups of m = 2 rows. DN row g * 2 + j is GT j's box shifted in cx
    by 0.01 * (row index + 1) (image 0) or 0.05 / 0.06 (image 1, rows 0 and 2); rows 1 and 3 of image 1
    are padding."""
    targets = _two_image_targets()
    boxes = torch.tensor(padding_box).repeat(2, 4, 1)
    masks = torch.full((2, 4, H, W), padding_mask)
    shifts = {(0, 0): 0.01, (0, 1): 0.02, (0, 2): 0.03, (0, 3): 0.04, (1, 0): 0.05, (1, 2): 0.06}
    for (b, row), shift in shifts.items():
        j = row % 2
        boxes[b, row] = targets[b]["boxes"][j] + torch.tensor([shift, 0, 0, 0])
        masks[b, row] = _perfect_logits(targets[b]["masks"][j, ::4, ::4])
    logits = torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(11))
    logits[1, 1] = logits[1, 3] = padding_logit
    dn = _set(logits, masks, boxes)
    g = torch.Generator().manual_seed(12)
    outputs = {**_random_set(g, 2, 5), "aux_outputs": [_random_set(g, 2, 5)]}
    outputs["dn_outputs"] = {**dn, "aux_outputs": [_random_set(g, 2, 4)]}
    outputs["dn_meta"] = {"num_groups": 2, "max_gt": 2}
    return outputs, targets, shifts


def test_denoising_losses_use_the_group_pairing_and_n_times_g():
    outputs, targets, shifts = _dn_case()
    details = {}
    losses = _criterion(num_sets=2)(outputs, targets, generator=torch.Generator().manual_seed(0), details=details)
    assert details["num_masks"] == 3 and details["num_groups"] == 2
    assert [q.tolist() for q, _ in details["indices"]["0_dn"]] == [[0, 1, 2, 3], [0, 2]]
    assert [t.tolist() for _, t in details["indices"]["1_dn"]] == [[0, 1, 0, 1], [0, 0]]
    normalizer = 3 * 2  # N * G
    assert losses["generic_loss_bbox_0_dn"].item() == pytest.approx(sum(shifts.values()) / normalizer, rel=1e-5)
    # focal over every DN row, the padding rows (1, 1) and (1, 3) with all-zero targets
    positives = {(0, 0, 0), (0, 1, 2), (0, 2, 0), (0, 3, 2), (1, 0, 1), (1, 2, 1)}
    dn_logits = outputs["dn_outputs"]["pred_logits"].detach()
    expected_cls = _focal_sum(dn_logits, positives) / normalizer
    assert losses["generic_loss_mask_cls_0_dn"].item() == pytest.approx(expected_cls, rel=1e-5)
    names = [name for name in GENERIC_LOSS_NAMES if name != "loss_mask_part_cls"]  # no part logits here
    assert {f"generic_{name}_{s}_dn" for name in names for s in (0, 1)} <= set(losses)


def test_denoising_padding_rows_get_no_mask_or_box_loss():
    def run(**padding):
        outputs, targets, _ = _dn_case(**padding)
        return _criterion(num_sets=2)(outputs, targets, generator=torch.Generator().manual_seed(5))

    base = run()
    other = run(padding_mask=7.0, padding_box=(0.1, 0.2, 0.05, 0.3), padding_logit=0.0)
    for name in ("loss_mask_bce", "loss_mask_dice", "loss_bbox", "loss_giou"):
        assert other[f"generic_{name}_0_dn"].item() == base[f"generic_{name}_0_dn"].item()
    assert other["generic_loss_mask_cls_0_dn"].item() == base["generic_loss_mask_cls_0_dn"].item()
    # the padding rows' class logits do count (all-zero targets)
    assert run(padding_logit=3.0)["generic_loss_mask_cls_0_dn"].item() > base["generic_loss_mask_cls_0_dn"].item() + 1


def test_every_term_is_divided_by_the_process_averaged_count(monkeypatch):
    """With N averaged over processes (4.0 here instead of this process's 3), every term scales by 3 / 4,
    the DN terms too (their normalizer is N * G)."""
    outputs, targets, _ = _dn_case()
    local = _criterion(num_sets=2)(outputs, targets, generator=torch.Generator().manual_seed(1))
    monkeypatch.setattr(generic_criterion_module, "_num_normalizer", lambda count, device: 4.0)
    averaged = _criterion(num_sets=2)(outputs, targets, generator=torch.Generator().manual_seed(1))
    assert set(local) == set(averaged)
    for key, value in local.items():
        assert averaged[key].item() == pytest.approx(value.item() * 3 / 4, rel=1e-5), key


# ------------------------------------------------------------------------------------------------
# Sets, keys, matching
# ------------------------------------------------------------------------------------------------
def test_keys_of_every_set_and_the_config_weights():
    g = torch.Generator().manual_seed(2)
    outputs = {**_random_set(g, 2, 5, parts=2), "aux_outputs": [_random_set(g, 2, 5, parts=2) for _ in range(2)]}
    outputs["interm_outputs"] = _random_set(g, 2, 5, parts=2)
    dn_aux = [_random_set(g, 2, 4, parts=2) for _ in range(2)]
    outputs["dn_outputs"] = {**_random_set(g, 2, 4, parts=2), "aux_outputs": dn_aux}
    outputs["dn_outputs"]["dn_meta"] = {"num_groups": 2, "max_gt": 2}  # dn_meta may also sit in dn_outputs
    losses = _criterion(num_sets=3)(outputs, _two_image_targets(parts=True), generator=torch.Generator().manual_seed(0))
    expected = {f"generic_{name}_{s}" for name in GENERIC_LOSS_NAMES for s in range(3)}
    expected |= {f"generic_{name}_0_interm" for name in GENERIC_LOSS_NAMES}
    expected |= {f"generic_{name}_{s}_dn" for name in GENERIC_LOSS_NAMES for s in range(3)}
    assert set(losses) == expected and len(expected) == 42
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())

    cfg = load_config(None, ["MODEL.DECODER.DEC_LAYERS=2"])
    criterion = build_generic_criterion(cfg)
    assert set(criterion.weight_dict) == expected  # DEC_LAYERS + 1 = 3 sets, interm, DN
    weights = {"loss_mask_cls": 4.0, "loss_mask_part_cls": 4.0, "loss_mask_bce": 5.0, "loss_mask_dice": 5.0,
               "loss_bbox": 5.0, "loss_giou": 2.0}
    for name, weight in weights.items():
        for suffix in ("0", "2", "0_interm", "2_dn"):
            assert criterion.weight_dict[f"generic_{name}_{suffix}"] == weight
    assert criterion.denoising and criterion.num_points == 12544 and criterion.matcher.cost_class == 4.0
    assert len(build_generic_criterion(load_config(None)).weight_dict) == 6 * (10 + 1 + 10)


def test_every_set_is_matched_on_its_own_outputs():
    g = torch.Generator().manual_seed(4)
    final = _random_set(g, 2, 5)
    order = torch.tensor([3, 0, 4, 1, 2])
    permuted = {k: v.detach()[:, order].clone().requires_grad_() for k, v in final.items()}
    outputs = {**final, "aux_outputs": [permuted], "interm_outputs": permuted}
    details = {}
    losses = _criterion(num_sets=2)(outputs, _two_image_targets(), generator=torch.Generator().manual_seed(0),
                                    details=details)
    for b in range(2):
        q0, t0 = details["indices"]["0"][b]
        for suffix in ("1", "0_interm"):
            q1, t1 = details["indices"][suffix][b]
            # permuted query i is final query order[i]: the same GT goes to the same prediction
            assert dict(zip(t1.tolist(), order[q1].tolist())) == dict(zip(t0.tolist(), q0.tolist()))
    # the same predictions with the same matches give the same class and box losses
    for name in ("loss_mask_cls", "loss_bbox", "loss_giou"):
        assert losses[f"generic_{name}_1"].item() == pytest.approx(losses[f"generic_{name}_0"].item(), rel=1e-5)


def test_gradients_reach_every_output_of_every_set():
    g = torch.Generator().manual_seed(6)
    outputs = {**_random_set(g, 2, 5, parts=2), "aux_outputs": [_random_set(g, 2, 5, parts=2)]}
    outputs["interm_outputs"] = _random_set(g, 2, 5, parts=2)
    outputs["dn_outputs"] = {**_random_set(g, 2, 4, parts=2), "aux_outputs": [_random_set(g, 2, 4, parts=2)]}
    outputs["dn_meta"] = {"num_groups": 2, "max_gt": 2}
    criterion = _criterion(num_sets=2)
    losses = criterion(outputs, _two_image_targets(parts=True), generator=torch.Generator().manual_seed(0))
    sum(losses.values()).backward()
    sets = [outputs, outputs["aux_outputs"][0], outputs["interm_outputs"], outputs["dn_outputs"],
            outputs["dn_outputs"]["aux_outputs"][0]]
    for i, out in enumerate(sets):
        for key in ("pred_logits", "pred_logits_part", "pred_masks", "pred_boxes"):
            grad = out[key].grad
            assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, (i, key)


# ------------------------------------------------------------------------------------------------
# Batches without targets, errors
# ------------------------------------------------------------------------------------------------
def test_batches_without_targets_give_finite_connected_losses():
    g = torch.Generator().manual_seed(8)
    outputs = {**_random_set(g, 2, 5, parts=2), "aux_outputs": [_random_set(g, 2, 5, parts=2)]}
    outputs["interm_outputs"] = _random_set(g, 2, 5, parts=2)
    empty = [_target([], [], [], []), _target([], [], [], [])]
    criterion = _criterion(num_sets=2, denoising=True)
    losses = criterion(outputs, empty, generator=torch.Generator().manual_seed(0))
    assert all(torch.isfinite(v) for v in losses.values())
    # N is clamped to 1; every query is a negative for every class
    expected_cls = _focal_sum(outputs["pred_logits"].detach(), set())
    assert losses["generic_loss_mask_cls_0"].item() == pytest.approx(expected_cls, rel=1e-5)
    for key in ("generic_loss_mask_bce_0", "generic_loss_mask_dice_1", "generic_loss_bbox_0_interm",
                "generic_loss_giou_1_dn", "generic_loss_mask_cls_0_dn"):
        assert losses[key].item() == 0.0 and losses[key].requires_grad
    # no DN step (no GT): the DN keys are still there, one per set
    expected_dn = {f"generic_{name}_{s}_dn" for name in GENERIC_LOSS_NAMES for s in range(2)}
    assert {k for k in losses if k.endswith("_dn")} == expected_dn
    sum(losses.values()).backward()
    assert outputs["pred_masks"].grad is not None and outputs["pred_masks"].grad.abs().sum() == 0
    assert outputs["pred_boxes"].grad is not None and outputs["pred_logits"].grad.abs().sum() > 0

    # one image without targets in a DN batch: it gets no DN pairs; without `denoising`, no DN keys
    targets = [_target([], [], [], []), _two_image_targets(parts=True)[0]]
    outputs["dn_outputs"] = _random_set(g, 2, 4, parts=2)
    outputs["dn_meta"] = {"num_groups": 2, "max_gt": 2}
    details = {}
    losses = _criterion(num_sets=2)(outputs, targets, generator=torch.Generator().manual_seed(0), details=details)
    assert [len(q) for q, _ in details["indices"]["0_dn"]] == [0, 4]
    assert [len(q) for q, _ in details["indices"]["0"]] == [0, 2]
    assert all(torch.isfinite(v) for v in losses.values())
    del outputs["dn_outputs"]
    assert not any(k.endswith("_dn") for k in _criterion(num_sets=2)(outputs, targets))


def test_invalid_inputs_are_refused():
    g = torch.Generator().manual_seed(9)
    outputs = _random_set(g, 2, 5)
    targets = _two_image_targets()
    with pytest.raises(ValueError, match="no 'part_labels'"):
        _criterion()({**outputs, "pred_logits_part": torch.zeros(2, 5, 2)}, targets)
    with pytest.raises(ValueError, match="without a weight"):
        _criterion(num_sets=1)({**outputs, "aux_outputs": [outputs]}, targets)
    with pytest.raises(ValueError, match="dn_meta says"):
        dn_meta = {"num_groups": 2, "max_gt": 2}
        _criterion()({**outputs, "dn_outputs": _random_set(g, 2, 3), "dn_meta": dn_meta}, targets)
    with pytest.raises(ValueError, match="without dn_meta"):
        _criterion()({**outputs, "dn_outputs": _random_set(g, 2, 4)}, targets)
    cfg = load_config(None, freeze=False)
    for key in ("COST_CLASS_WEIGHT", "COST_MASK_WEIGHT", "COST_DICE_WEIGHT", "COST_BOX_WEIGHT", "COST_GIOU_WEIGHT"):
        cfg.MODEL.DECODER[key] = 0.0
    with pytest.raises(ConfigError, match="COST_CLASS_WEIGHT"):
        build_generic_criterion(cfg)
    cfg = load_config(None, freeze=False)
    cfg.MODEL.DECODER.CLASS_WEIGHT = -1.0
    with pytest.raises(ConfigError, match="MODEL.DECODER.CLASS_WEIGHT"):
        build_generic_criterion(cfg)
