"""tools/check_parity.py passes on the reference's golden data and fails when it is corrupted."""
import os
import shutil
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PARITY = os.path.join(ROOT, "tests", "fixtures", "parity_tiny")
TOOL = os.path.join(ROOT, "tools", "check_parity.py")


def _run(directory: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, TOOL, directory, "--threads", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _copy_fixture(tmp_path, golden_edit):
    dst = tmp_path / "parity"
    dst.mkdir()
    for name in ("tiny_parity.yaml", "tiny_parity.pth", "image.png"):
        shutil.copy(os.path.join(PARITY, name), dst / name)
    golden = torch.load(os.path.join(PARITY, "golden.pt"), map_location="cpu", weights_only=True)
    golden_edit(golden)
    torch.save(golden, dst / "golden.pt")
    return str(dst)


@pytest.mark.slow
def test_parity_passes_on_golden_data():
    proc = _run(PARITY)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "102 golden tensors: 102 passed, 0 failed" in proc.stdout
    assert "FAIL" not in proc.stdout


@pytest.mark.slow
def test_parity_fails_on_a_corrupted_tensor(tmp_path):
    def corrupt(g):
        g["eval_full.decoder.hs1"] = g["eval_full.decoder.hs1"] + 1e-3
        g["eval_direct.max_index"] = (g["eval_direct.max_index"] + 1) % 6

    proc = _run(_copy_fixture(tmp_path, corrupt))
    assert proc.returncode == 1, proc.stdout[-4000:] + proc.stderr[-4000:]
    failed = [line for line in proc.stdout.splitlines() if line.startswith("FAIL")]
    assert [line.split()[1] for line in failed] == ["eval_full.decoder.hs1", "eval_direct.max_index"]
    assert "2 failed" in proc.stdout


def test_a_golden_tensor_that_is_not_compared_fails(tmp_path):
    """In-process (faster): an unknown golden entry counts as a failure."""
    sys.path.insert(0, ROOT)
    try:
        from tools.check_parity import run_parity
    finally:
        sys.path.remove(ROOT)

    directory = _copy_fixture(tmp_path, lambda g: g.__setitem__("eval_full.something_new", torch.zeros(3)))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        chk = run_parity(directory)
    finally:
        torch.set_num_threads(threads)
    assert chk.report(quiet=True) == 1
    assert chk.results["eval_full.something_new"].note == "NOT COMPARED"
    assert sum(r.status == "FAIL" for r in chk.results.values()) == 1
