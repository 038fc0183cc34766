"""tools/gpu_check.py on CPU: command-line errors, the quick kernel stage's report, a failing stage, the
package decision of tools/gpu_check.sh and the helpers that read train_net's outputs."""
from __future__ import annotations

import json
import os

import pytest

from tools import gpu_check


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "--output DIR is required"),
        (["--output", "x", "--stages", "kernel,nope"], "unknown stage 'nope'"),
        (["--output", "x", "--stages", ","], "unknown stage '(none given)'"),
        (["--output", "x", "--device", "tpu"], "--device must be cuda or cpu"),
        (["--output", "x", "--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_usage_errors_are_one_line(argv, message, capsys):
    assert gpu_check.main(argv) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"error: {err.strip()[len('error: '):]}"]
    assert message in err and "Traceback" not in err


def test_cuda_without_a_gpu_is_a_usage_error(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--output", str(tmp_path), "--device", "cuda"]) == 2
    assert "torch.cuda.is_available() is False" in capsys.readouterr().err


def test_quick_cpu_kernel_stage_writes_json_and_markdown(tmp_path, capsys):
    assert gpu_check.main(["--output", str(tmp_path), "--quick", "--device", "cpu", "--stages", "kernel"]) == 0
    printed = capsys.readouterr().out
    assert "[gpu_check] kernel: running" in printed and "[gpu_check] kernel: pass" in printed
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["passed"] and report["settings"]["device"] == "cpu"
    assert report["environment"]["torch"]
    (stage,) = report["stages"]
    assert stage["name"] == "kernel" and stage["status"] == "pass" and stage["seconds"] > 0
    rows = stage["rows"]
    cases = {r["case"] for r in rows}
    assert {"released encoder 128 px", "odd sizes", "no query", "no image", "empty feature level",
            "float64 gradcheck"} <= cases
    # the PyTorch path (and the C++ kernel when built) against the float64 reference: float32-small errors
    pytorch32 = [r for r in rows if r["implementation"] == "PyTorch path" and r["device"] == "cpu"]
    assert pytorch32 and all(r["status"] == "pass" and r["max_rel"] < 1e-5 for r in pytorch32)
    cpu_kernel = [r for r in rows if r["implementation"] == "C++ CPU kernel" and "max_rel" in r
                  and r["dtype"] == "float64"]
    assert all(r["max_rel"] < 1e-12 for r in cpu_kernel)
    # CUDA comparisons are recorded, not dropped
    cuda_rows = [r for r in rows if r["device"] == "cuda"]
    assert cuda_rows and all(r["status"] == "skipped: no CUDA" for r in cuda_rows)
    markdown = (tmp_path / "gpu_check.md").read_text()
    assert "| kernel | pass |" in markdown and "## kernel" in markdown and "skipped: no CUDA" in markdown


def test_a_failing_stage_is_recorded_and_the_next_one_runs(tmp_path):
    def broken(check, budget):
        raise ValueError("kernel exploded\nsecond line")

    def fine(check, budget):
        return gpu_check.StageResult("parity", summary="ok", rows=[{"case": "a", "status": "pass", "x": 1.5}])

    check = gpu_check.Check(output=str(tmp_path), device="cpu", quick=True, log=lambda line: None)
    results = gpu_check.run_stages(check, ["kernel", "parity"], {"torch": "x"}, {},
                                   stages={"kernel": broken, "parity": fine})
    assert [(r.name, r.status) for r in results] == [("kernel", "error"), ("parity", "pass")]
    assert results[0].error == "ValueError: kernel exploded"
    assert "second line" in (tmp_path / "gpu_check.log").read_text()
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert not report["passed"] and [s["status"] for s in report["stages"]] == ["error", "pass"]
    assert "| kernel | error |" in (tmp_path / "gpu_check.md").read_text()


def test_stage_timeout_stops_an_in_process_stage(tmp_path, monkeypatch):
    import time

    def slow(check, budget):
        time.sleep(5)

    monkeypatch.setitem(gpu_check.BUDGET_S, "kernel", 0.2)
    check = gpu_check.Check(output=str(tmp_path), device="cpu", quick=False, log=lambda line: None)
    (result,) = gpu_check.run_stages(check, ["kernel"], {}, {}, stages={"kernel": slow})
    assert result.status == "error" and result.error.startswith("StageTimeout") and result.seconds < 2


def test_missing_distributions_with_a_fake_environment():
    present = {"detectron2", "pycocotools", "pytest", "pluggy", "iniconfig", "ninja"}
    missing = gpu_check.missing_distributions(lambda module: module in present)
    assert "sal-detectron2" not in missing and "pytest" not in missing
    assert missing[:2] == ["panopticapi-lite", "fvcore"]
    assert "antlr4-python3-runtime" in missing and "hydra-core" in missing
    assert gpu_check.missing_distributions(lambda module: True) == []
    assert len(gpu_check.missing_distributions(lambda module: False)) == len(gpu_check.PACKAGES)


def test_list_missing_and_wheel_spec_here(capsys):
    assert gpu_check.main(["--list-missing"]) == 0
    assert capsys.readouterr().out.strip() == ""  # this venv has everything
    assert gpu_check.main(["--wheel-spec"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(gpu_check.PACKAGES)
    assert any(line.startswith("sal-detectron2==0.7.2 ") for line in lines)
    assert all(line.split()[1] in ("0", "1") and "==" in line.split()[0] for line in lines)


def test_loss_judgement_and_metrics_parsing(tmp_path):
    assert gpu_check.judge_losses([(19, 9.0), (29, 7.5)])[0] == "pass"
    assert gpu_check.judge_losses([(19, 9.0), (29, 9.5)])[0] == "fail"
    assert gpu_check.judge_losses([(19, float("nan")), (29, 7.5)])[0] == "fail"
    assert gpu_check.judge_losses([(1, 3.0)]) == ("pass", "finite; falling not judged (1 write, loss 3.000)")
    assert gpu_check.judge_losses([])[0] == "fail"
    (tmp_path / "metrics.json").write_text(
        json.dumps({"iteration": 19, "total_loss": 9.0}) + "\n" + json.dumps({"iteration": 19, "lr": 1}) + "\n"
        + json.dumps({"iteration": 29, "total_loss": 7.5}) + "\n")
    assert gpu_check.training_losses(str(tmp_path)) == [(19, 9.0), (29, 7.5)]
    output = "\n".join([
        "|                   1-IoU@Max |          0.03 |",
        "[d2.evaluation.testing]: copypaste: Task: interactive",
        "[d2.evaluation.testing]: copypaste: num_segments,noc@0.9@Max",
        "[d2.evaluation.testing]: copypaste: 88.0000,20.0000",
    ])
    assert gpu_check.copypaste_metrics(output) == {
        "interactive": {"1-IoU@Max": 0.03, "num_segments": 88.0, "noc@0.9@Max": 20.0}}


def test_cuda_tests_are_found_and_selected():
    files = gpu_check.cuda_test_files()
    assert os.path.join("tests", "ops", "test_ms_deform_attn.py") in files
    assert os.path.join("tests", "tools", "test_gpu_check.py") not in files

    class Mark:
        def __init__(self, reason):
            self.kwargs = {"reason": reason}

    class Item:
        def __init__(self, *reasons):
            self.reasons = reasons

        def iter_markers(self, name):
            return [Mark(r) for r in self.reasons] if name == "skipif" else []

    assert gpu_check._cuda_skip_reason(Item("needs CUDA")) == "needs CUDA"
    assert gpu_check._cuda_skip_reason(Item("needs a GPU and semantic_sam._C built with CUDA"))
    assert gpu_check._cuda_skip_reason(Item("no C++ compiler")) is None


def test_junit_rows(tmp_path):
    (tmp_path / "r.xml").write_text(
        '<testsuites><testsuite><testcase classname="t.a" name="ok" time="0.5"/>'
        '<testcase classname="t.a" name="bad" time="1"><failure message="assert 1 == 2">x</failure></testcase>'
        '<testcase classname="t.a" name="skip" time="0"><skipped message="needs CUDA"/></testcase>'
        '</testsuite></testsuites>')
    rows = gpu_check.junit_rows(str(tmp_path / "r.xml"))
    assert [(r["case"], r["status"]) for r in rows] == [
        ("t.a::ok", "pass"), ("t.a::bad", "fail"), ("t.a::skip", "skipped: needs CUDA")]
    assert rows[1]["note"] == "assert 1 == 2"


@pytest.mark.slow
def test_quick_cpu_check_runs_every_stage(tmp_path):
    """The whole check at --quick sizes on the CPU (about a minute): nothing fails; pytest_cuda is skipped."""
    assert gpu_check.main(["--output", str(tmp_path), "--quick", "--device", "cpu"]) == 0
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    statuses = {s["name"]: s["status"] for s in report["stages"]}
    assert list(statuses) == list(gpu_check.STAGES)
    assert statuses["pytest_cuda"] == "skipped: no CUDA"
    assert all(v == "pass" for k, v in statuses.items() if k != "pytest_cuda")
