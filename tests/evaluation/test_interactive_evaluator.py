"""InteractiveEvaluator on hand-made predictions against hand-computed metrics."""
import json
import logging
from collections import OrderedDict

import numpy as np
import pytest
import torch
from detectron2.structures import BitMasks, Instances

from semantic_sam.evaluation import InteractiveEvaluator, PromptedInference, mask_ious, summarize_ious
from semantic_sam.evaluation import interactive_evaluator as ie
from semantic_sam.evaluation import interactive_metrics as im
from semantic_sam.evaluation import prompted_inference as pi


def _m(h, w, *rects):
    """(H, W) bool mask, True inside the (y0, y1, x0, x1) rectangles."""
    m = torch.zeros(h, w, dtype=torch.bool)
    for y0, y1, x0, x1 in rects:
        m[y0:y1, x0:x1] = True
    return m


def _logits(*masks):
    """(L, H, W) logits: +1 inside each mask, -1 outside."""
    return torch.stack(masks).float() * 2 - 1


def _input(image_id, gt, points, boxes=None):
    inst = Instances(gt.shape[-2:])
    inst.gt_masks = BitMasks(gt)
    d = {"image_id": image_id, "instances": inst, "points": torch.tensor(points, dtype=torch.float32)}
    if boxes is not None:
        d["boxes"] = torch.tensor(boxes, dtype=torch.float32)
    return d


def _image_a():
    """4x4 image, GT0 = top-left 2x2, GT1 = right half; point and box prompts.

    Points, segment 0: outputs [GT0 (IoU 1), top row (2/6), empty (0)], predicted IoU picks 1.
    Points, segment 1: outputs [all (8/16), last column (4/8), GT1 (1)], tie 0.7/0.7 -> first (0).
    Boxes: segment 0 outputs [GT0, GT0, empty], picks 1 (IoU 1); segment 1 all empty (IoU 0).
    """
    gt0, gt1 = _m(4, 4, (0, 2, 0, 2)), _m(4, 4, (0, 4, 2, 4))
    empty = _m(4, 4)
    masks = torch.stack(
        [
            _logits(gt0, _m(4, 4, (0, 1, 0, 4)), empty),
            _logits(_m(4, 4, (0, 4, 0, 4)), _m(4, 4, (0, 4, 3, 4)), gt1),
            _logits(gt0, gt0, empty),
            _logits(empty, empty, empty),
        ]
    )
    ious = torch.tensor([[0.1, 0.9, 0.5], [0.7, 0.2, 0.7], [0.0, 1.0, 0.0], [0.3, 0.2, 0.1]])
    inp = _input(11, torch.stack([gt0, gt1]), [[0, 0], [3, 1]], boxes=[[0, 0, 2, 2], [2, 0, 4, 4]])
    inp["segment_ids"] = torch.tensor([5, 6])
    return inp, {"pred_masks": masks, "pred_ious": ious}


def _image_b():
    """No GT segment (only crowd): no prompts, empty output."""
    inp = _input(12, torch.zeros(0, 5, 5, dtype=torch.bool), [])
    inp["points"] = torch.zeros(0, 2)
    inp["num_dropped_segments"] = 1
    return inp, {}


def _image_c():
    """3x3 image, GT = everything; outputs 3/9, 6/9, 9/9 px; picks 2."""
    gt = _m(3, 3, (0, 3, 0, 3))
    masks = _logits(_m(3, 3, (0, 1, 0, 3)), _m(3, 3, (0, 2, 0, 3)), gt)[None]
    return _input(13, gt[None], [[1, 1]]), {"pred_masks": masks, "pred_ious": torch.tensor([[0.0, 0.0, 1.0]])}


# Per point segment: IoUs of the 3 outputs and the Max pick.
POINT_IOUS = [[1, 1 / 3, 0], [0.5, 0.5, 1], [1 / 3, 2 / 3, 1]]
POINT_PICKS = [1, 0, 2]


def _expected_point_metrics():
    iou_max = [1 / 3, 0.5, 1.0]
    return {
        "num_segments": 3,
        "1-IoU@Max": 100 * np.mean(iou_max),
        "1-IoU@Oracle": 100.0,
        "noc@0.5@Max": (20 + 1 + 1) / 3,
        "noc@0.8@Max": (20 + 20 + 1) / 3,
        "noc@0.85@Max": (20 + 20 + 1) / 3,
        "noc@0.9@Max": (20 + 20 + 1) / 3,
        "noc@0.5@Oracle": 1.0,
        "noc@0.9@Oracle": 1.0,
        "mIoU_token_0": 100 * np.mean([1, 0.5, 1 / 3]),
        "mIoU_token_1": 100 * np.mean([1 / 3, 0.5, 2 / 3]),
        "mIoU_token_2": 100 * np.mean([0, 1, 1]),
        "token_pick_0": 100 / 3,
        "token_pick_1": 100 / 3,
        "token_pick_2": 100 / 3,
        "num_images": 3,
        "num_images_without_segments": 1,
        "num_dropped_segments": 1,
    }


def _check(res, expected):
    for k, v in expected.items():
        assert res[k] == pytest.approx(v, abs=1e-9), k


