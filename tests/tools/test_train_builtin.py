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


def test_stage1_weights_need_recognize_and_an_existing_file(tmp_path, capsys):
    import pytest

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


def test_recognize_runs_both_stage2_cycles_and_ships_the_second(tmp_path, monkeypatch):
    import tools.train_builtin as tb

    commands, exports = [], []
    monkeypatch.setattr(tb, "_run", lambda cmd, env, threads: commands.append(list(cmd)) or 0.0)

    def fake_export(src, dst):
        exports.append((src, dst))
        open(dst, "wb").close()
        return dst

    monkeypatch.setattr(tb, "export_release_checkpoint", fake_export)
    out, ckpt = str(tmp_path / "out2"), str(tmp_path / "recognize.pth")
    stage1 = "models/builtin/semantic_sam_builtin.pth"
    argv = ["--recognize", "--skip-data", "--stage1-weights", stage1, "--recognize-output-dir", out,
            "--recognize-checkpoint", ckpt, "SOLVER.BASE_LR=0.0001"]
    assert tb.main(argv) == 0
    first, second, evaluation = commands
    assert first[2:] == ["--config-file", tb.RECOGNIZE_CONFIG, f"OUTPUT_DIR={out}", f"MODEL.WEIGHTS={stage1}",
                         "SOLVER.BASE_LR=0.0001"]
    cycle2 = f"{out}/cycle2"
    assert second[2:] == ["--config-file", tb.RECOGNIZE_CYCLE2_CONFIG, f"OUTPUT_DIR={cycle2}",
                          f"MODEL.WEIGHTS={out}/model_final.pth", "SOLVER.BASE_LR=0.0001"]
    assert exports == [(f"{cycle2}/model_final.pth", ckpt)]
    assert "--eval_only" in evaluation and f"MODEL.WEIGHTS={ckpt}" in evaluation


def test_the_second_cycle_restarts_from_the_first_cycles_output():
    first = load_config("configs/semantic_sam_builtin_recognize.yaml")
    second = load_config("configs/semantic_sam_builtin_recognize_cycle2.yaml")
    assert second.MODEL.WEIGHTS == f"{first.OUTPUT_DIR}/model_final.pth"
    assert second.SEED != first.SEED and second.SOLVER.MAX_ITER > 0
    assert second.DATASETS == first.DATASETS and second.MODEL.DECODER == first.MODEL.DECODER
