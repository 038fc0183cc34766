"""Multi-granularity 1-IoU: pairwise IoU, Hungarian matching, evaluator on hand-made data."""
import json
import logging
import os

import numpy as np
import pytest
import torch
from detectron2.structures import BitMasks, Instances

from semantic_sam.evaluation import MultiGranularityEvaluator, matched_iou, pairwise_mask_iou


def _m(*rects, h=4, w=4):
    m = torch.zeros(h, w, dtype=torch.bool)
    for y0, y1, x0, x1 in rects:
        m[y0:y1, x0:x1] = True
    return m


def test_pairwise_mask_iou_hand_values():
    a = torch.stack([_m((0, 2, 0, 2)), _m()])
    b = torch.stack([_m((0, 2, 0, 2)), _m((0, 4, 0, 4)), _m((0, 1, 0, 4)), _m()])
    expected = torch.tensor([[1, 4 / 16, 2 / 6, 0], [0, 0, 0, 1]], dtype=torch.float64)
    torch.testing.assert_close(pairwise_mask_iou(a, b), expected)


def test_matched_iou_is_the_optimal_assignment_not_greedy():
    # Greedy takes 0.9 then 0.1 (mean 0.5); the best assignment is 0.8 + 0.85.
    assert matched_iou(np.array([[0.9, 0.8], [0.85, 0.1]])) == pytest.approx(0.825)
    # More GT masks than outputs: only min(G, L) pairs are averaged.
    assert matched_iou(np.array([[0.2], [0.6], [0.4]])) == pytest.approx(0.6)
    # Brute force over all assignments of a random 3x5 matrix.
    import itertools

    rng = np.random.default_rng(0)
    ious = rng.random((3, 5))
    best = max(np.mean([ious[i, p[i]] for i in range(3)]) for p in itertools.permutations(range(5), 3))
    assert matched_iou(ious) == pytest.approx(best)


def _nested_image():
    """4x4 image. GT: A = pixel (0,0), B = top-left 2x2, C = everything, D = bottom-right 2x2.

    Click 1 at (0, 0) on A lies in A, B, C. Outputs [B, C, A + (0,1)]: IoU rows A/B/C =
    [.25, 1/16, .5], [1, .25, .5], [.25, 1, .125]; best matching A-2, B-0, C-1 = (0.5+1+1)/3.
    Click 2 at (3, 3) on D lies in D, C. Outputs [D, empty, C]: D-0, C-2 = (1+1)/2.
    """
    a, b, c, d = _m((0, 1, 0, 1)), _m((0, 2, 0, 2)), _m((0, 4, 0, 4)), _m((2, 4, 2, 4))
    inst = Instances((4, 4))
    inst.gt_masks = BitMasks(torch.stack([a, b, c, d]))
    inp = {
        "image_id": 7,
        "instances": inst,
        "points": torch.tensor([[0.0, 0.0], [3.0, 3.0]]),
        "click_gt_index": torch.tensor([0, 3]),
    }
    masks = torch.stack([torch.stack([b, c, _m((0, 1, 0, 2))]), torch.stack([d, _m(), c])]).float() * 2 - 1
    out = {"pred_masks": masks, "pred_ious": torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])}
    return inp, out


def test_evaluator_hand_computed(tmp_path):
    ev = MultiGranularityEvaluator("toy", str(tmp_path), distributed=False)
    inp, out = _nested_image()
    ev.process([inp], [out])
    ev.process([{"image_id": 8, "instances": Instances((2, 2), gt_masks=BitMasks(torch.zeros(0, 2, 2))),
                 "points": torch.zeros(0, 2)}], [{}])
    res = ev.evaluate()["multi_granularity"]
    assert res["1-IoU@MultiGranularity"] == pytest.approx(100 * ((0.5 + 1 + 1) / 3 + 1) / 2)
    assert res["mean_gt_per_click"] == pytest.approx(2.5)
    assert (res["num_clicks"], res["num_images"]) == (2, 2)
    # The clicked mask alone: A scores [.25, 1/16, .5] (Max picks 0), D scores [1, 0, .25] (Max picks 2).
    assert res["1-IoU@Max"] == pytest.approx(25.0)
    assert res["1-IoU@Oracle"] == pytest.approx(75.0)
    with open(os.path.join(tmp_path, "multi_granularity_results.json")) as f:
        assert json.load(f)["multi_granularity"]["num_clicks"] == 2


def test_evaluator_errors():
    ev = MultiGranularityEvaluator(distributed=False)
    inp, out = _nested_image()
    inp["click_gt_index"] = torch.tensor([3, 3])
    with pytest.raises(ValueError, match=r"click 0 at \(0, 0\) is outside its GT mask 3"):
        ev.process([inp], [out])
    with pytest.raises(ValueError, match="expected 2 click outputs"):
        ev.process([inp], [{"pred_masks": out["pred_masks"][:1]}])


def test_evaluator_counts_skipped_records(tmp_path, caplog):
    from semantic_sam.evaluation import skipped_record_input

    ev = MultiGranularityEvaluator("toy", str(tmp_path), distributed=False)
    inp, out = _nested_image()
    ev.process([skipped_record_input("/d/sa_2.json", "annotation 0 (id 0): RLE run 3 is negative (-2)")], [{}])
    ev.process([inp], [out])
    with caplog.at_level(logging.INFO, logger="semantic_sam.evaluation"):
        res = ev.evaluate()["multi_granularity"]
    assert (res["num_clicks"], res["num_images"], res["num_skipped_records"]) == (2, 1, 1)
    assert res["1-IoU@MultiGranularity"] == pytest.approx(100 * ((0.5 + 1 + 1) / 3 + 1) / 2)  # only the good image
    with open(os.path.join(tmp_path, "multi_granularity_results.json")) as f:
        assert json.load(f)["multi_granularity"]["num_skipped_records"] == 1
    messages = [r.getMessage() for r in caplog.records]
    assert any("/d/sa_2.json: annotation 0 (id 0): RLE run 3 is negative" in m for m in messages)
    table = next(m for m in messages if "metric" in m and "multi_granularity" in m)
    row = next(line for line in table.splitlines() if "num_skipped_records" in line)
    assert [c.strip() for c in row.strip("|").split("|")] == ["num_skipped_records", "1"]
