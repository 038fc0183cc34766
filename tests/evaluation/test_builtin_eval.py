"""Object and part label accuracy of clicked masks (with per-class numbers) and generic evaluation (PQ with its
per-class table, AP, mIoU) on the built-in val split's evaluation sets: hand-made predictions against
hand-computed numbers, perfect predictions built from the GT, and a tiny random model end to end."""
import json
import os

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.evaluation import inference_on_dataset
from detectron2.structures import BitMasks, Boxes, Instances
from panopticapi.utils import rgb2id
from PIL import Image

from datasets.builtin_labels import OBJECT_CLASSES, STUFF_CLASSES
from datasets.interactive_eval import build_test_loader, build_test_mapper
from datasets.register_builtin_labelled import register_builtin_eval_datasets
from semantic_sam.build import build_model
from semantic_sam.config import load_config
from semantic_sam.evaluation import InteractiveEvaluator, PromptedInference, build_evaluator, summary_table
from semantic_sam.evaluation import interactive_metrics as im
from tools.make_builtin_data import LABELLED_LAYOUTS, make_builtin_data
from tests.utils.catalog import unregister
from tests.utils.interactive_cases import _check

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs", "semantic_sam_tiny_generic.yaml")
SMALL = ["COCO.INPUT.MIN_SIZE_TEST=64", "COCO.INPUT.MAX_SIZE_TEST=96", "COCO.DATALOADER.NUM_WORKERS=0"]
NAMES = list(OBJECT_CLASSES) + list(STUFF_CLASSES)
GENERIC = "builtin_panoptic_val_generic"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("builtin_eval"))
    make_builtin_data(root, num_train=1, num_val=2, seed=3, size=96, min_area=20, num_shards=1,
                      labelled=LABELLED_LAYOUTS)
    names = register_builtin_eval_datasets(root)
    yield root
    unregister(names)


def _cfg(*overrides):
    return load_config(CONFIG, [*SMALL, *overrides])


# ------------------------------------------------------------------------------------------ hand-made case
def _m(*rects, h=4, w=4):
    m = torch.zeros(h, w, dtype=torch.bool)
    for y0, y1, x0, x1 in rects:
        m[y0:y1, x0:x1] = True
    return m


def _one_hot(rows, num):
    """(S, L, num) logits, +1 at each entry's class, -1 elsewhere."""
    out = torch.full((len(rows), len(rows[0]), num), -1.0)
    for r, row in enumerate(rows):
        for k, c in enumerate(row):
            out[r, k, c] = 1.0
    return out


VOCABULARY = {"object": ("car", "house"), "part": ("door", "wheel", "window")}


def _part_case():
    """4x4 image, three clicked part segments, 2 outputs each (output logits +1 inside, -1 outside).

    Segment 0 (top-left 2x2; car, wheel): outputs [GT, empty], predicted IoUs [0.2, 0.8] -> Max = 1, Oracle = 0;
        object labels [car, house] -> Max wrong, Oracle right; part labels [wheel, wheel] -> both right.
    Segment 1 (right half; house, door): outputs [GT, right column], IoUs [0.9, 0.1] -> Max = Oracle = 0;
        object labels [house, car] -> right; part labels [window, door] -> both wrong.
    Segment 2 (bottom-left 2x2; car, no part label): outputs [GT, empty], IoUs [0.5, 0.4] -> Max = Oracle = 0;
        object labels [car, house] -> right; its part labels are not scored.
    """
    gts = [_m((0, 2, 0, 2)), _m((0, 4, 2, 4)), _m((2, 4, 0, 2))]
    empty = _m()
    outputs = [[gts[0], empty], [gts[1], _m((0, 4, 3, 4))], [gts[2], empty]]
    masks = torch.stack([torch.stack(o).float() * 2 - 1 for o in outputs])
    inst = Instances((4, 4))
    inst.gt_masks = BitMasks(torch.stack(gts))
    inst.gt_object_classes = torch.tensor([0, 1, 0])
    inst.gt_part_classes = torch.tensor([1, 0, -1])
    inp = {"image_id": 7, "instances": inst, "points": torch.tensor([[0.0, 0.0], [3.0, 1.0], [0.0, 3.0]]),
           "vocabulary": VOCABULARY}
    out = {
        "pred_masks": masks,
        "pred_ious": torch.tensor([[0.2, 0.8], [0.9, 0.1], [0.5, 0.4]]),
        "pred_logits": _one_hot([[0, 1], [1, 0], [0, 1]], 2),
        "pred_logits_part": _one_hot([[1, 1], [2, 0], [0, 0]], 3),
    }
    return inp, out


