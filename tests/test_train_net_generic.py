"""train_net.py --eval_only with generic datasets: the tiny generic model (random weights) evaluated on the tiny
COCO panoptic set interactively and by whole-image segmentation, and on the Pascal-Part val fixture, in one run:
one summary table and one results JSON per dataset, with every headline number present and finite."""
from __future__ import annotations

import json
import math
import os

import pytest
import torch

from datasets.register_coco_panoptic_generic import COCO_GENERIC_VAL
from datasets.register_coco_panoptic_interactive import COCO_INTERACTIVE_VAL
from datasets.tiny_coco_panoptic import write_tiny_coco_panoptic
from semantic_sam.build import build_model
from semantic_sam.config import load_config
from tests.test_train_net import _check_ok, _invoke_train_net, _run
from tools.make_part_fixtures import make_part_fixtures

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GENERIC = os.path.join(ROOT, "configs", "semantic_sam_tiny_generic.yaml")
TEST_SETS = (COCO_INTERACTIVE_VAL, COCO_GENERIC_VAL, "pascal_part_val")
SMALL = [
    "SEED=0",
    "COCO.INPUT.MIN_SIZE_TEST=64",
    "COCO.INPUT.MAX_SIZE_TEST=96",
    "PASCAL_PART.INPUT.MIN_SIZE_TEST=64",
    "PASCAL_PART.INPUT.MAX_SIZE_TEST=96",
    "COCO.DATALOADER.NUM_WORKERS=0",
    f"DATASETS.TEST=[{','.join(repr(n) for n in TEST_SETS)}]",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("generic_eval_run")
    data = str(root / "data")
    write_tiny_coco_panoptic(data)
    make_part_fixtures(data)
    torch.manual_seed(0)
    weights = str(root / "random_generic.pth")
    torch.save({"model": build_model(load_config(GENERIC)).state_dict()}, weights)
    out = str(root / "out")
    proc = _run(["--eval_only", "--config-file", GENERIC, f"OUTPUT_DIR={out}", *SMALL, f"MODEL.WEIGHTS={weights}"],
                str(root / "no_sa1b"), data)
    return proc, out, weights


def _table(stdout: str) -> dict[str, list[str]]:
    """The summary table's rows ``{metric: [value per dataset]}`` and its header under ``"metric"``."""
    lines = stdout.splitlines()
    start = max(i for i, line in enumerate(lines) if "Evaluation summary" in line)
    rows = {}
    for line in lines[start + 1:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if set(cells[0]) <= {"-", ":"}:
            continue
        rows[cells[0]] = cells[1:]
    return rows


@pytest.mark.slow
def test_eval_only_reports_generic_and_interactive_metrics_in_one_table(run):
    proc = run[0]
    _check_ok(proc)
    rows = _table(proc.stdout)
    assert rows["metric"] == list(TEST_SETS)
    interactive, coco, parts = 0, 1, 2
    for metric in ("1-IoU@Max", "1-IoU@Oracle", "label_acc@Max"):
        assert math.isfinite(float(rows[metric][interactive])) and rows[metric][coco] == rows[metric][parts] == ""
    for metric in ("PQ", "SQ", "RQ", "PQ things", "PQ stuff", "box AP", "mask AP", "mIoU"):
        assert math.isfinite(float(rows[metric][coco])) and rows[metric][interactive] == "", metric
    for metric in ("box AP", "mask AP", "box AP50", "mask AP seen", "box AP seen"):
        assert math.isfinite(float(rows[metric][parts])), metric
    assert rows["mask AP unseen"][parts] == "nan"  # the fixture's val set has no bus or dog part


@pytest.mark.slow
def test_eval_only_writes_one_results_json_per_dataset(run):
    proc, out, weights = run
    _check_ok(proc)
    with open(os.path.join(out, "inference", COCO_INTERACTIVE_VAL, "interactive_results.json")) as f:
        interactive = json.load(f)
    assert interactive["weights"] == weights and math.isfinite(interactive["interactive"]["1-IoU@Max"])
    with open(os.path.join(out, "inference", COCO_GENERIC_VAL, "generic_results.json")) as f:
        coco = json.load(f)
    assert coco["weights"] == weights
    for task, keys in (("panoptic_seg", ("PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st")),
                       ("bbox", ("AP", "AP50", "AP75")), ("segm", ("AP", "AP50", "AP75")),
                       ("sem_seg", ("mIoU", "fwIoU", "mACC", "pACC"))):
        for key in keys:
            assert math.isfinite(coco[task][key]), (task, key)
            assert 0 <= coco[task][key] <= 100, (task, key)
    with open(os.path.join(out, "inference", "pascal_part_val", "generic_results.json")) as f:
        parts = json.load(f)
    assert set(parts) == {"bbox", "segm", "weights"}
    for task in ("bbox", "segm"):
        assert math.isfinite(parts[task]["AP"]) and math.isfinite(parts[task]["AP_seen"])
        assert parts[task]["AP_unseen"] is None and "AP50_unseen" in parts[task]
        assert len([k for k in parts[task] if k.startswith("AP-")]) == 93


def test_eval_only_refuses_a_generic_test_set_without_generic_queries(tmp_path, monkeypatch, capsys):
    """The tiny text config has no generic queries: exit 2 and one line before any model is built."""
    text = os.path.join(ROOT, "configs", "semantic_sam_tiny_text.yaml")
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "data"))
    err = _invoke_train_net(monkeypatch, capsys, ["--eval_only", "--config-file", text, f"OUTPUT_DIR={tmp_path / 'out'}",
                                                  f"DATASETS.TEST=['{COCO_GENERIC_VAL}']", "MODEL.WEIGHTS=x.pth"])
    assert "error: DATASETS.TEST: 'coco_2017_val_panoptic_generic'" in err
    assert "needs generic queries: MODEL.DECODER.NUM_OBJECT_QUERIES > 0 and a text encoder" in err
