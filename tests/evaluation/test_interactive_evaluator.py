"""InteractiveEvaluator on hand-made predictions against hand-computed metrics."""
import json
import logging
from collections import OrderedDict

import numpy as np
import pytest
import torch

from semantic_sam.evaluation import InteractiveEvaluator, PromptedInference
from semantic_sam.evaluation import interactive_evaluator as ie
from semantic_sam.evaluation import interactive_metrics as im
from tests.utils.interactive_cases import (
    POINT_IOUS,
    _check,
    _expected_point_metrics,
    _image_a,
    _image_b,
    _image_c,
    _labelled_images,
)


def test_evaluator_points_and_boxes(tmp_path):
    ev = InteractiveEvaluator("toy", str(tmp_path), distributed=False)
    ev.reset()
    for inp, out in (_image_a(), _image_b()):
        ev.process([inp], [out])
    ev.process(*map(list, zip(_image_c())))
    res = ev.evaluate()
    assert isinstance(res, OrderedDict) and list(res) == ["interactive", "box"]
    _check(res["interactive"], _expected_point_metrics())
    _check(
        res["box"],
        {
            "num_segments": 2,
            "1-IoU@Max": 50.0,
            "1-IoU@Oracle": 50.0,
            "mIoU_token_0": 50.0,
            "mIoU_token_1": 50.0,
            "mIoU_token_2": 0.0,
            "token_pick_0": 50.0,
            "token_pick_1": 50.0,
        },
    )
    with open(tmp_path / "interactive_results.json") as f:
        assert json.load(f) == json.loads(json.dumps(res))
    with open(tmp_path / "interactive_per_segment.json") as f:
        records = json.load(f)
    assert [(r["kind"], r["image_id"], r["segment_id"], r["pick"]) for r in records] == [
        ("point", 11, 5, 1), ("point", 11, 6, 0), ("box", 11, 5, 1), ("box", 11, 6, 0), ("point", 13, 0, 2)
    ]
    assert records[0]["prompt"] == [0.0, 0.0] and records[2]["prompt"] == [0.0, 0.0, 2.0, 2.0]
    np.testing.assert_allclose(records[1]["ious"], POINT_IOUS[1])
    table = im.format_results_table(res)
    assert "1-IoU@Max" in table and "interactive" in table and "box" in table

    ev.reset()
    assert ev.evaluate()["interactive"]["num_segments"] == 0


def test_evaluator_pools_segments_over_processes(monkeypatch):
    # Rank 0 saw images A and B, rank 1 image C: the main process pools all segments.
    other = InteractiveEvaluator(distributed=False)
    other.process(*map(list, zip(_image_c())))
    ev = InteractiveEvaluator()
    for inp, out in (_image_a(), _image_b()):
        ev.process([inp], [out])
    monkeypatch.setattr(ie.comm, "get_world_size", lambda: 2)
    monkeypatch.setattr(ie.comm, "synchronize", lambda: None)
    monkeypatch.setattr(
        ie.comm, "gather", lambda data, dst=0: [data, other._segments if data is ev._segments else other._images]
    )
    monkeypatch.setattr(ie.comm, "is_main_process", lambda: True)
    _check(ev.evaluate()["interactive"], _expected_point_metrics())
    monkeypatch.setattr(ie.comm, "is_main_process", lambda: False)
    assert ev.evaluate() == {}


def test_evaluator_errors():
    ev = InteractiveEvaluator(distributed=False)
    inp, out = _image_a()
    with pytest.raises(ValueError, match=r"image 11: expected 4 prompt outputs, got \(2, 3, 4, 4\)"):
        ev.process([inp], [{"pred_masks": out["pred_masks"][:2], "pred_ious": out["pred_ious"][:2]}])
    inp["points"] = inp["points"][:1]
    with pytest.raises(ValueError, match="1 point prompts for 2 GT segments"):
        ev.process([inp], [out])
    with pytest.raises(KeyError, match="instances"):
        ev.process([{"image_id": 1}], [{}])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_evaluator_on_cuda_outputs_matches_cpu():
    results = []
    for device in ("cpu", "cuda"):
        ev = InteractiveEvaluator(distributed=False)
        for inp, out in (_image_a(), _image_b(), _image_c()):
            ev.process([inp], [{k: v.to(device) for k, v in out.items()}])
        results.append(ev.evaluate())
    assert results[0] == results[1]


