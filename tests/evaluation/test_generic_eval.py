"""Generic evaluation through detectron2's evaluators: the COCO panoptic generic registration and its derived
files, PQ / box and mask AP / mIoU on perfect and on wrong outputs built from the tiny set's GT, part AP with
its seen/unseen split on the Pascal-Part val fixture, the mapper, GenericInference and the error cases."""
import json
import math
import os
import shutil

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES
from detectron2.structures import Boxes, Instances
from panopticapi.utils import rgb2id
from PIL import Image
from pycocotools import mask as mask_util

from datasets.generic_eval import GenericEvalMapper
from datasets.register_coco_panoptic_generic import COCO_GENERIC_VAL, register_coco_panoptic_generic
from datasets.register_part_datasets import PART_DATASETS, register_part_dataset
from datasets.tiny_coco_panoptic import write_tiny_coco_panoptic
from semantic_sam.build import build_model
from semantic_sam.config import ConfigError, load_config
from semantic_sam.data.label_spaces import pascal_part_class_names
from semantic_sam.evaluation import (
    GenericEvaluationError,
    GenericInference,
    PanopticSegmentsError,
    build_evaluator,
    summary_table,
)
from tools.make_part_fixtures import make_part_fixtures
from tools.prepare_coco_semantic_from_panoptic import main as prepare_main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GENERIC = os.path.join(ROOT, "configs", "semantic_sam_tiny_generic.yaml")
TEXT = os.path.join(ROOT, "configs", "semantic_sam_tiny_text.yaml")
SMALL = ["COCO.INPUT.MIN_SIZE_TEST=64", "COCO.INPUT.MAX_SIZE_TEST=96", "PASCAL_PART.INPUT.MIN_SIZE_TEST=64",
         "PASCAL_PART.INPUT.MAX_SIZE_TEST=96", "COCO.DATALOADER.NUM_WORKERS=0"]
# Contiguous class of a COCO category: its index in detectron2's COCO_CATEGORIES (id order, things first).
CLASS_OF = {c["id"]: i for i, c in enumerate(COCO_CATEGORIES)}
IS_THING = {c["id"]: bool(c["isthing"]) for c in COCO_CATEGORIES}
NUM_CLASSES = len(COCO_CATEGORIES)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> str:
    """The tiny COCO panoptic set (with its semantic PNGs and instances JSON) and the part fixtures."""
    path = str(tmp_path_factory.mktemp("generic_eval"))
    write_tiny_coco_panoptic(path)
    make_part_fixtures(path)
    return path


@pytest.fixture()
def coco(root) -> str:
    return register_coco_panoptic_generic(root)


def _cfg(*overrides: str, config: str = GENERIC):
    return load_config(config, [*SMALL, *overrides])


# ------------------------------------------------------------------------------------------ GT -> outputs
def _panoptic_gt(d: dict) -> tuple[np.ndarray, list[dict]]:
    """The image's GT segment ids and its JSON segments (COCO category ids), read from the files."""
    ids = rgb2id(np.asarray(Image.open(d["pan_seg_file_name"]).convert("RGB"), dtype=np.uint32))
    with open(MetadataCatalog.get(COCO_GENERIC_VAL).panoptic_json) as f:
        data = json.load(f)
    (ann,) = [a for a in data["annotations"] if a["image_id"] == d["image_id"]]
    return ids, ann["segments_info"]


def _outputs_from_gt(d: dict, drop_category: int | None = None) -> dict:
    """detectron2's outputs of a model that predicts the GT exactly (all non-crowd segments; crowd pixels void
    in the panoptic output, their class in the semantic one); ``drop_category``: that COCO category is missed
    (void in the panoptic output, no instance, the semantic class of the pixel below it = wall)."""
    ids, segments = _panoptic_gt(d)
    h, w = ids.shape
    pan = np.zeros((h, w), np.int32)
    info, masks, classes = [], [], []
    sem = torch.zeros(NUM_CLASSES, h, w)
    for seg in segments:
        mask = ids == seg["id"]
        cid = seg["category_id"]
        if cid == drop_category:
            sem[CLASS_OF[199]][torch.from_numpy(mask)] = 1.0  # the dropped segment is called wall
            continue
        sem[CLASS_OF[cid]][torch.from_numpy(mask)] = 1.0
        if seg.get("iscrowd", 0):
            continue
        pan[mask] = seg["id"]
        info.append({"id": seg["id"], "category_id": CLASS_OF[cid], "isthing": IS_THING[cid]})
        if IS_THING[cid]:
            masks.append(mask)
            classes.append(CLASS_OF[cid])
    instances = Instances((h, w))
    stacked = torch.from_numpy(np.stack(masks)) if masks else torch.zeros(0, h, w, dtype=torch.bool)
    instances.pred_masks = stacked
    boxes = []
    for m in masks:
        ys, xs = np.nonzero(m)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    instances.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    instances.scores = torch.ones(len(masks))
    instances.pred_classes = torch.tensor(classes, dtype=torch.int64)
    return {"panoptic_seg": (torch.from_numpy(pan), info), "instances": instances, "sem_seg": sem}