EXPECTED_PART_CASE = {
    "num_segments": 3,
    "1-IoU@Oracle": 100.0,
    "num_labelled_segments": 3,
    "label_acc@Max": 200 / 3,
    "label_acc@Oracle": 100.0,
    "num_part_labelled_segments": 2,
    "part_label_acc@Max": 50.0,
    "part_label_acc@Oracle": 50.0,
    "num_labelled_segments/car": 2,
    "label_acc@Max/car": 50.0,
    "label_acc@Oracle/car": 100.0,
    "num_labelled_segments/house": 1,
    "label_acc@Max/house": 100.0,
    "label_acc@Oracle/house": 100.0,
    "num_part_labelled_segments/wheel": 1,
    "part_label_acc@Max/wheel": 100.0,
    "part_label_acc@Oracle/wheel": 100.0,
    "num_part_labelled_segments/door": 1,
    "part_label_acc@Max/door": 0.0,
    "part_label_acc@Oracle/door": 0.0,
}


def test_part_and_object_label_accuracy_hand_values(tmp_path, caplog):
    ev = InteractiveEvaluator("toy_parts", str(tmp_path), distributed=False)
    ev.process(*map(list, zip(_part_case())))
    with caplog.at_level("INFO", logger="semantic_sam.evaluation.interactive_evaluator"):
        res = ev.evaluate()
    _check(res["interactive"], EXPECTED_PART_CASE)
    assert not any(k.endswith("/window") for k in res["interactive"])  # no GT segment of it
    # Per-class keys follow the aggregate ones and stay out of the main table; they have their own.
    keys = list(res["interactive"])
    assert keys.index("num_skipped_records") < keys.index("num_labelled_segments/car")
    assert "/car" not in im.format_results_table(res) and "part_label_acc@Max" in im.format_results_table(res)
    assert "Per-class part_label_acc of toy_parts" in caplog.text and "|   wheel |" in caplog.text
    with open(tmp_path / "interactive_results.json") as f:
        assert json.load(f) == json.loads(json.dumps(res))
    with open(tmp_path / "interactive_per_segment.json") as f:
        records = json.load(f)
    assert [(r["part_labels"], r["gt_part_class"]) for r in records] == [([1, 1], 1), ([2, 0], 0), ([0, 0], -1)]
    table = summary_table({"toy_parts": res})
    assert "part_label_acc@Max" in table and "part_label_acc@Oracle" in table


def test_part_keys_need_part_logits_and_part_gt():
    inp, out = _part_case()
    ev = InteractiveEvaluator(distributed=False)
    ev.process([inp], [{k: v for k, v in out.items() if k != "pred_logits_part"}])
    res = ev.evaluate()["interactive"]
    assert not any("part" in k for k in res) and res["label_acc@Max"] == pytest.approx(200 / 3)
    inp["instances"].remove("gt_part_classes")  # object-level data (COCO): part logits are not scored
    ev = InteractiveEvaluator(distributed=False)
    ev.process([inp], [out])
    assert not any("part" in k for k in ev.evaluate()["interactive"])


def test_per_class_keys_need_one_vocabulary():
    inp, out = _part_case()
    plain = dict(inp)
    plain.pop("vocabulary")
    ev = InteractiveEvaluator(distributed=False)
    ev.process([plain], [out])
    res = ev.evaluate()["interactive"]
    assert res["part_label_acc@Max"] == 50.0 and not any("/" in k for k in res)
    other = dict(inp, vocabulary={"object": ("bus", "house"), "part": VOCABULARY["part"]})
    ev = InteractiveEvaluator(distributed=False)
    ev.process([inp, other], [out, out])
    assert not any("/" in k for k in ev.evaluate()["interactive"])


