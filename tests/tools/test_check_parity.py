"""tools/check_parity.py: passes on the reference's golden data, reads every input of a case from its
golden directory (a second case, rearranged from the reference's own tensors, passes; changing one
recorded input makes it fail), and fails when a golden tensor is corrupted.

Set ``SEMANTIC_SAM_PARITY_GOLDEN`` to another directory in the format of ``tests/fixtures/parity_tiny``
to run the check on it as well.
"""
import os
import shutil
import subprocess
import sys

from typing import Optional

import pytest
import torch

from tests.fixture_files import PARITY, ROOT
from tools import check_parity
from tools.check_parity import GoldenFormatError, find_eval_seed, run_parity

ENV = "SEMANTIC_SAM_PARITY_GOLDEN"
K = 6  # tokens per click of the tiny parity model
SHIPPED_ORDER = [2, 0, 1]  # eval_full.click_gt_index of the shipped case (torch.manual_seed(0))


@pytest.fixture(scope="module")
def golden():
    return torch.load(os.path.join(PARITY, "golden.pt"), map_location="cpu", weights_only=True)


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _run(directory: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tools.check_parity", directory, "--threads", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _write_case(tmp_path, golden: dict, readme: Optional[str] = None, name: str = "parity") -> str:
    """A golden directory: the shipped config, checkpoint and image with ``golden`` (and ``readme``)."""
    dst = tmp_path / name
    dst.mkdir()
    for f in ("tiny_parity.yaml", "tiny_parity.pth", "image.png"):
        shutil.copy(os.path.join(PARITY, f), dst / f)
    torch.save(golden, dst / "golden.pt")
    if readme is not None:
        (dst / "README.md").write_text(readme)
    return str(dst)


def _failed(chk) -> set:
    return {name for name, r in chk.results.items() if r.status == "FAIL"}


# ------------------------------------------------------------------------------------------------
# A second case from the reference's own tensors. With no attention mask the demo decoder is
# equivariant to the order of its points, and it decodes all K tokens before the level selection;
# with the block-diagonal mask every eval click is decoded on its own. So reordering the demo points,
# keeping other levels and drawing another eval click order rearranges the golden tensors exactly.
# ------------------------------------------------------------------------------------------------
def _blocks(t: torch.Tensor, order, dim: int) -> torch.Tensor:
    """Reorder the click blocks of the query axis ``dim`` (size clicks * K; query i*K + k)."""
    shape = t.shape
    n = len(order)
    v = t.reshape(*shape[:dim], n, K, *shape[dim + 1 :])
    return v.index_select(dim, torch.as_tensor(order)).reshape(shape)


def _reorder_decoder(t: torch.Tensor, name: str, order) -> torch.Tensor:
    if name.endswith(("self_attn_mask_used", "self_attn_mask")):
        return t  # the same mode / the same block-diagonal mask for any click order
    if name.endswith("pred_ious"):  # (1, clicks, K)
        return t[:, torch.as_tensor(order)]
    return _blocks(t, order, 1)  # (1, clicks * K, ...)


def derived_golden(golden: dict, demo_order, tokens, seed: int) -> dict:
    """The golden tensors of the case: demo points ``points[demo_order]``, demo tokens ``tokens``, eval
    click order drawn after ``torch.manual_seed(seed)``."""
    g = dict(golden)
    p = torch.as_tensor(demo_order)
    tok = torch.as_tensor(tokens)
    for name, t in golden.items():
        if name.startswith("demo.decoder."):
            g[name] = _reorder_decoder(t, name, demo_order)
    g["demo.points"] = golden["demo.points"][p]
    g["demo.points_padded_frame"] = golden["demo.points_padded_frame"][p]
    g["demo.level"] = tok.clone()
    masks = golden["demo.pred_masks"]
    g["demo.pred_masks"] = masks.view(-1, K, *masks.shape[-2:])[p][:, tok].flatten(0, 1).contiguous()
    g["demo.pred_ious"] = golden["demo.pred_ious"][:, p][:, :, tok].contiguous()

    torch.manual_seed(seed)
    new_order = torch.randperm(len(SHIPPED_ORDER)).tolist()
    idx = [SHIPPED_ORDER.index(gt) for gt in new_order]  # shipped eval_full row of each new click
    rows = torch.as_tensor(idx)
    for name, t in golden.items():
        if not name.startswith("eval_full."):
            continue
        if name.startswith("eval_full.decoder."):
            g[name] = _reorder_decoder(t, name, idx)
        elif name in ("eval_full.pred_masks_fullres_logits", "eval_full.pred_masks_binary"):
            g[name] = _blocks(t, idx, 0)
        elif name in ("eval_full.gt_masks", "eval_full.gt_boxes_xyxy", "eval_full.pb"):
            g[name] = t  # GT order / all zeros
        else:  # clicks_xy, points_padded_frame, boxes_dn, max_index, pred_masks_max, iou_max, iou_oracle
            g[name] = t[rows]
    g["eval_full.click_gt_index"] = torch.as_tensor(new_order)
    return {name: t.contiguous() for name, t in g.items()}


DEMO_ORDER, TOKENS, SEED = [1, 2, 0], [5, 0, 3], 1


@pytest.mark.slow
def test_parity_passes_on_golden_data():
    proc = _run(PARITY)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "102 golden tensors: 102 passed, 0 failed" in proc.stdout
    assert "FAIL" not in proc.stdout and "WARN" not in proc.stdout
    assert "seed from README.md: torch.manual_seed(0)" in proc.stdout


@pytest.mark.slow
def test_parity_passes_on_the_golden_directory_of_the_environment(one_thread, capsys):
    directory = os.environ.get(ENV)
    if not directory:
        pytest.skip(f"{ENV} is not set")
    code = check_parity.main([directory, "--quiet"])
    assert code == 0, capsys.readouterr().out[-4000:]


@pytest.mark.slow
def test_parity_fails_on_a_corrupted_tensor(tmp_path, golden):
    corrupt = dict(golden)
    corrupt["eval_full.decoder.hs1"] = golden["eval_full.decoder.hs1"] + 1e-3
    corrupt["eval_direct.max_index"] = (golden["eval_direct.max_index"] + 1) % 6
    with open(os.path.join(PARITY, "README.md"), encoding="utf-8") as f:
        proc = _run(_write_case(tmp_path, corrupt, readme=f.read()))
    assert proc.returncode == 1, proc.stdout[-4000:] + proc.stderr[-4000:]
    failed = [line for line in proc.stdout.splitlines() if line.startswith("FAIL")]
    assert [line.split()[1] for line in failed] == ["eval_full.decoder.hs1", "eval_direct.max_index"]
    assert "2 failed" in proc.stdout


def test_a_golden_tensor_that_is_not_compared_fails(tmp_path, golden, one_thread):
    """In-process (faster): an unknown golden entry counts as a failure."""
    extra = dict(golden, **{"eval_full.something_new": torch.zeros(3)})
    chk = run_parity(_write_case(tmp_path, extra, readme="torch.manual_seed(0)"))
    assert chk.report(quiet=True) == 1
    assert chk.results["eval_full.something_new"].note == "NOT COMPARED"
    assert _failed(chk) == {"eval_full.something_new"}


@pytest.mark.slow
def test_a_second_case_with_other_demo_points_levels_and_seed_passes(tmp_path, golden, one_thread):
    """The inputs come from golden.pt: demo points in another order, 3 of the 6 tokens in another
    order, the eval click order of seed 1 (here recorded as golden.pt's optional 'eval_full.seed')."""
    case = derived_golden(golden, DEMO_ORDER, TOKENS, SEED)
    assert case["eval_full.click_gt_index"].tolist() != SHIPPED_ORDER
    case["eval_full.seed"] = torch.tensor(SEED)
    chk = run_parity(_write_case(tmp_path, case))
    assert chk.report(quiet=True) == 0
    assert chk.results["eval_full.click_gt_index"].note == "seed from golden.pt 'eval_full.seed'"
    assert chk.results["eval_full.seed"].status == "ok"
    assert chk.results["demo.pred_masks"].status == "ok" and case["demo.pred_masks"].shape[0] == 3 * len(TOKENS)


@pytest.mark.slow
def test_changed_levels_and_seed_make_the_check_fail(tmp_path, golden, one_thread):
    """Negative control: the same tensors with another demo.level and another README seed. Each
    changed input fails exactly the tensors that depend on it."""
    case = derived_golden(golden, DEMO_ORDER, TOKENS, SEED)
    case["demo.level"] = torch.tensor([5, 3, 0])
    torch.manual_seed(2)
    assert torch.randperm(3).tolist() != case["eval_full.click_gt_index"].tolist()
    chk = run_parity(_write_case(tmp_path, case, readme="Run right after `torch.manual_seed(2)`.\n"))
    assert chk.report(quiet=True) == 1
    failed = _failed(chk)
    assert {f for f in failed if f.startswith("demo.")} == {"demo.pred_masks", "demo.pred_ious"}
    assert "eval_full.click_gt_index" in failed and "eval_full.decoder.hs2" in failed
    assert all(f.startswith(("demo.", "eval_full.")) for f in failed), failed
    assert chk.results["eval_full.click_gt_index"].note == "seed from README.md: torch.manual_seed(2)"


@pytest.mark.slow
def test_changed_demo_points_make_the_check_fail_and_a_missing_seed_is_reported(tmp_path, golden, one_thread):
    """Negative control: demo.points in the shipped order with the outputs of the reordered points.
    Without a seed the recorded click order is used and its row says so (WARN); eval_full passes."""
    case = derived_golden(golden, DEMO_ORDER, TOKENS, SEED)
    case["demo.points"] = golden["demo.points"]
    chk = run_parity(_write_case(tmp_path, case))
    assert chk.report(quiet=True) == 1
    failed = _failed(chk)
    assert {"demo.points_padded_frame", "demo.decoder.hs2", "demo.pred_masks"} <= failed
    assert all(f.startswith("demo.") for f in failed), failed
    order = chk.results["eval_full.click_gt_index"]
    assert order.status == "WARN" and "no seed" in order.note and "README.md" in order.note


def test_seed_sources(tmp_path):
    assert find_eval_seed(PARITY, {}) == (0, "README.md: torch.manual_seed(0)")
    assert find_eval_seed(PARITY, {"eval_full.seed": torch.tensor(3)}) == (3, "golden.pt 'eval_full.seed'")
    seed, why = find_eval_seed(str(tmp_path), {})
    assert seed is None and "no seed" in why
    (tmp_path / "README.md").write_text("`torch.manual_seed(1)`, `torch.manual_seed(seed)`, `torch.manual_seed(4)`")
    with pytest.raises(GoldenFormatError, match=r"different seeds \[1, 4\].*eval_full.seed"):
        find_eval_seed(str(tmp_path), {})
    with pytest.raises(GoldenFormatError, match="0-d integer"):
        find_eval_seed(str(tmp_path), {"eval_full.seed": torch.tensor([1.0])})


def test_missing_and_malformed_inputs_are_user_errors(tmp_path, golden, capsys):
    partial = {k: v for k, v in golden.items() if k.startswith("demo.") and k != "demo.level"}
    assert check_parity.main([_write_case(tmp_path, partial, name="partial")]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "lacks the required entries" in err
    assert "demo.level" in err and "eval_full.gt_masks" in err

    bad = dict(golden, **{"demo.level": torch.tensor([0, K])})
    assert check_parity.main([_write_case(tmp_path, bad, readme="torch.manual_seed(0)", name="bad")]) == 2
    err = capsys.readouterr().err
    assert "demo.level" in err and "[0, 6)" in err and "Traceback" not in err
