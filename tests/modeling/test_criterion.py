"""Criterion: the reference's recorded training step (criterion_tiny), many-to-one, batches.

The replay of a recorded step is :mod:`tools.check_criterion` (its format and every check are documented
there); it runs here on ``tests/fixtures/criterion_tiny`` and on the directory named by the environment
variable ``SEMANTIC_SAM_CRITERION_GOLDEN`` if set. ``tests/tools/test_check_criterion.py`` checks that the
tool reads every input of a case.
"""

import os

import pytest
import torch
import torch.nn.functional as F

from semantic_sam.config import load_config
from semantic_sam.data.prompt_sampling import prepare_click_targets
from semantic_sam.modeling import criterion as criterion_module
from semantic_sam.modeling.criterion import SemanticSamCriterion, build_criterion, expand_weight_dict
from semantic_sam.modeling.matcher import ManyToManyMatcher
from semantic_sam.utils.random_draws import ReplayRandom
from tools.check_criterion import check_criterion, load_case

SHIPPED = "tests/fixtures/criterion_tiny"
CONFIG = os.path.join(SHIPPED, "tiny_criterion_m2m.yaml")
ENV = "SEMANTIC_SAM_CRITERION_GOLDEN"


@pytest.fixture(scope="module")
def case():
    return load_case(SHIPPED)


def _total(losses, weight_dict):
    return sum(v * weight_dict[k] for k, v in losses.items())


def test_golden_many_to_many_replay(capsys):
    """Every check of tools/check_criterion on the shipped step: targets, assignment, every loss term
    before and after weighting, the total, per-pair values of every layer, gradients, and the step
    rerun from the reference's seed."""
    chk = check_criterion(SHIPPED)
    assert chk.report() == 0, capsys.readouterr().out[-4000:]
    assert "115 checks: 115 passed, 0 failed" in capsys.readouterr().out


def test_golden_replay_of_the_environment_directory(capsys):
    directory = os.environ.get(ENV)
    if not directory:
        pytest.skip(f"{ENV} is not set")
    assert check_criterion(directory).report(quiet=True) == 0, capsys.readouterr().out[-4000:]


def test_detached_iou_target_changes_only_mask_gradients(case):
    detached = load_case(SHIPPED, ["MODEL.DECODER.DETACH_IOU_TARGET=True"])
    outputs, layers = detached.outputs(requires_grad=True)
    criterion = build_criterion(detached.cfg)
    rng = ReplayRandom(detached.target_draws() + detached.loss_draws())
    losses = criterion(outputs, [detached.targets(rng)], rng=rng)
    golden = case.golden
    for key, value in losses.items():
        torch.testing.assert_close(value, golden[f"loss.unweighted.{key}"], atol=1e-5, rtol=1e-5)
    _total(losses, criterion.weight_dict).backward()
    for l in range(case.num_layers):
        torch.testing.assert_close(layers[l]["pred_ious"].grad, golden[f"grad.layer{l}.pred_ious"], atol=1e-6, rtol=0)
        diff = (layers[l]["pred_masks"].grad - golden[f"grad.layer{l}.pred_masks"]).abs().max().item()
        assert 1e-5 < diff < 5e-4


def test_match_each_layer_reassigns_aux_layers():
    """With the same points, matching each auxiliary layer on its own reassigns 5 and 4 of 11 targets (README)."""
    case = load_case(SHIPPED, ["MODEL.DECODER.MATCH_EACH_LAYER=True"])
    golden = case.golden
    points = golden["matcher.point_coords"]
    draws = [points]
    for l in case.layer_order:
        if l != case.num_layers - 1:  # every auxiliary layer is matched again, on the same points
            draws.append(points)
        draws += [golden[f"criterion.layer{l}.oversampled_coords"], golden[f"criterion.layer{l}.random_coords"]]
    details = {}
    targets = case.targets(ReplayRandom(case.target_draws()))
    build_criterion(case.cfg)(case.outputs()[0], [targets], rng=ReplayRandom(draws), details=details)
    last = dict(zip(golden["matcher.tgt_idx"].tolist(), golden["matcher.src_idx"].tolist()))
    changed = []
    for l in (0, 1):
        [(src, tgt)] = details["layers"][l]["indices"]
        changed.append(sum(last[t] != s for s, t in zip(src.tolist(), tgt.tolist())))
    assert changed == [5, 4]


