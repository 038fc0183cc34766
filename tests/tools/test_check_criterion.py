"""tools/check_criterion.py takes any golden directory in the format of tests/fixtures/criterion_tiny: a
second case with another image size, other N, K, L, P and level-target shuffle draws passes, and changing
one recorded input makes it fail.

The shipped case (and the directory named by ``SEMANTIC_SAM_CRITERION_GOLDEN``) are checked in
tests/modeling/test_criterion.py.
"""
import os
import random
import shutil

import pytest
import torch

from semantic_sam.config import load_config, save_config
from semantic_sam.data.prompt_sampling import prepare_click_targets
from semantic_sam.modeling.criterion import build_criterion
from semantic_sam.utils.random_draws import ReferenceRandom
from tests.fixture_files import FIXTURES
from tools import check_criterion
from tools.check_criterion import check_criterion as run_check

SHIPPED = os.path.join(FIXTURES, "criterion_tiny")


def _failed(chk) -> set:
    return {name for name, r in chk.results.items() if r.status == "FAIL"}


# ------------------------------------------------------------------------------------------------
# A second case, recorded from this implementation in the documented format: another image size
# (not a multiple of 32, so the padded size differs), N = 5 clicks, K = 2 tokens, L = 2 layers,
# P = 64 points, and nested masks, so that clicks lie in more than K masks (level-target shuffles).
# Recorded from our own code, it checks that the tool reads the format; the negative controls check
# that it reads each recorded input.
# ------------------------------------------------------------------------------------------------
class _Recorder(ReferenceRandom):
    """The reference's sources, with a log of every draw."""

    def __init__(self):
        self.log = []

    def rand(self, *size, device=None):
        out = super().rand(*size, device=device)
        self.log.append(out.clone())
        return out

    def randperm(self, n, device=None):
        out = super().randperm(n, device=device)
        self.log.append(out.clone())
        return out

    def randint(self, low, high):
        out = super().randint(low, high)
        self.log.append(out)
        return out

    def shuffle(self, items):
        super().shuffle(items)
        self.log.append(list(items))


H, W, HP, WP = 90, 150, 96, 160
N, K, L, P, SEED = 5, 2, 2, 64, 3


def _masks() -> torch.Tensor:
    masks = torch.zeros(5, H, W, dtype=torch.bool)
    masks[0, 5:85, 10:140] = True  # whole
    masks[1, 15:75, 30:120] = True  # part of 0
    masks[2, 25:65, 50:100] = True  # part of 1
    masks[3, 35:55, 60:85] = True  # part of 2: its pixels lie in 4 masks > K
    masks[4, 60:90, 0:150] = True  # a band across the bottom, overlapping 0, 1, 2
    return masks