# ------------------------------------------------------------------------------------------ perfect clicks
def _perfect_outputs(inp, parts: bool) -> dict:
    """Two outputs per click: the GT mask (predicted IoU 1, GT labels) and an empty one (IoU 0, label 0)."""
    gt = inp["instances"].gt_masks.tensor
    m = gt.shape[0]
    masks = torch.stack([gt.float() * 2 - 1, -torch.ones_like(gt, dtype=torch.float32)], dim=1)
    out = {"pred_masks": masks, "pred_ious": torch.tensor([[1.0, 0.0]] * m).reshape(m, 2)}
    vocabulary = inp["vocabulary"]
    objects = inp["instances"].gt_object_classes.tolist()
    out["pred_logits"] = _one_hot([[c, 0] for c in objects], len(vocabulary["object"])).reshape(m, 2, -1)
    if parts:
        part_ids = [max(p, 0) for p in inp["instances"].gt_part_classes.tolist()]
        out["pred_logits_part"] = _one_hot([[p, 0] for p in part_ids], len(vocabulary["part"])).reshape(m, 2, -1)
    return out


@pytest.mark.parametrize("name", ["builtin_panoptic_val_interactive", "builtin_parts_val_interactive"])
def test_perfect_clicks_score_100(root, name, tmp_path):
    cfg = _cfg()
    mapper = build_test_mapper(cfg, name)
    evaluator = build_evaluator(cfg, name, str(tmp_path))
    evaluator.reset()
    parts = name.startswith("builtin_parts")
    for d in DatasetCatalog.get(name):
        inp = mapper(d)
        evaluator.process([inp], [_perfect_outputs(inp, parts)])
    res = evaluator.evaluate()["interactive"]
    _check(res, {"1-IoU@Max": 100.0, "1-IoU@Oracle": 100.0, "label_acc@Max": 100.0, "label_acc@Oracle": 100.0})
    per_class = [k for k in res if k.startswith("label_acc@Max/")]
    assert per_class and all(res[k] == 100.0 for k in per_class)
    if parts:
        _check(res, {"part_label_acc@Max": 100.0, "part_label_acc@Oracle": 100.0})
        assert res["num_part_labelled_segments"] == res["num_segments"]
        assert all(res[k] == 100.0 for k in res if k.startswith("part_label_acc@"))
    else:
        assert {k.split("/")[1] for k in per_class} <= set(NAMES) and not any("part" in k for k in res)


# ------------------------------------------------------------------------------------------ generic
def _generic_outputs(d: dict, drop: int | None = None) -> dict:
    """detectron2's outputs of a model that predicts the GT of a built-in val image exactly; ``drop``: that
    segment id is missed (void in the panoptic output, no instance; the semantic output keeps it)."""
    ids = rgb2id(np.asarray(Image.open(d["pan_seg_file_name"]).convert("RGB")))
    h, w = ids.shape
    pan = np.zeros((h, w), np.int32)
    sem = torch.zeros(len(NAMES), h, w)
    info, masks, classes = [], [], []
    for seg in d["segments_info"]:
        mask = ids == seg["id"]
        sem[seg["category_id"]][torch.from_numpy(mask)] = 1.0
        if seg["id"] == drop:
            continue
        pan[mask] = seg["id"]
        info.append({"id": seg["id"], "category_id": seg["category_id"], "isthing": seg["isthing"]})
        if seg["isthing"]:
            masks.append(mask)
            classes.append(seg["category_id"])
    instances = Instances((h, w))
    instances.pred_masks = torch.from_numpy(np.stack(masks)) if masks else torch.zeros(0, h, w, dtype=torch.bool)
    boxes = [[np.nonzero(m)[1].min(), np.nonzero(m)[0].min(), np.nonzero(m)[1].max() + 1, np.nonzero(m)[0].max() + 1]
             for m in masks]
    instances.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    instances.scores = torch.ones(len(masks))
    instances.pred_classes = torch.tensor(classes, dtype=torch.int64)
    return {"panoptic_seg": (torch.from_numpy(pan), info), "instances": instances, "sem_seg": sem}