def _evaluate(cfg, name: str, inputs: list[dict], outputs: list[dict], out_dir: str, weights: str | None = None):
    evaluator = build_evaluator(cfg, name, out_dir, weights)
    evaluator.reset()
    evaluator.process(inputs, outputs)
    return evaluator.evaluate()


# ------------------------------------------------------------------------------------------ registration
def test_registration_metadata_and_dicts(coco, root):
    meta = MetadataCatalog.get(coco)
    assert meta.evaluator_type == "coco_panoptic_seg" and meta.ignore_label == 255
    assert len(meta.thing_classes) == 80 and len(meta.stuff_classes) == 133
    assert meta.stuff_classes[:80] == meta.thing_classes
    assert meta.thing_dataset_id_to_contiguous_id[18] == meta.thing_classes.index("dog")
    assert meta.stuff_dataset_id_to_contiguous_id[199] == meta.stuff_classes.index("wall-other-merged")
    assert set(meta.stuff_dataset_id_to_contiguous_id.values()) == set(range(133))
    assert meta.json_file == os.path.join(root, "coco", "annotations", "instances_val2017.json")
    assert meta.panoptic_root == os.path.join(root, "coco", "panoptic_val2017")
    dicts = DatasetCatalog.get(coco)
    assert [d["image_id"] for d in dicts] == [1, 2]
    d = dicts[0]
    assert d["sem_seg_file_name"] == os.path.join(root, "coco", "panoptic_semseg_val2017", "000000000001.png")
    assert [(s["category_id"], s["isthing"], s["iscrowd"]) for s in d["segments_info"]] == [
        (0, True, 0), (meta.thing_classes.index("dog"), True, 0), (meta.stuff_classes.index("wall-other-merged"),
                                                                  False, 0), (0, True, 1)]


def test_derived_files_match_the_panoptic_gt(coco, root):
    """Semantic PNG = each segment's class (crowd included), 255 void; instances JSON = thing segments."""
    for d in DatasetCatalog.get(coco):
        ids, segments = _panoptic_gt(d)
        expected = np.full(ids.shape, 255, np.uint8)
        for seg in segments:
            expected[ids == seg["id"]] = CLASS_OF[seg["category_id"]]
        assert np.array_equal(np.asarray(Image.open(d["sem_seg_file_name"])), expected)
    with open(MetadataCatalog.get(coco).json_file) as f:
        instances = json.load(f)
    assert len(instances["categories"]) == 80
    got = [(a["image_id"], a["category_id"], a["iscrowd"], a["area"]) for a in instances["annotations"]]
    assert got == [(1, 1, 0, 24 * 24), (1, 18, 0, 377), (1, 1, 1, 8 * 12), (2, 1, 1, 20 * 20)]
    rle = instances["annotations"][0]["segmentation"]
    mask = mask_util.decode(rle)
    assert mask[6:30, 4:28].all() and mask.sum() == 24 * 24


def test_prepare_tool_writes_what_is_missing(root, tmp_path, capsys):
    copy = str(tmp_path / "copy")
    shutil.copytree(os.path.join(root, "coco"), os.path.join(copy, "coco"))
    semseg = os.path.join(copy, "coco", "panoptic_semseg_val2017")
    instances = os.path.join(copy, "coco", "annotations", "instances_val2017.json")
    shutil.rmtree(semseg)
    os.remove(instances)
    with pytest.raises(FileNotFoundError, match=r"panoptic_semseg_val2017.*DETECTRON2_DATASETS.*prepare_coco"):
        DatasetCatalog.get(register_coco_panoptic_generic(copy))
    assert prepare_main([copy]) == 0
    assert "wrote 2 semantic PNGs" in capsys.readouterr().out
    for name in ("000000000001.png", "000000000002.png"):
        a = np.asarray(Image.open(os.path.join(semseg, name)))
        b = np.asarray(Image.open(os.path.join(root, "coco", "panoptic_semseg_val2017", name)))
        assert np.array_equal(a, b)
    with open(instances) as f, open(os.path.join(root, "coco", "annotations", "instances_val2017.json")) as g:
        assert json.load(f) == json.load(g)
    with open(instances, "w") as f:  # an existing instances JSON (COCO's own) is kept by default
        f.write("{}")
    assert prepare_main([copy]) == 0
    with open(instances) as f:
        assert f.read() == "{}"