def test_mask_ious_hand_values():
    gt = _m(4, 4, (0, 2, 0, 2))
    pred = torch.stack([gt, _m(4, 4, (0, 1, 0, 4)), _m(4, 4), _m(4, 4, (2, 4, 2, 4))])
    torch.testing.assert_close(mask_ious(pred, gt), torch.tensor([1.0, 2 / 6, 0.0, 0.0], dtype=torch.float64))
    assert mask_ious(_m(2, 2), _m(2, 2)).item() == 1.0  # both empty: defined, not NaN
    with pytest.raises(ValueError, match=r"prediction masks are \(3, 3\), GT mask is \(4, 4\)"):
        mask_ious(_m(3, 3), gt)


def test_summarize_ious_hand_values():
    res = summarize_ious(np.array(POINT_IOUS), np.array(POINT_PICKS))
    expected = _expected_point_metrics()
    for k in ("num_images", "num_images_without_segments", "num_dropped_segments"):
        expected.pop(k)
    _check(res, expected)


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


def test_prompted_inference_skips_images_without_prompts():
    calls = []

    class Fake(torch.nn.Module):
        def inference(self, batched_inputs, **kwargs):
            calls.append(([x["image_id"] for x in batched_inputs], kwargs))
            return [{"pred_masks": torch.zeros(len(x["points"]), 1, 2, 2)} for x in batched_inputs]

    wrapper = PromptedInference(Fake(), tokens=[0])
    inputs = [_image_a()[0], _image_b()[0], _image_c()[0]]
    outs = wrapper(inputs)
    assert calls == [([11, 13], {"tokens": [0]})]
    assert outs[1] == {} and outs[0]["pred_masks"].shape[0] == 2 and outs[2]["pred_masks"].shape[0] == 1
    assert wrapper([_image_b()[0]]) == [{}] and len(calls) == 1


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


class _AutocastProbe(torch.nn.Module):
    """A model whose ``inference`` records the autocast state it runs under, on a device it claims."""

    def __init__(self, device: str = "cpu"):
        super().__init__()
        self.device = torch.device(device)
        self.seen: list[tuple[bool, torch.dtype]] = []

    def inference(self, batched_inputs, **kwargs):
        dev = self.device.type
        on = torch.is_autocast_enabled(dev)
        self.seen.append((on, torch.get_autocast_dtype(dev) if on else torch.float32))
        return [{"pred_masks": torch.zeros(len(x["points"]), 1, 2, 2)} for x in batched_inputs]


def test_evaluation_dtype_resolves_auto_by_device():
    assert pi.evaluation_dtype("auto", "cpu") == torch.float32
    assert pi.evaluation_dtype("auto", "cuda:1") == torch.float16  # the reference's fp16 autocast
    assert pi.evaluation_dtype("fp32", "cuda") == torch.float32
    assert pi.evaluation_dtype("fp16", "cpu") == torch.float16
    with pytest.raises(ValueError, match="unknown evaluation precision 'bf16'"):
        pi.evaluation_dtype("bf16", "cpu")
    with pytest.raises(ValueError, match="TEST.PRECISION"):
        PromptedInference(_AutocastProbe(), precision="half")


@pytest.mark.parametrize("precision, expected", [("auto", (False, torch.float32)), ("fp32", (False, torch.float32)),
                                                 ("fp16", (True, torch.float16))])
def test_prompted_inference_runs_the_model_under_the_precision_on_cpu(precision, expected):
    probe = _AutocastProbe("cpu")
    PromptedInference(probe, precision=precision)([_image_a()[0]])
    assert probe.seen == [expected]
    assert not torch.is_autocast_enabled("cpu")  # nothing leaks


def test_prompted_inference_passes_the_precision_to_torch_autocast(monkeypatch):
    """On a CUDA model, "auto" asks torch.autocast for float16 on "cuda" (spied: no GPU needed);
    "fp32" asks for a disabled context."""
    import contextlib

    calls = []

    def spy(device_type, dtype=None, enabled=True, **kwargs):
        calls.append((device_type, dtype if enabled else "off"))
        return contextlib.nullcontext()

    monkeypatch.setattr(torch, "autocast", spy)
    PromptedInference(_AutocastProbe("cuda"))([_image_a()[0]])
    PromptedInference(_AutocastProbe("cuda"), precision="fp32")([_image_a()[0]])
    PromptedInference(_AutocastProbe("cpu"))([_image_a()[0]])
    assert calls == [("cuda", torch.float16), ("cuda", "off"), ("cpu", "off")]


def test_precision_is_a_checked_config_key():
    from semantic_sam import config_checks
    from semantic_sam.config import ConfigError, load_config

    assert config_checks.EVAL_PRECISIONS == pi.EVAL_PRECISIONS
    assert load_config(None).TEST.PRECISION == "auto"
    assert load_config(None, ["TEST.PRECISION=fp16"]).TEST.PRECISION == "fp16"
    with pytest.raises(ConfigError, match="TEST.PRECISION"):
        load_config(None, ["TEST.PRECISION=bf16"])


