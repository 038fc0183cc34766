"""Joint training with train_net.py (SEMANTIC_SPEC §8): SA-1B TSV + COCO panoptic labelled clicks +
Pascal-Part, each dataset its own loader, zipped per step, in 2 gloo processes; and exact resume of
the joint stream. Tiny text config at 64 px on synthetic data in the real formats
(tools/make_synthetic_sa1b.py, tools/make_part_fixtures.py, datasets/tiny_coco_panoptic.py).
"""
from __future__ import annotations

import math
import os

import pytest
import torch

from datasets.tiny_coco_panoptic import write_tiny_coco_panoptic
from tests.test_train_net import _CRASHING_TRAIN_NET, _check_ok, _last_training_metrics, _run
from tools.convert_sa1b_to_tsv import convert_sa1b_to_tsv
from tools.make_part_fixtures import main as make_part_fixtures
from tools.make_synthetic_sa1b import make_synthetic_sa1b

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_TEXT = os.path.join(ROOT, "configs", "semantic_sam_tiny_text.yaml")
DATASETS = ("sam_train", "coco_2017_train_panoptic_interactive_labelled", "pascal_part_train")
SMALL = [
    "SEED=0",
    "SAM.INPUT.IMAGE_SIZE=64",
    "COCO.INPUT.IMAGE_SIZE=64",
    "PASCAL_PART.INPUT.IMAGE_SIZE=64",
    f"DATASETS.TRAIN=[{','.join(repr(n) for n in DATASETS)}]",
    "DATASETS.TEST=[]",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("joint_data")
    make_synthetic_sa1b(str(root / "raw"), num_images=4, seed=0, size=96)
    convert_sa1b_to_tsv(str(root / "raw"), str(root / "tsv"), 2, progress=False)
    write_tiny_coco_panoptic(str(root / "labelled"))
    assert make_part_fixtures([str(root / "labelled")]) == 0
    return {"tsv": str(root / "tsv"), "labelled": str(root / "labelled")}


def _final(out: str) -> dict:
    return torch.load(os.path.join(out, "model_final.pth"), weights_only=True)


@pytest.mark.slow
def test_joint_training_in_two_gloo_processes(data, tmp_path):
    out = str(tmp_path / "joint")
    proc = _run(
        ["--num-gpus", "2", "--dist-url", "auto", "--config-file", TINY_TEXT, *SMALL, f"OUTPUT_DIR={out}",
         "SOLVER.MAX_ITER=3", "SOLVER.CHECKPOINT_PERIOD=100",
         "SAM.TRAIN.BATCH_SIZE_TOTAL=2", "COCO.TRAIN.BATCH_SIZE_TOTAL=2", "PASCAL_PART.TRAIN.BATCH_SIZE_TOTAL=4"],
        data["tsv"], data["labelled"],
    )
    _check_ok(proc)
    assert "joint training: sam_train: 2, coco_2017_train_panoptic_interactive_labelled: 2, pascal_part_train: 4" in (
        proc.stdout + proc.stderr
    )
    metrics = _last_training_metrics(out)
    for name in DATASETS:
        assert math.isfinite(metrics[f"{name}.loss_mask_bce_0"])
    # labelled clicks train the object head (COCO, parts) and the part head (parts only); SA-1B has no class loss
    assert metrics["coco_2017_train_panoptic_interactive_labelled.loss_mask_cls_0"] > 0
    assert metrics["pascal_part_train.loss_mask_cls_0"] > 0 and metrics["pascal_part_train.loss_mask_part_cls_0"] > 0
    assert not any(k.startswith("sam_train.") and "cls" in k for k in metrics)
    assert not any(k.startswith("coco_2017") and "part_cls" in k for k in metrics)
    final = _final(out)
    # every dataset's stream advanced by its own images per step (3 steps), each with its own seed
    streams = final["trainer"]["data"]["datasets"]
    assert {name: s["position"] for name, s in streams.items()} == dict(zip(DATASETS, (6, 6, 12)))
    assert streams["sam_train"]["seed"] == 0 and len({s["seed"] for s in streams.values()}) == 3
    assert any(k.startswith("sem_seg_head.predictor.lang_encoder.") for k in final["model"])


@pytest.mark.slow
def test_joint_run_killed_and_resumed_ends_with_the_same_model(data, tmp_path):
    script = tmp_path / "crashing_train_net.py"
    script.write_text(_CRASHING_TRAIN_NET)
    opts = ["--num-gpus", "1", "--config-file", TINY_TEXT, *SMALL, "SOLVER.MAX_ITER=4", "SOLVER.CHECKPOINT_PERIOD=2"]
    straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
    _check_ok(_run([*opts, f"OUTPUT_DIR={straight}"], data["tsv"], data["labelled"]))
    os.environ["CRASH_AFTER_ITER"] = "1"
    try:
        proc = _run([*opts, f"OUTPUT_DIR={killed}"], data["tsv"], data["labelled"], script=str(script))
    finally:
        del os.environ["CRASH_AFTER_ITER"]
    assert proc.returncode != 0
    proc = _run(["--resume", *opts, f"OUTPUT_DIR={killed}"], data["tsv"], data["labelled"])
    _check_ok(proc)
    assert "Starting training from iteration 2" in proc.stdout + proc.stderr
    a, b = _final(straight), _final(killed)
    assert a["trainer"]["data"] == b["trainer"]["data"]
    differ = [k for k in a["model"] if not torch.equal(a["model"][k], b["model"][k])]
    assert not differ, f"{len(differ)} of {len(a['model'])} tensors differ, e.g. {differ[:5]}"


@pytest.mark.slow
def test_resuming_with_other_datasets_is_a_user_error(data, tmp_path):
    out = str(tmp_path / "run")
    opts = ["--num-gpus", "1", "--config-file", TINY_TEXT, *SMALL, "SOLVER.CHECKPOINT_PERIOD=1", f"OUTPUT_DIR={out}"]
    _check_ok(_run([*opts, "SOLVER.MAX_ITER=1"], data["tsv"], data["labelled"]))
    proc = _run(["--resume", *opts, "SOLVER.MAX_ITER=2", "DATASETS.TRAIN=['sam_train','pascal_part_train']"],
                data["tsv"], data["labelled"])
    assert proc.returncode == 2
    assert "error: the checkpoint's data stream is of ['coco_2017_train_panoptic_interactive_labelled', " in proc.stderr
    assert "Traceback" not in proc.stderr


def test_labelled_training_data_needs_a_text_encoder(data, tmp_path):
    proc = _run(
        ["--num-gpus", "1", "--config-file", os.path.join(ROOT, "configs", "semantic_sam_tiny_cpu.yaml"), *SMALL,
         f"OUTPUT_DIR={tmp_path}", "SOLVER.MAX_ITER=1"],
        data["tsv"], data["labelled"],
    )
    assert proc.returncode == 2
    assert "error: DATASETS.TRAIN: 'coco_2017_train_panoptic_interactive_labelled' is labelled data" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_joint_training_with_generic_queries_in_two_gloo_processes(data, tmp_path):
    """SA-1B clicks + COCO panoptic (labelled clicks and generic queries with denoising) in 2 processes."""
    out = str(tmp_path / "generic")
    generic = os.path.join(ROOT, "configs", "semantic_sam_tiny_generic.yaml")
    datasets = ["--num-gpus", "2", "--dist-url", "auto", "--config-file", generic, *SMALL[:-2], "DATASETS.TEST=[]",
                "DATASETS.TRAIN=['sam_train','coco_2017_train_panoptic_interactive_labelled']",
                f"OUTPUT_DIR={out}", "SOLVER.MAX_ITER=2", "SOLVER.CHECKPOINT_PERIOD=100",
                "SAM.TRAIN.BATCH_SIZE_TOTAL=2", "COCO.TRAIN.BATCH_SIZE_TOTAL=2"]
    proc = _run(datasets, data["tsv"], data["labelled"])
    _check_ok(proc)
    metrics = _last_training_metrics(out)
    coco = "coco_2017_train_panoptic_interactive_labelled."
    for key in ("generic_loss_mask_cls_0", "generic_loss_mask_dice_0", "generic_loss_bbox_0_interm",
                "generic_loss_mask_cls_0_dn", "loss_mask_cls_0"):
        assert math.isfinite(metrics[coco + key]), key
    assert not any(k.startswith("sam_train.generic") for k in metrics)  # SA-1B images get no generic queries
    assert any(k.endswith("enc_output.weight") for k in _final(out)["model"])