# ------------------------------------------------------------------------------------------ COCO metrics
def test_perfect_outputs_score_100_and_results_json(coco, tmp_path):
    dicts = DatasetCatalog.get(coco)
    outputs = [_outputs_from_gt(d) for d in dicts]
    out = str(tmp_path / "eval")
    results = _evaluate(_cfg(), coco, dicts, outputs, out, weights="w.pth")
    for key in ("PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st"):
        assert results["panoptic_seg"][key] == pytest.approx(100.0), key
    for task in ("bbox", "segm"):
        assert results[task]["AP"] == pytest.approx(100.0) and results[task]["AP50"] == pytest.approx(100.0)
    assert results["sem_seg"]["mIoU"] == pytest.approx(100.0)
    with open(os.path.join(out, "generic_results.json")) as f:
        written = json.load(f)
    assert written["weights"] == "w.pth" and written["panoptic_seg"]["PQ"] == pytest.approx(100.0)
    assert written["bbox"]["APl"] is None  # no large object: detectron2's NaN, written as null
    table = summary_table({coco: results}).splitlines()
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in table}
    for row in ("PQ", "PQ things", "PQ stuff", "SQ", "RQ", "box AP", "mask AP", "mIoU"):
        assert rows[row] == "100.00", row


def test_wrong_outputs_score_below_100(coco, tmp_path):
    """The dog is missed: PQ things = mean(person 100, dog 0), box/mask AP = 50, mIoU = mean(person 1, dog 0,
    wall 2023 / (2023 + 377))."""
    dicts = DatasetCatalog.get(coco)
    outputs = [_outputs_from_gt(d, drop_category=18) for d in dicts]
    results = _evaluate(_cfg(), coco, dicts, outputs, str(tmp_path / "eval"))
    assert results["panoptic_seg"]["PQ_th"] == pytest.approx(50.0)
    assert results["panoptic_seg"]["PQ_st"] == pytest.approx(100.0)
    assert results["panoptic_seg"]["PQ"] == pytest.approx(200.0 / 3)
    assert results["bbox"]["AP"] == pytest.approx(50.0) and results["segm"]["AP"] == pytest.approx(50.0)
    wall_iou = 2023 / (2023 + 377)
    assert results["sem_seg"]["mIoU"] == pytest.approx(100.0 * (1.0 + 0.0 + wall_iou) / 3)


def test_pq_covers_classes_the_gt_json_does_not_list(coco, tmp_path):
    """The tiny JSON lists 3 categories; a predicted cat (COCO 17) cut out of the wall is a false positive of
    its class (panopticapi alone stops at it): PQ = mean(person 100, dog 100, wall IoU, cat 0)."""
    dicts = DatasetCatalog.get(coco)
    outputs = [_outputs_from_gt(d) for d in dicts]
    pan, info = outputs[0]["panoptic_seg"]
    assert (pan[0:5, 30:40] == 3000).all()  # wall
    pan[0:5, 30:40] = 77
    info.append({"id": 77, "category_id": CLASS_OF[17], "isthing": True})
    results = _evaluate(_cfg(), coco, dicts, outputs, str(tmp_path / "eval"))["panoptic_seg"]
    wall_iou = (2023 - 50) / 2023
    assert results["PQ_th"] == pytest.approx(200.0 / 3)
    assert results["PQ_st"] == pytest.approx(100.0 * wall_iou)
    assert results["PQ"] == pytest.approx(100.0 * (2 + wall_iou) / 4)


def test_panoptic_png_not_matching_its_segments_is_an_error(coco, tmp_path):
    dicts = DatasetCatalog.get(coco)
    outputs = [_outputs_from_gt(d) for d in dicts]
    extra = [dict(dicts[0], segments_info=dicts[0]["segments_info"] + [dict(dicts[0]["segments_info"][0], id=4242)])]
    with pytest.raises(PanopticSegmentsError, match=r"000000000001\.png.*segment id 4242 is in segments_info"):
        _evaluate(_cfg(), coco, extra, outputs[:1], str(tmp_path / "a"))
    missing = [dict(dicts[0], segments_info=dicts[0]["segments_info"][1:])]
    with pytest.raises(PanopticSegmentsError, match=r"000000000001\.png.*PNG has pixels of segment id 1001"):
        _evaluate(_cfg(), coco, missing, outputs[:1], str(tmp_path / "b"))


