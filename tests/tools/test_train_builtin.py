import pytest
import torch

from semantic_sam import build_model
from semantic_sam.checkpoint import load_checkpoint
from semantic_sam.config import load_config
from tools.train_builtin import export_release_checkpoint


def test_export_writes_a_half_precision_release_checkpoint_that_loads_strictly(tmp_path):
    torch.manual_seed(0)
    cfg = load_config("configs/semantic_sam_tiny_cpu.yaml")
    trained = build_model(cfg)
    src = tmp_path / "model_final.pth"
    torch.save({"model": trained.state_dict(), "iteration": 19}, src)  # detectron2's layout
    dst = export_release_checkpoint(str(src), str(tmp_path / "release.pth"))

    raw = torch.load(dst, weights_only=True)
    assert all(k.startswith("model.") for k in raw)
    assert {v.dtype for v in raw.values() if v.is_floating_point()} == {torch.float16}
    # shared (aliased) tensors are stored once
    ptrs = {v.untyped_storage().data_ptr() for v in raw.values()}
    assert len(ptrs) < len(raw)

    fresh = build_model(cfg)
    report = load_checkpoint(fresh, dst, strict=True)
    assert report.ok
    for (k, a), b in zip(trained.state_dict().items(), fresh.state_dict().values()):
        if a.is_floating_point():
            torch.testing.assert_close(b, a.half().float(), rtol=0, atol=0, msg=k)
        else:
            assert torch.equal(a, b), k


def test_cycles_need_recognize(capsys):
    import tools.train_builtin as tb

    with pytest.raises(SystemExit):
        tb.main(["--skip-data", "--cycles", "2"])
    assert "--cycles needs --recognize" in capsys.readouterr().err


def test_stage1_weights_need_recognize_and_an_existing_file(tmp_path, capsys):
    from tools.train_builtin import main

    with pytest.raises(SystemExit):
        main(["--stage1-weights", "models/builtin/semantic_sam_builtin.pth"])
    assert "--stage1-weights needs --recognize" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--recognize", "--stage1-weights", str(tmp_path / "nope.pth")])
    assert f"--stage1-weights: no such file: {tmp_path / 'nope.pth'}" in capsys.readouterr().err


def test_recognize_config_starts_from_the_shipped_stage1_and_names_the_heldout_sets():
    cfg = load_config("configs/semantic_sam_builtin_recognize.yaml")
    assert cfg.MODEL.WEIGHTS == "models/builtin/semantic_sam_builtin.pth"
    assert cfg.MODEL.TEXT.ARCH == "unicl" and cfg.MODEL.DECODER.NUM_OBJECT_QUERIES > 0
    assert set(cfg.DATASETS.TEST) >= {
        "builtin_panoptic_val_interactive", "builtin_parts_val_interactive", "builtin_panoptic_val_generic"
    }


STAGE1 = "models/builtin/semantic_sam_builtin.pth"


def _recognize_commands(tmp_path, monkeypatch, *extra):
    """The commands and exports of ``train_builtin --recognize`` from the shipped stage 1, with nothing run."""
    import tools.train_builtin as tb

    commands, exports = [], []
    monkeypatch.setattr(tb, "_run", lambda cmd, env, threads: commands.append(list(cmd)) or 0.0)

    def fake_export(src, dst):
        exports.append((src, dst))
        open(dst, "wb").close()
        return dst

    monkeypatch.setattr(tb, "export_release_checkpoint", fake_export)
    out, ckpt = str(tmp_path / "out2"), str(tmp_path / "recognize.pth")
    argv = ["--recognize", "--skip-data", "--stage1-weights", STAGE1, "--recognize-output-dir", out,
            "--recognize-checkpoint", ckpt, *extra, "SOLVER.BASE_LR=0.0001"]
    assert tb.main(argv) == 0
    return commands, exports, out, ckpt