def _random_image(gen, num_prompts, k, size=64, num_gt=4):
    masks = torch.zeros(num_gt, size, size, dtype=torch.bool)
    for g in range(num_gt):
        x0, y0 = torch.randint(0, size // 2, (2,), generator=gen).tolist()
        masks[g, y0 : y0 + size // 3, x0 : x0 + size // 3] = True
    target = prepare_click_targets(masks, (size, size), (size, size), num_prompts, k, generator=gen)
    q = num_prompts * k
    outputs = {
        "pred_masks": torch.randn(1, q, size // 4, size // 4, generator=gen),
        "pred_boxes": torch.rand(1, q, 4, generator=gen) * 0.4 + 0.1,
        "pred_ious": torch.randn(1, num_prompts, k, generator=gen),
    }
    return target, outputs


def _tiny_criterion(many_to_one, k, num_layers=2, num_points=32, iou_target="matched"):
    base = {"loss_mask_bce": 5.0, "loss_mask_dice": 5.0, "iou_score_loss": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0}
    return SemanticSamCriterion(
        matcher=ManyToManyMatcher(num_points=num_points, num_tokens=k),
        weight_dict=expand_weight_dict(base, num_layers),
        num_points=num_points,
        oversample_ratio=3.0,
        importance_sample_ratio=0.75,
        num_tokens=k,
        many_to_one=many_to_one,
        iou_target=iou_target,
    )


@pytest.mark.parametrize("many_to_one", [False, True])
def test_batch_of_two_equals_separate_images(many_to_one):
    """Per-image losses times their normalizers add up to the batch loss times its normalizer."""
    gen = torch.Generator().manual_seed(0)
    k, num_prompts, num_points = 3, 4, 32
    images = [_random_image(gen, num_prompts, k) for _ in range(2)]
    criterion = _tiny_criterion(many_to_one, k, num_layers=1, num_points=num_points)
    # Draw each image's random points once; the batch consumes the same ones (matcher points per
    # image, then the loss points of all pairs, image 0's pairs first).
    sizes, separate, draws = [], [], []
    for target, outputs in images:
        pairs = num_prompts * k if many_to_one else len(target["target_gt_inds"])
        matcher_points = [] if many_to_one else [torch.rand(1, num_points, 2, generator=gen)]
        loss_points = [
            torch.rand(pairs, 3 * num_points, 2, generator=gen),
            torch.rand(pairs, num_points - 24, 2, generator=gen),
        ]
        draws.append((matcher_points, loss_points))
        separate.append(criterion(outputs, [target], rng=ReplayRandom(matcher_points + loss_points)))
        sizes.append(num_prompts if many_to_one else len(target["target_gt_inds"]))
    batch_draws = draws[0][0] + draws[1][0] + [torch.cat([draws[0][1][i], draws[1][1][i]]) for i in range(2)]
    outputs = {key: torch.cat([im[1][key] for im in images]) for key in ("pred_masks", "pred_boxes", "pred_ious")}
    details = {}
    batch = criterion(outputs, [im[0] for im in images], rng=ReplayRandom(batch_draws), details=details)
    assert details["num_masks"] == sum(sizes)
    for key in batch:
        expected = (separate[0][key] * sizes[0] + separate[1][key] * sizes[1]) / sum(sizes)
        torch.testing.assert_close(batch[key], expected, atol=1e-5, rtol=1e-5)


def test_many_to_one_supervises_the_best_output_per_prompt():
    gen = torch.Generator().manual_seed(1)
    k = 3
    target, outputs = _random_image(gen, 5, k)
    best = torch.randint(0, k, (5,), generator=gen)
    for i in range(5):  # make token best[i] of prompt i perfect
        g = int(target["prompt_gt_inds"][i])
        small = F.interpolate(target["ori_masks"][g][None, None].float(), size=(16, 16), mode="area")[0, 0]
        outputs["pred_masks"][0, i * k + best[i]] = (small - 0.5) * 60
        outputs["pred_boxes"][0, i * k + best[i]] = target["ori_boxes"][g]
    criterion = _tiny_criterion(True, k, num_layers=1)
    details = {}
    losses = criterion(outputs, [target], generator=torch.Generator().manual_seed(0), details=details)
    layer = details["layers"][0]
    assert torch.equal(layer["best_token"], best)
    per_token = (layer["bce"] + layer["dice"]).view(-1, k)
    assert torch.equal(per_token.argmin(1), best)
    assert details["num_masks"] == 5
    expected_bce = layer["bce"].view(-1, k).gather(1, best[:, None]).sum() / 5
    torch.testing.assert_close(losses["loss_mask_bce_0"], expected_bce)
    assert losses["loss_bbox_0"].item() < 1e-6 and losses["loss_giou_0"].item() < 1e-5
    expected_iou = (
        (
            outputs["pred_ious"][0].gather(1, best[:, None])[:, 0]
            - (1 - layer["dice"].view(-1, k).gather(1, best[:, None])[:, 0])
        )
        ** 2
    ).sum() / 5
    torch.testing.assert_close(losses["iou_score_loss_0"], expected_iou)


def test_reproduce_sam_config_builds_many_to_one():
    cfg = load_config("configs/semantic_sam_reproduce_sam_swinL.yaml")
    criterion = build_criterion(cfg)
    assert criterion.many_to_one and criterion.num_tokens == 3
    assert len(criterion.weight_dict) == 45 and criterion.weight_dict["loss_mask_bce_8"] == 5.0
    assert not isinstance(criterion, torch.nn.Module)
    model = torch.nn.Linear(2, 2)
    keys = set(model.state_dict())
    model.criterion = criterion
    assert set(model.state_dict()) == keys


def test_images_without_targets_give_zero_losses_in_the_graph():
    gen = torch.Generator().manual_seed(2)
    k = 3
    target = prepare_click_targets(torch.zeros(0, 32, 32, dtype=torch.bool), (32, 32), (32, 32), 2, k, generator=gen)
    outputs = {
        "pred_masks": torch.randn(1, 2 * k, 8, 8, requires_grad=True),
        "pred_boxes": torch.rand(1, 2 * k, 4, requires_grad=True),
        "pred_ious": torch.randn(1, 2, k, requires_grad=True),
    }
    for many_to_one in (False, True):
        losses = _tiny_criterion(many_to_one, k, num_layers=1)(outputs, [target])
        assert all(v.item() == 0.0 for v in losses.values())
        sum(losses.values()).backward()
        assert outputs["pred_masks"].grad is not None and outputs["pred_masks"].grad.abs().sum() == 0


def test_normalizer_is_averaged_over_processes(monkeypatch):
    monkeypatch.setattr(criterion_module.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(criterion_module.dist, "all_reduce", lambda t: t.add_(5.0))  # another process had 5
    monkeypatch.setattr(criterion_module, "get_world_size", lambda: 2)
    assert criterion_module._num_normalizer(11, torch.device("cpu")) == 8.0
    monkeypatch.setattr(criterion_module.dist, "all_reduce", lambda t: t)
    assert criterion_module._num_normalizer(0, torch.device("cpu")) == 1.0  # clamped


def test_bad_inputs():
    gen = torch.Generator().manual_seed(3)
    target, outputs = _random_image(gen, 2, 3)
    criterion = _tiny_criterion(False, 3)
    with pytest.raises(ValueError, match="2 targets for a batch of 1"):
        criterion(outputs, [target, target])
    with pytest.raises(ValueError, match="multiple of K"):
        _tiny_criterion(False, 4)(outputs, [target])


@pytest.mark.parametrize("many_to_one", [False, True])
def test_half_precision_outputs_give_float32_losses(many_to_one):
    gen = torch.Generator().manual_seed(4)
    target, outputs = _random_image(gen, 3, 3)
    criterion = _tiny_criterion(many_to_one, 3, num_layers=1)
    full = criterion(outputs, [target], generator=torch.Generator().manual_seed(0))
    half = {k: v.bfloat16().requires_grad_() for k, v in outputs.items()}
    low = criterion(half, [target], generator=torch.Generator().manual_seed(0))
    sum(low.values()).backward()
    for key in full:
        assert low[key].dtype == torch.float32
        torch.testing.assert_close(low[key], full[key], atol=0.05, rtol=0.05)
    assert half["pred_masks"].grad.dtype == torch.bfloat16


@pytest.mark.parametrize("many_to_one", [False, True])
def test_prompt_iou_target_scores_every_output_against_the_prompts_own_mask(many_to_one):
    """IOU_TARGET=prompt: all K outputs of every prompt learn their binary IoU with the prompt's GT.

    Expected IoUs are computed independently at full resolution: each logit cell of the prediction
    covers a 4 x 4 block of GT pixels (nearest upsampling of the binary mask).
    """
    gen = torch.Generator().manual_seed(2)
    k, num_prompts = 3, 4
    target, outputs = _random_image(gen, num_prompts, k)
    outputs["pred_masks"].requires_grad_(True)
    outputs["pred_ious"].requires_grad_(True)
    criterion = _tiny_criterion(many_to_one, k, num_layers=1, iou_target="prompt")
    details = {}
    losses = criterion(outputs, [target], generator=torch.Generator().manual_seed(0), details=details)

    binary = outputs["pred_masks"][0].detach() > 0  # (N*K, 16, 16)
    full = binary.repeat_interleave(4, 1).repeat_interleave(4, 2)
    errors = 0.0
    for q in range(num_prompts * k):
        gt = target["ori_masks"][int(target["prompt_gt_inds"][q // k])]
        inter = (full[q] & gt).sum().item()
        union = (full[q] | gt).sum().item()
        errors += (outputs["pred_ious"][0, q // k, q % k].item() - inter / union) ** 2
    torch.testing.assert_close(losses["iou_score_loss_0"].item(), errors / details["num_masks"], rtol=1e-5, atol=1e-6)

    # the IoU-score term trains the IoU head only
    losses["iou_score_loss_0"].backward()
    assert outputs["pred_masks"].grad is None or not outputs["pred_masks"].grad.any()
    assert outputs["pred_ious"].grad.abs().min() > 0  # every output of every prompt is supervised


def test_prompt_iou_target_leaves_the_other_losses_unchanged():
    gen = torch.Generator().manual_seed(3)
    target, outputs = _random_image(gen, 4, 3)
    ref = _tiny_criterion(False, 3, num_layers=1)(outputs, [target], generator=torch.Generator().manual_seed(0))
    ours = _tiny_criterion(False, 3, num_layers=1, iou_target="prompt")(
        outputs, [target], generator=torch.Generator().manual_seed(0)
    )
    for key in ref:
        if not key.startswith("iou_score_loss"):
            torch.testing.assert_close(ours[key], ref[key], msg=key)
    assert not torch.allclose(ours["iou_score_loss_0"], ref["iou_score_loss_0"])


def test_unknown_iou_target_is_rejected_with_its_config_key():
    with pytest.raises(ValueError, match="MODEL.DECODER.IOU_TARGET"):
        _tiny_criterion(False, 3, iou_target="best")
    with pytest.raises(ValueError, match="IOU_TARGET"):
        build_criterion(load_config(CONFIG, ["MODEL.DECODER.IOU_TARGET=mean"]))