def test_prepare_tool_reports_a_png_not_matching_its_segments(root, tmp_path, capsys):
    copy = str(tmp_path / "copy")
    shutil.copytree(os.path.join(root, "coco"), os.path.join(copy, "coco"))
    path = os.path.join(copy, "coco", "annotations", "panoptic_val2017.json")
    with open(path) as f:
        data = json.load(f)
    data["annotations"][0]["segments_info"] = data["annotations"][0]["segments_info"][1:]  # drop segment 1001
    with open(path, "w") as f:
        json.dump(data, f)
    assert prepare_main([copy]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "000000000001.png" in err and "segment id 1001" in err
    assert len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------------ part AP
def _mask(segmentation, h: int, w: int) -> np.ndarray:
    rle = mask_util.merge(mask_util.frPyObjects(segmentation, h, w)) if isinstance(segmentation, list) else segmentation
    return mask_util.decode(rle).astype(bool)


def _part_outputs(d: dict, drop_classes: frozenset = frozenset()) -> dict:
    """Instances equal to the GT annotations (masks from the RLE or polygons, boxes from the JSON), score 1."""
    h, w = d["height"], d["width"]
    anns = [a for a in d["annotations"] if a["category_id"] not in drop_classes]
    instances = Instances((h, w))
    masks = [_mask(a["segmentation"], h, w) for a in anns]
    instances.pred_masks = torch.from_numpy(np.stack(masks)) if masks else torch.zeros(0, h, w, dtype=torch.bool)
    boxes = [[x, y, x + bw, y + bh] for x, y, bw, bh in (a["bbox"] for a in anns)]
    instances.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    instances.scores = torch.ones(len(anns))
    instances.pred_classes = torch.tensor([a["category_id"] for a in anns], dtype=torch.int64)
    return {"instances": instances}


def test_part_ap_of_perfect_outputs_on_the_pascal_part_val_fixture(root, tmp_path):
    """100 everywhere (the fixture's annotation ids start at 0, which pycocotools would never match)."""
    name = register_part_dataset("pascal_part_val", PART_DATASETS["pascal_part_val"], root)
    dicts = DatasetCatalog.get(name)
    results = _evaluate(_cfg(), name, dicts, [_part_outputs(d) for d in dicts], str(tmp_path / "eval"))
    for task in ("bbox", "segm"):
        res = results[task]
        assert res["AP"] == pytest.approx(100.0) and res["AP50"] == pytest.approx(100.0)
        assert res["AP_seen"] == pytest.approx(100.0) and res["AP50_seen"] == pytest.approx(100.0)
        assert "AP_unseen" in res and math.isnan(res["AP_unseen"])  # the fixture's val has no bus or dog part
        assert res["AP-cat:ear"] == pytest.approx(100.0)


@pytest.mark.parametrize("name", ["partimagenet_val", "paco_lvis_val"])
def test_part_ap_of_perfect_outputs_on_other_part_sets(root, tmp_path, name):
    """PartImageNet (polygons) and PACO (an LVIS-style JSON: no iscrowd): 100, and no seen/unseen split."""
    register_part_dataset(name, PART_DATASETS[name], root)
    dicts = DatasetCatalog.get(name)
    results = _evaluate(_cfg(), name, dicts, [_part_outputs(d) for d in dicts], str(tmp_path / "eval"))
    for task in ("bbox", "segm"):
        assert results[task]["AP"] == pytest.approx(100.0) and "AP_seen" not in results[task]


def test_part_ap_seen_unseen_split(root, tmp_path):
    """A val set with a dog (unseen) part too: perfect -> 100 both; missing the dog part -> unseen 0, seen 100."""
    part_root = str(tmp_path / "parts")
    shutil.copytree(os.path.join(root, "pascal_part"), os.path.join(part_root, "pascal_part"))
    path = os.path.join(part_root, "pascal_part", "val.json")
    with open(path) as f:
        data = json.load(f)
    image = data["images"][0]
    mask = np.zeros((image["height"], image["width"]), np.uint8)
    mask[2:14, 30:44] = 1
    rle = mask_util.encode(np.asfortranarray(mask))
    dog_head = pascal_part_class_names().index("dog:head") + 1  # VLPart ids are 1-based
    data["annotations"].append({"id": 99, "image_id": image["id"], "category_id": dog_head, "iscrowd": 0,
                                "segmentation": {"size": list(rle["size"]), "counts": rle["counts"].decode()},
                                "bbox": [30.0, 2.0, 14.0, 12.0], "area": 168.0})
    with open(path, "w") as f:
        json.dump(data, f)
    name = register_part_dataset("pascal_part_val_split_test", PART_DATASETS["pascal_part_val"], part_root)
    dicts = DatasetCatalog.get(name)
    perfect = _evaluate(_cfg(), name, dicts, [_part_outputs(d) for d in dicts], str(tmp_path / "a"))
    for task in ("bbox", "segm"):
        assert perfect[task]["AP_unseen"] == pytest.approx(100.0)
        assert perfect[task]["AP50_unseen"] == pytest.approx(100.0)
        assert perfect[task]["AP_seen"] == pytest.approx(100.0)
    missed = frozenset({dog_head - 1})
    wrong = _evaluate(_cfg(), name, dicts, [_part_outputs(d, missed) for d in dicts], str(tmp_path / "b"))
    for task in ("bbox", "segm"):
        assert wrong[task]["AP_unseen"] == pytest.approx(0.0) and wrong[task]["AP50_unseen"] == pytest.approx(0.0)
        assert wrong[task]["AP_seen"] == pytest.approx(100.0)
        assert wrong[task]["AP"] == pytest.approx(200.0 / 3)  # cat:ear, potted plant:pot 100; dog:head 0


# ------------------------------------------------------------------------------------------ model side
@pytest.fixture(scope="module")
def generic_model():
    torch.manual_seed(0)
    return build_model(_cfg()).eval()


def test_mapper_resizes_and_keeps_the_original_size(coco):
    d = DatasetCatalog.get(coco)[0]
    out = GenericEvalMapper(_cfg(), coco)(d)
    assert out["image"].shape == (3, 64, 85) and out["image"].dtype == torch.uint8  # 48x64 -> short side 64
    assert (out["height"], out["width"]) == (48, 64)
    assert out["pan_seg_file_name"] == d["pan_seg_file_name"] and out["sem_seg_file_name"] == d["sem_seg_file_name"]


def test_generic_inference_coco_and_parts(coco, root, generic_model, monkeypatch):
    calls = []
    embed = generic_model.class_embeddings
    monkeypatch.setattr(generic_model, "class_embeddings", lambda *a: calls.append(a) or embed(*a))
    wrapped = GenericInference(generic_model, MetadataCatalog.get(coco))
    mapper = GenericEvalMapper(_cfg(), coco)
    inputs = [mapper(d) for d in DatasetCatalog.get(coco)]
    for _ in range(2):
        outputs = wrapped(inputs)
    assert len(calls) == 1 and len(calls[0][0]) == 133  # the 133 names, embedded once
    for inp, out in zip(inputs, outputs):
        h, w = inp["height"], inp["width"]
        assert out["sem_seg"].shape == (133, h, w) and out["panoptic_seg"][0].shape == (h, w)
        assert out["instances"].image_size == (h, w)
        assert (out["instances"].pred_classes < 80).all()  # things only, with panoptic on
    name = register_part_dataset("pascal_part_val", PART_DATASETS["pascal_part_val"], root)
    parts = GenericInference(generic_model, MetadataCatalog.get(name))
    d = DatasetCatalog.get(name)[0]
    (out,) = parts([GenericEvalMapper(_cfg(), name)(d)])
    assert set(out) == {"instances"} and out["instances"].image_size == (d["height"], d["width"])
    assert len(out["instances"]) == 100 and (out["instances"].pred_classes < 93).all()
    assert calls[-1] == (parts.objects, parts.parts) and len(parts.parts) == 30


def test_a_model_without_generic_queries_is_refused(coco):
    torch.manual_seed(0)
    plain = build_model(_cfg(config=TEXT)).eval()
    with pytest.raises(GenericEvaluationError, match="needs generic queries: MODEL.DECODER.NUM_OBJECT_QUERIES > 0 "
                                                     "and a text encoder"):
        GenericInference(plain, MetadataCatalog.get(coco))


def test_config_without_generic_queries_is_refused_for_a_generic_test_set(root, monkeypatch):
    import datasets.builtin as data_builtin

    monkeypatch.setenv("DETECTRON2_DATASETS", root)
    cfg = _cfg(f"DATASETS.TEST=['{COCO_GENERIC_VAL}']", config=TEXT)
    with pytest.raises(ConfigError, match="needs generic queries: MODEL.DECODER.NUM_OBJECT_QUERIES > 0"):
        data_builtin.register_datasets(cfg)
    data_builtin.register_datasets(_cfg(f"DATASETS.TEST=['{COCO_GENERIC_VAL}', 'pascal_part_val']"))