@pytest.mark.parametrize("cycles", [None, 1, 2, 3])
def test_recognize_chains_its_stage2_cycles_and_ships_the_last(tmp_path, monkeypatch, cycles):
    import tools.train_builtin as tb

    extra = [] if cycles is None else ["--cycles", str(cycles)]
    commands, exports, out, ckpt = _recognize_commands(tmp_path, monkeypatch, *extra)
    n = tb.RECOGNIZE_CYCLES if cycles is None else cycles
    assert len(commands) == n + 1
    *trains, evaluation = commands
    assert trains[0][2:] == ["--config-file", tb.RECOGNIZE_CONFIG, f"OUTPUT_DIR={out}", f"MODEL.WEIGHTS={STAGE1}",
                             "SOLVER.BASE_LR=0.0001"]
    dirs = [out] + [f"{out}/cycle{k}" for k in range(2, n + 1)]
    for k in range(2, n + 1):
        assert trains[k - 1][2:] == [
            "--config-file", tb.RECOGNIZE_RESTART_CONFIG, f"OUTPUT_DIR={dirs[k - 1]}",
            f"MODEL.WEIGHTS={dirs[k - 2]}/model_final.pth", f"SEED={15 + k}", "SOLVER.BASE_LR=0.0001",
        ]
    assert exports == [(f"{dirs[-1]}/model_final.pth", ckpt)]
    assert "--eval_only" in evaluation and f"MODEL.WEIGHTS={ckpt}" in evaluation


def test_recognize_needs_at_least_one_cycle(tmp_path, monkeypatch, capsys):
    with pytest.raises(SystemExit):
        _recognize_commands(tmp_path, monkeypatch, "--cycles", "0")
    assert "--cycles: expected at least 1, got 0" in capsys.readouterr().err


def test_the_second_cycle_restarts_from_the_first_cycles_output():
    first = load_config("configs/semantic_sam_builtin_recognize.yaml")
    second = load_config("configs/semantic_sam_builtin_recognize_restart.yaml")
    assert second.MODEL.WEIGHTS == f"{first.OUTPUT_DIR}/model_final.pth"
    assert second.OUTPUT_DIR == f"{first.OUTPUT_DIR}/cycle2" and second.SEED == 15 + 2
    assert second.SEED != first.SEED and second.SOLVER.MAX_ITER > 0
    assert second.DATASETS == first.DATASETS and second.MODEL.DECODER == first.MODEL.DECODER


def test_resume_skips_finished_cycles_and_resumes_the_rest(tmp_path, monkeypatch, capsys):
    import tools.train_builtin as tb

    out = tmp_path / "out2"
    for done in (out, out / "cycle2"):  # cycles 1 and 2 finished, cycle 3 was killed
        done.mkdir(parents=True)
        (done / "model_final.pth").write_bytes(b"")
    commands, exports, out, ckpt = _recognize_commands(tmp_path, monkeypatch, "--cycles", "4", "--resume")
    *trains, evaluation = commands
    assert [c[2:5] for c in trains] == [
        ["--resume", "--config-file", tb.RECOGNIZE_RESTART_CONFIG],
        ["--resume", "--config-file", tb.RECOGNIZE_RESTART_CONFIG],
    ]
    assert [c[5:8] for c in trains] == [
        [f"OUTPUT_DIR={out}/cycle3", f"MODEL.WEIGHTS={out}/cycle2/model_final.pth", "SEED=18"],
        [f"OUTPUT_DIR={out}/cycle4", f"MODEL.WEIGHTS={out}/cycle3/model_final.pth", "SEED=19"],
    ]
    assert exports == [(f"{out}/cycle4/model_final.pth", ckpt)] and "--resume" not in evaluation
    printed = capsys.readouterr().out
    assert f"{out}/model_final.pth exists" in printed and f"{out}/cycle2/model_final.pth exists" in printed


def test_without_resume_every_cycle_trains_from_scratch_even_if_outputs_exist(tmp_path, monkeypatch):
    out = tmp_path / "out2"
    out.mkdir()
    (out / "model_final.pth").write_bytes(b"")
    commands, _, _, _ = _recognize_commands(tmp_path, monkeypatch, "--cycles", "2")
    assert len(commands) == 3 and not any("--resume" in c for c in commands)