def record_case(directory) -> dict:
    """Write a golden directory of this implementation's step (config ``case.yaml`` and ``golden.pt``)."""
    os.makedirs(directory, exist_ok=True)
    overrides = [
        f"MODEL.DECODER.MAX_NUM_INSTANCE={N}",
        f"MODEL.DECODER.NUM_INTERACTIVE_TOKENS={K}",
        f"MODEL.DECODER.DEC_LAYERS={L}",
        f"MODEL.DECODER.TRAIN_NUM_POINTS={P}",
    ]
    cfg = load_config(os.path.join(SHIPPED, "tiny_criterion_m2m.yaml"), overrides)
    save_config(cfg, str(directory), "case.yaml")
    criterion = build_criterion(cfg)
    masks = _masks()
    boxes = torch.tensor([[10, 5, 140, 85], [30, 15, 120, 75], [50, 25, 100, 65], [60, 35, 85, 55], [0, 60, 150, 90]])
    gen = torch.Generator().manual_seed(11)
    layers = [
        {
            "pred_masks": torch.randn(1, N * K, HP // 4, WP // 4, generator=gen) * 3,
            "pred_boxes": torch.rand(1, N * K, 4, generator=gen) * 0.5 + 0.2,
            "pred_ious": torch.randn(1, N, K, generator=gen),
        }
        for _ in range(L)
    ]
    leaves = [{k: v.clone().requires_grad_(True) for k, v in layer.items()} for layer in layers]
    outputs = dict(leaves[-1], aux_outputs=leaves[:-1])

    py_state, torch_state = random.getstate(), torch.get_rng_state()
    try:
        random.seed(SEED)
        torch.manual_seed(SEED)
        rec = _Recorder()
        target = prepare_click_targets(masks, (H, W), (HP, WP), N, K, gt_boxes=boxes.float(), rng=rec)
        # draws 1-5: box_start, randperm, per click its pixel (and shuffle), the anchor jitter
        target_draws, rec.log = rec.log, []
        details = {}
        losses = criterion(outputs, [target], rng=rec, details=details)
    finally:
        random.setstate(py_state)
        torch.set_rng_state(torch_state)
    total = sum(v * criterion.weight_dict[k] for k, v in losses.items())
    total.backward()

    choices = [d for d in target_draws[2:-1] if isinstance(d, int)]
    shuffles = [d for d in target_draws[2:-1] if isinstance(d, list)]
    full = [masks[:, y, x].nonzero().squeeze(1).tolist() for x, y in target["clicks_xy"].tolist()]
    layer_order = [L - 1, *range(L - 1)]
    g = {
        "meta.image_size_hw": torch.tensor([H, W]),
        "meta.padded_size_hw": torch.tensor([HP, WP]),
        "meta.num_clicks": torch.tensor(N),
        "meta.num_mask_tokens": torch.tensor(K),
        "meta.num_decoder_layers": torch.tensor(L),
        "meta.num_points": torch.tensor(P),
        "meta.oversample_ratio": torch.tensor(3.0),
        "meta.importance_sample_ratio": torch.tensor(0.75),
        "meta.run_seed": torch.tensor(SEED),
        "meta.num_masks": torch.tensor(float(details["num_masks"])),
        "input.gt_masks": masks,
        "input.gt_boxes_xyxy": boxes.float(),
        "targets.box_start_draw": torch.tensor(target_draws[0]),
        "targets.randperm": target_draws[1],
        "targets.click_gt_index": target["prompt_gt_inds"],
        "targets.clicks_xy": target["clicks_xy"],
        "targets.click_candidate_choice": torch.tensor(choices),
        "targets.level_targets_full_flat": torch.tensor([m for f in full for m in f]),
        "targets.level_targets_full_count": torch.tensor([len(f) for f in full]),
        "targets.level_target_inds_flat": target["target_gt_inds"],
        "targets.level_target_count": torch.tensor([len(t) for t in target["prompt_target_gt_inds"]]),
        "targets.level_target_click": target["target_prompt_inds"],
        "targets.max_num_tgt_per_click": torch.tensor(target["max_num_tgt_per_click"]),
        "targets.points": target["points"],
        "targets.boxes_dn": target["boxes_dn"],
        "targets.ori_boxes": target["ori_boxes"],
        "targets.pb": target["pb"],
        "forward.dn_rand": target_draws[-1][None],
        "matcher.point_coords": rec.log[0],
        "matcher.src_idx": details["indices"][0][0],
        "matcher.tgt_idx": details["indices"][0][1],
        "criterion.layer_order": torch.tensor(layer_order),
        "loss.total": total.detach(),
    }
    for l in range(L):
        for key in ("pred_masks", "pred_boxes", "pred_ious"):
            g[f"outputs.layer{l}.{key}"] = layers[l][key]
            g[f"grad.layer{l}.{key}"] = leaves[l][key].grad
    for i, l in enumerate(layer_order):
        d = details["layers"][l]
        g[f"criterion.layer{l}.oversampled_coords"] = rec.log[1 + 2 * i]
        g[f"criterion.layer{l}.random_coords"] = rec.log[2 + 2 * i]
        for ours, theirs in check_criterion.PER_PAIR.items():
            g[f"criterion.layer{l}.{theirs}"] = d[ours].detach()
        g[f"criterion.layer{l}.l1"] = (d["box_pred"] - d["box_target"]).abs().detach()
    for key, value in losses.items():
        g[f"loss.unweighted.{key}"] = value.detach()
        g[f"loss.weight.{key}"] = torch.tensor(criterion.weight_dict[key])
        g[f"loss.weighted.{key}"] = (value * criterion.weight_dict[key]).detach()
    g = {k: v.contiguous() for k, v in g.items()}
    torch.save(g, os.path.join(directory, "golden.pt"))
    return {"golden": g, "full": full, "shuffles": shuffles}


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    directory = tmp_path_factory.mktemp("criterion_case_b")
    recorded = record_case(str(directory))
    return str(directory), recorded


def _edited(case, tmp_path, edit) -> str:
    directory, recorded = case
    dst = tmp_path / "edited"
    shutil.copytree(directory, dst)
    golden = dict(recorded["golden"])
    edit(golden, recorded)
    torch.save(golden, dst / "golden.pt")
    return str(dst)


def test_a_second_case_with_shuffled_level_targets_passes(case, capsys):
    directory, recorded = case
    # the case really differs from the shipped one: clicks in more than K masks, shuffled
    assert recorded["shuffles"] and any(len(f) > K for f in recorded["full"])
    stored = recorded["golden"]["targets.level_target_inds_flat"].split(
        recorded["golden"]["targets.level_target_count"].tolist()
    )
    assert any(len(f) > K and s.tolist() != f[:K] for f, s in zip(recorded["full"], stored))
    chk = run_check(directory)
    assert chk.report(quiet=True) == 0
    assert "replay.draws" in chk.results and chk.results["seed.loss.total"].status == "ok"
    assert check_criterion.main([directory, "--quiet"]) == 0
    capsys.readouterr()


def test_another_recorded_shuffle_makes_the_check_fail(case, tmp_path):
    """Negative control: one shuffled click keeps another K of its masks (the tool feeds that shuffle)."""

    def edit(g, recorded):
        counts = g["targets.level_target_count"].tolist()
        stored = [s.tolist() for s in g["targets.level_target_inds_flat"].split(counts)]
        i = next(i for i, f in enumerate(recorded["full"]) if len(f) > K)
        stored[i] = ([m for m in recorded["full"][i] if m not in stored[i]] + stored[i])[:K]  # another K masks
        g["targets.level_target_inds_flat"] = torch.tensor([m for s in stored for m in s])

    chk = run_check(_edited(case, tmp_path, edit))
    assert chk.report(quiet=True) == 1
    failed = _failed(chk)
    assert {"loss.total", "criterion.layer1.box_target"} <= failed, failed


def test_another_image_size_makes_the_check_fail(case, tmp_path):
    """Negative control: boxes are normalized by meta.image_size_hw."""
    chk = run_check(_edited(case, tmp_path, lambda g, r: g.__setitem__("meta.image_size_hw", torch.tensor([H, W - 9]))))
    assert chk.report(quiet=True) == 1
    failed = _failed(chk)
    assert {"targets.points", "targets.ori_boxes", "loss.unweighted.loss_bbox_0"} <= failed, failed


def test_another_loss_draw_makes_the_check_fail(case, tmp_path):
    """Negative control: the uniform loss points of decoder layer 0 (loss suffix _1)."""

    def edit(g, recorded):
        g["criterion.layer0.random_coords"] = 1 - g["criterion.layer0.random_coords"]

    chk = run_check(_edited(case, tmp_path, edit))
    assert chk.report(quiet=True) == 1
    failed = _failed(chk)
    assert {"criterion.layer0.point_coords", "loss.unweighted.loss_mask_bce_1"} <= failed, failed
    assert not any(f.startswith("criterion.layer1.") or f.endswith("_0") for f in failed), failed


def test_draws_that_do_not_fit_fail_without_a_traceback(case, tmp_path):
    wrong_size = torch.rand(1, P + 1, 2)
    chk = run_check(_edited(case, tmp_path, lambda g, r: g.__setitem__("matcher.point_coords", wrong_size)))
    assert chk.report(quiet=True) == 1
    assert chk.results["replay.draws"].status == "FAIL" and "ReplayRandom" in chk.results["replay.draws"].note


def test_user_errors(tmp_path, case, capsys):
    assert check_criterion.main([str(tmp_path / "missing")]) == 2
    assert "criterion golden directory not found" in capsys.readouterr().err

    directory, recorded = case
    dst = tmp_path / "partial"
    shutil.copytree(directory, dst)
    torch.save({k: v for k, v in recorded["golden"].items() if k != "forward.dn_rand"}, dst / "golden.pt")
    assert check_criterion.main([str(dst)]) == 2
    err = capsys.readouterr().err
    assert "lacks the required entries forward.dn_rand" in err and "Traceback" not in err

    (dst / "case.yaml").write_text((dst / "case.yaml").read_text().replace("MANY_TO_ONE: false", "MANY_TO_ONE: true"))
    torch.save(recorded["golden"], dst / "golden.pt")
    assert check_criterion.main([str(dst)]) == 2
    assert "MANY_TO_ONE" in capsys.readouterr().err
