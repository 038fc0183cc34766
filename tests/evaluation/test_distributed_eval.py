"""The evaluators in two real processes (gloo on CPU): segments are pooled on the main process."""
import json
import os

import pytest
import torch
from detectron2.engine import launch
from detectron2.structures import BitMasks, Instances
from detectron2.utils import comm

from semantic_sam.evaluation import InteractiveEvaluator, MultiGranularityEvaluator


def _image(rank: int):
    """Rank 0: a 4x4 GT = left half, outputs [left half, all] (IoU 1, 0.5), Max picks 1.
    Rank 1: GT = top row, outputs [top row, empty] (IoU 1, 0), Max picks 0.
    Object labels: rank 0's GT class is 1, its outputs are labelled [1, 0] (Oracle right, Max wrong);
    rank 1's GT class is 0, its outputs are labelled [0, 1] (Max = Oracle, right)."""
    gt = torch.zeros(4, 4, dtype=torch.bool)
    if rank == 0:
        gt[:, :2] = True
        outs = [gt, torch.ones(4, 4, dtype=torch.bool)]
        pred_ious = [0.0, 1.0]
    else:
        gt[0] = True
        outs = [gt, torch.zeros(4, 4, dtype=torch.bool)]
        pred_ious = [1.0, 0.0]
    inst = Instances((4, 4))
    inst.gt_masks = BitMasks(gt[None])
    inst.gt_object_classes = torch.tensor([1 - rank])
    inp = {"image_id": rank, "instances": inst, "points": torch.tensor([[0.0, 0.0]])}
    logits = torch.tensor([[[-1.0, 1.0], [1.0, -1.0]]]) if rank == 0 else torch.tensor([[[1.0, -1.0], [-1.0, 1.0]]])
    out = {"pred_masks": torch.stack(outs)[None].float() * 2 - 1, "pred_ious": torch.tensor([pred_ious]),
           "pred_logits": logits}
    return inp, out


def _worker(result_file: str) -> None:
    rank = comm.get_rank()
    inp, out = _image(rank)
    interactive, multi = InteractiveEvaluator(), MultiGranularityEvaluator()
    for ev in (interactive, multi):
        ev.process([inp], [out])
    results = {**interactive.evaluate(), **multi.evaluate()}
    if rank == 0:
        with open(result_file, "w") as f:
            json.dump(results, f)
    else:
        assert results == {}
    # End like train_net's launched processes: gloo's threads can abort a normal interpreter exit
    # ("terminate called without an active exception") after all the work is done.
    comm.synchronize()
    os._exit(0)


@pytest.mark.slow
def test_two_processes_pool_segments(tmp_path):
    result_file = str(tmp_path / "results.json")
    launch(_worker, num_gpus_per_machine=2, dist_url="auto", args=(result_file,))
    with open(result_file) as f:
        res = json.load(f)
    point = res["interactive"]
    assert (point["num_segments"], point["num_images"]) == (2, 2)
    assert point["1-IoU@Max"] == pytest.approx(75.0)  # (0.5 + 1) / 2
    assert point["1-IoU@Oracle"] == pytest.approx(100.0)
    assert point["token_pick_0"] == pytest.approx(50.0)
    assert point["num_labelled_segments"] == 2
    assert point["label_acc@Max"] == pytest.approx(50.0) and point["label_acc@Oracle"] == pytest.approx(100.0)
    mg = res["multi_granularity"]
    assert (mg["num_clicks"], mg["num_images"]) == (2, 2)
    assert mg["1-IoU@MultiGranularity"] == pytest.approx(100.0)