def _generic_evaluate(dicts, outputs, out_dir):
    evaluator = build_evaluator(_cfg(), GENERIC, out_dir)
    evaluator.reset()
    evaluator.process(dicts, outputs)
    return evaluator.evaluate()


def test_generic_perfect_outputs_score_100_with_per_class_pq(root, tmp_path, caplog):
    dicts = DatasetCatalog.get(GENERIC)
    with caplog.at_level("INFO", logger="semantic_sam.evaluation.generic_evaluators"):
        results = _generic_evaluate(dicts, [_generic_outputs(d) for d in dicts], str(tmp_path / "eval"))
    pq = results["panoptic_seg"]
    for key in ("PQ", "SQ", "RQ", "PQ_th", "PQ_st"):
        assert pq[key] == pytest.approx(100.0), key
    present = {NAMES[s["category_id"]] for d in dicts for s in d["segments_info"]}
    assert {k.split("/")[1] for k in pq if k.startswith("PQ/")} == present
    assert all(pq[f"{m}/{n}"] == pytest.approx(100.0) for m in ("PQ", "SQ", "RQ") for n in present)
    assert "Per-class PQ of builtin_panoptic_val_generic" in caplog.text
    for task in ("bbox", "segm"):
        assert results[task]["AP"] == pytest.approx(100.0)
    assert results["sem_seg"]["mIoU"] == pytest.approx(100.0)
    with open(tmp_path / "eval" / "generic_results.json") as f:
        assert json.load(f)["panoptic_seg"]["PQ"] == pytest.approx(100.0)


def test_generic_missed_thing_segment_hand_computed(root, tmp_path):
    """One GT thing segment of class c is missed: c gets TP = n_c - 1, FN = 1 (IoU 1 for the rest), so
    RQ_c = (n_c - 1) / (n_c - 0.5), SQ_c = 100 (0 when n_c = 1), PQ_c = SQ_c * RQ_c; every other class 100."""
    dicts = DatasetCatalog.get(GENERIC)
    things = [s for s in dicts[0]["segments_info"] if s["isthing"]]
    missed = things[0]
    c = missed["category_id"]
    n_c = sum(s["category_id"] == c for d in dicts for s in d["segments_info"])
    outputs = [_generic_outputs(d, drop=missed["id"] if i == 0 else None) for i, d in enumerate(dicts)]
    pq = _generic_evaluate(dicts, outputs, str(tmp_path / "eval"))["panoptic_seg"]
    rq = 100.0 * (n_c - 1) / (n_c - 0.5)
    sq = 100.0 if n_c > 1 else 0.0
    name = NAMES[c]
    _check(pq, {f"RQ/{name}": rq, f"SQ/{name}": sq, f"PQ/{name}": sq * rq / 100.0})
    classes = {s["category_id"] for d in dicts for s in d["segments_info"]}
    n_things = sum(1 for k in classes if k < len(OBJECT_CLASSES))
    _check(pq, {"PQ": (100.0 * (len(classes) - 1) + sq * rq / 100.0) / len(classes),
                "PQ_th": (100.0 * (n_things - 1) + sq * rq / 100.0) / n_things, "PQ_st": 100.0})
    assert all(pq[f"PQ/{NAMES[k]}"] == pytest.approx(100.0) for k in classes - {c})


# ------------------------------------------------------------------------------------------ a real model
def test_a_text_model_is_scored_for_object_and_part_labels(root):
    """The tiny generic config (random weights, a text encoder): the parts vocabulary reaches the model, which
    returns part logits; every accuracy is a percentage of the clicked segments."""
    cfg = _cfg()
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    name = "builtin_parts_val_interactive"
    results = inference_on_dataset(PromptedInference(model), build_test_loader(cfg, name), build_evaluator(cfg, name))
    res = results["interactive"]
    assert res["num_part_labelled_segments"] == res["num_labelled_segments"] == res["num_segments"] > 0
    for key in ("label_acc@Max", "label_acc@Oracle", "part_label_acc@Max", "part_label_acc@Oracle"):
        assert 0.0 <= res[key] <= 100.0, key
    assert any(k.startswith("part_label_acc@Max/") for k in res)