# ------------------------------------------------------------------------------------------ object labels
def _label_logits(*rows):
    """(rows, L, 3) logits: each entry a class index (logit 1 there, -1 elsewhere) or a list of 3 logits."""
    out = torch.full((len(rows), len(rows[0]), 3), -1.0)
    for r, row in enumerate(rows):
        for k, v in enumerate(row):
            if isinstance(v, int):
                out[r, k, v] = 1.0
            else:
                out[r, k] = torch.tensor(v)
    return out


def _labelled(image, gt_object_classes, *logit_rows):
    inp, out = image
    inp["instances"].gt_object_classes = torch.tensor(gt_object_classes)
    inp["vocabulary"] = {"object": ("a", "b", "c"), "part": ()}
    return inp, dict(out, pred_logits=_label_logits(*logit_rows))


def _labelled_images():
    """Images A and C of the IoU tests, with object logits (3 classes) and GT classes.

    A, points: segment 0 (class 2): Max = output 1 (label 0, wrong), Oracle = output 0 (label 2, right).
    Segment 1 (class 1): Max = output 0, whose logits tie classes 0 and 1 -> first = 0 (wrong);
    Oracle = output 2 (label 1, right).
    A, boxes: segment 0: IoUs [1, 1, 0] tie -> Oracle = output 0 (label 2, right), Max = output 1
    (label 1, wrong). Segment 1: all IoUs 0 -> Oracle = output 0 = Max (label 1, right).
    C (class 0): Max = Oracle = output 2 (label 0, right).
    """
    a = _labelled(_image_a(), [2, 1], [2, 0, 1], [[0.5, 0.5, -1.0], 2, 1], [2, 1, 0], [1, 0, 0])
    c = _labelled(_image_c(), [0], [2, 1, 0])
    return a, c


def test_summarize_labels_hand_values():
    labels = np.array([[2, 0, 1], [0, 2, 1], [2, 1, 0], [1, 1, 1]])
    gt = np.array([2, 1, 0, -1])  # the last segment is unlabelled: not scored
    ious = np.array([[1, 1 / 3, 0], [0.5, 0.5, 1], [1 / 3, 2 / 3, 1], [1, 0, 0]])
    picks = np.array([1, 0, 2, 0])
    res = im.summarize_labels(labels, gt, ious, picks)
    assert list(res) == ["num_labelled_segments", "label_acc@Max", "label_acc@Oracle"]
    _check(res, {"num_labelled_segments": 3, "label_acc@Max": 100 / 3, "label_acc@Oracle": 100.0})
    # Oracle ties resolve to the first maximum: IoUs [1, 1, 0] -> output 0.
    tie = im.summarize_labels(np.array([[2, 1, 1]]), np.array([2]), np.array([[1.0, 1.0, 0.0]]), np.array([1]))
    _check(tie, {"label_acc@Max": 0.0, "label_acc@Oracle": 100.0})
    assert im.summarize_labels(labels[:1], np.array([-1]), ious[:1], picks[:1]) == {"num_labelled_segments": 0}
    with pytest.raises(ValueError, match="labels and ious must be"):
        im.summarize_labels(labels, gt, ious[:, :2], picks)


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


class _NamingModel(torch.nn.Module):
    """A model with (or without) a text encoder that records its calls."""

    def __init__(self, text_encoder: bool):
        super().__init__()
        self.text_encoder = torch.nn.Linear(1, 1) if text_encoder else None
        self.embedded: list[tuple] = []
        self.calls: list[tuple] = []

    def class_embeddings(self, objects, parts=None):
        self.embedded.append((tuple(objects), parts))
        return {"object": torch.eye(len(objects))}

    def inference(self, batched_inputs, **kwargs):
        emb = kwargs.get("class_embeddings")
        self.calls.append(([x["image_id"] for x in batched_inputs], None if emb is None else emb["object"].shape[0]))
        return [{"pred_masks": torch.zeros(len(x["points"]), 1, 2, 2)} for x in batched_inputs]


def test_prompted_inference_embeds_each_vocabulary_once_for_a_text_model():
    model = _NamingModel(text_encoder=True)
    wrapper = PromptedInference(model)
    (a_in, _), (c_in, _) = _labelled_images()
    plain = _image_c()[0]  # no vocabulary (e.g. SA-1B): no logits asked for
    plain["image_id"] = 14
    wrapper([a_in, plain, c_in])
    wrapper([c_in])
    assert model.embedded == [(("a", "b", "c"), None)]  # once, for both batches
    assert model.calls == [([11, 13], 3), ([14], None), ([13], 3)]
    # An explicit class_embeddings is passed as given; the inputs' vocabulary is not embedded.
    fixed = {"object": torch.zeros(5, 4)}
    model2 = _NamingModel(text_encoder=True)
    PromptedInference(model2, class_embeddings=fixed)([a_in])
    assert model2.embedded == [] and model2.calls == [([11], 5)]


def test_prompted_inference_asks_no_labels_of_a_model_without_text_encoder():
    model = _NamingModel(text_encoder=False)
    (a_in, _), (c_in, _) = _labelled_images()
    PromptedInference(model)([a_in, c_in])
    assert model.embedded == [] and model.calls == [([11, 13], None)]