def test_skipped_records_are_counted_and_logged_not_scored(tmp_path, caplog):
    skipped = ie.skipped_record_input("/data/minival/sa_7.json", "annotation 3 (id 9): RLE counts cover 5 pixels")
    wrapper_calls = []

    class Fake(torch.nn.Module):
        def inference(self, batched_inputs, **kwargs):
            wrapper_calls.append(len(batched_inputs))
            return [{"pred_masks": torch.zeros(len(x["points"]), 1, 2, 2)} for x in batched_inputs]

    assert PromptedInference(Fake())([skipped]) == [{}] and wrapper_calls == []  # the model never sees it

    ev = InteractiveEvaluator("toy", str(tmp_path), distributed=False)
    for inp, out in (_image_a(), _image_b()):
        ev.process([inp], [out])
    ev.process([skipped], [{}])
    ev.process(*map(list, zip(_image_c())))
    with caplog.at_level(logging.INFO, logger="semantic_sam.evaluation.interactive_evaluator"):
        res = ev.evaluate()
    expected = dict(_expected_point_metrics(), num_skipped_records=1)  # the same scores, 3 images
    _check(res["interactive"], expected)
    assert res["box"]["num_segments"] == 2 and "num_skipped_records" not in res["box"]
    with open(tmp_path / "interactive_results.json") as f:
        assert json.load(f)["interactive"]["num_skipped_records"] == 1
    log = "\n".join(r.getMessage() for r in caplog.records)
    assert "skipped 1 unreadable record(s):\n  /data/minival/sa_7.json: annotation 3 (id 9)" in log
    table = next(r.getMessage() for r in caplog.records if "metric" in r.getMessage())
    row = next(line for line in table.splitlines() if "num_skipped_records" in line)
    assert [c.strip() for c in row.strip("|").split("|")] == ["num_skipped_records", "1", ""]

    ev.reset()
    ev.process(*map(list, zip(_image_c())))
    assert ev.evaluate()["interactive"]["num_skipped_records"] == 0


# ------------------------------------------------------------------------------------------ object labels
def test_evaluator_scores_object_labels_of_max_and_oracle(tmp_path):
    ev = InteractiveEvaluator("toy", str(tmp_path), distributed=False)
    (a_in, a_out), (c_in, c_out) = _labelled_images()
    ev.process([a_in], [a_out])
    ev.process(*map(list, zip(_image_b())))  # no segment: nothing to label
    ev.process([c_in], [c_out])
    res = ev.evaluate()
    # The IoU metrics are those of the same predictions without logits.
    _check(res["interactive"], _expected_point_metrics())
    _check(res["interactive"], {"num_labelled_segments": 3, "label_acc@Max": 100 / 3, "label_acc@Oracle": 100.0})
    _check(res["box"], {"num_labelled_segments": 2, "label_acc@Max": 50.0, "label_acc@Oracle": 100.0})
    with open(tmp_path / "interactive_results.json") as f:
        assert json.load(f) == json.loads(json.dumps(res))
    with open(tmp_path / "interactive_per_segment.json") as f:
        records = json.load(f)
    assert [(r["object_labels"], r["gt_object_class"]) for r in records] == [
        ([2, 0, 1], 2), ([0, 2, 1], 1), ([2, 1, 0], 2), ([1, 0, 0], 1), ([2, 1, 0], 0)
    ]
    assert "label_acc@Oracle" in im.format_results_table(res)


def test_evaluator_without_logits_has_no_label_keys(tmp_path):
    ev = InteractiveEvaluator("toy", str(tmp_path), distributed=False)
    (a_in, a_out), _ = _labelled_images()
    a_out.pop("pred_logits")
    ev.process([a_in], [a_out])  # GT classes and a vocabulary in the input do not matter
    res = ev.evaluate()
    assert not any("label" in k for r in res.values() for k in r)
    with open(tmp_path / "interactive_per_segment.json") as f:
        assert not any("object_labels" in r for r in json.load(f))


def test_evaluator_pools_object_labels_over_processes(monkeypatch):
    (a_in, a_out), (c_in, c_out) = _labelled_images()
    other = InteractiveEvaluator(distributed=False)
    other.process([c_in], [c_out])
    ev = InteractiveEvaluator()
    ev.process([a_in], [a_out])
    monkeypatch.setattr(ie.comm, "get_world_size", lambda: 2)
    monkeypatch.setattr(ie.comm, "synchronize", lambda: None)
    monkeypatch.setattr(
        ie.comm, "gather", lambda data, dst=0: [data, other._segments if data is ev._segments else other._images]
    )
    monkeypatch.setattr(ie.comm, "is_main_process", lambda: True)
    _check(ev.evaluate()["interactive"], {"num_labelled_segments": 3, "label_acc@Max": 100 / 3,
                                          "label_acc@Oracle": 100.0})


def test_evaluator_label_errors():
    (a_in, a_out), _ = _labelled_images()
    a_in["instances"].remove("gt_object_classes")
    with pytest.raises(KeyError, match="image 11: the outputs have object logits but the input has no "
                                       "instances.gt_object_classes"):
        InteractiveEvaluator(distributed=False).process([a_in], [a_out])
    (a_in, a_out), (c_in, c_out) = _labelled_images()
    with pytest.raises(ValueError, match=r"image 11: pred_logits \(2, 3, 3\)"):
        InteractiveEvaluator(distributed=False).process([a_in], [dict(a_out, pred_logits=a_out["pred_logits"][:2])])
    ev = InteractiveEvaluator("toy", distributed=False)
    ev.process([a_in], [a_out])
    c_out.pop("pred_logits")
    ev.process([c_in], [c_out])
    with pytest.raises(ValueError, match="toy: 2 of 3 point segments have object labels"):
        ev.evaluate()
