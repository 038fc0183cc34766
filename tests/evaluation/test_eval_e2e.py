"""Evaluation end to end with the tiny parity model: reference parity, COCO panoptic and SA-1B data."""
import itertools
import json
import logging
import os

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import inference_on_dataset
from detectron2.structures import BitMasks, Instances
from PIL import Image
from pycocotools import mask as mask_utils

from datasets.interactive_eval import build_test_loader
from datasets.register_coco_panoptic_interactive import register_coco_panoptic_interactive
from datasets.register_sa1b import register_sa1b_json
from datasets.tiny_coco_panoptic import write_tiny_coco_panoptic
from semantic_sam.build import build_model
from semantic_sam.checkpoint import load_checkpoint
from semantic_sam.config import load_config
from semantic_sam.evaluation import (
    InteractiveEvaluator,
    MultiGranularityEvaluator,
    PromptedInference,
    build_evaluator,
    clicks_from_masks,
    mask_ious,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PARITY = os.path.join(ROOT, "tests", "fixtures", "parity_tiny")
SMALL = ["COCO.INPUT.MIN_SIZE_TEST=64", "COCO.INPUT.MAX_SIZE_TEST=96", "COCO.DATALOADER.NUM_WORKERS=0",
         "SAM.INPUT.MIN_SIZE_TEST=64", "SAM.INPUT.MAX_SIZE_TEST=96"]


def _cfg(*overrides):
    return load_config(os.path.join(PARITY, "tiny_parity.yaml"), [*SMALL, *overrides])


@pytest.fixture(scope="module")
def model():
    m = build_model(_cfg())
    load_checkpoint(m, os.path.join(PARITY, "tiny_parity.pth"))
    return m.eval()


@pytest.fixture(scope="module")
def golden():
    g = torch.load(os.path.join(PARITY, "golden.pt"), map_location="cpu", weights_only=True)
    return {k: v for k, v in g.items() if k.startswith(("eval_full.", "input."))}


def test_reference_eval_parity(model, golden):
    """Kornia clicks + inference + our IoU reproduce the reference's eval_full outputs."""
    order = golden["eval_full.click_gt_index"]
    gt = golden["eval_full.gt_masks"][order]  # click order
    clicks = clicks_from_masks(gt, "kornia")
    assert torch.equal(clicks, golden["eval_full.clicks_xy"])

    inst = Instances((200, 300))
    inst.gt_masks = BitMasks(gt)
    inp = {"image": golden["input.image"], "height": 200, "width": 300, "image_id": 0,
           "instances": inst, "points": clicks.float()}
    (out,) = model.inference([inp])
    logits = out["pred_masks"].flatten(0, 1)
    ref = golden["eval_full.pred_masks_fullres_logits"]
    torch.testing.assert_close(logits, ref, atol=1e-4, rtol=0)
    sure = ref.abs() > 1e-4
    assert torch.equal((logits > 0)[sure], golden["eval_full.pred_masks_binary"][sure])

    pick = out["pred_ious"].argmax(dim=1)
    assert torch.equal(pick, golden["eval_full.max_index"])
    ious = torch.stack([mask_ious(out["pred_masks"][i] > 0, gt[i]) for i in range(3)])
    torch.testing.assert_close(ious[torch.arange(3), pick].float(), golden["eval_full.iou_max"], atol=1e-4, rtol=0)
    torch.testing.assert_close(ious.max(dim=1).values.float(), golden["eval_full.iou_oracle"], atol=1e-4, rtol=0)

    ev = InteractiveEvaluator(distributed=False)
    ev.process([inp], [out])
    res = ev.evaluate()["interactive"]
    assert res["1-IoU@Max"] == pytest.approx(100 * golden["eval_full.iou_max"].double().mean().item(), abs=1e-2)
    assert res["1-IoU@Oracle"] == pytest.approx(100 * golden["eval_full.iou_oracle"].double().mean().item(), abs=1e-2)
    assert res["token_pick_3"] == 100.0


@pytest.fixture()
def coco_dataset(tmp_path):
    name = "test_e2e_coco_interactive"
    write_tiny_coco_panoptic(str(tmp_path / "data"))
    register_coco_panoptic_interactive(str(tmp_path / "data"), name=name)
    yield name, str(tmp_path / "out")
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def test_coco_eval_only_end_to_end(model, coco_dataset):
    name, out_dir = coco_dataset
    cfg = _cfg("MODEL.DECODER.TEST.BOX_INTERACTIVE=True", f"OUTPUT_DIR={out_dir}")
    loader = build_test_loader(cfg, name)
    evaluator = build_evaluator(cfg, name)
    assert isinstance(evaluator, InteractiveEvaluator)
    results = inference_on_dataset(PromptedInference(model), loader, evaluator)

    assert list(results) == ["interactive", "box"]
    point = results["interactive"]
    assert (point["num_images"], point["num_images_without_segments"], point["num_segments"]) == (2, 1, 3)
    assert results["box"]["num_segments"] == 3
    result_dir = os.path.join(out_dir, "inference", name)
    with open(os.path.join(result_dir, "interactive_results.json")) as f:
        assert json.load(f) == json.loads(json.dumps(results))

    assert not model.training  # PromptedInference leaves the model's mode as it was

    # Independent recomputation on image 1 (the same call: its points, then its boxes), scored with numpy.
    d = next(x for x in (b[0] for b in loader) if len(x["points"]))
    gt = d["instances"].gt_masks.tensor.numpy()
    (o,) = model.inference([{"image": d["image"], "points": d["points"], "boxes": d["boxes"]}])
    pred = o["pred_masks"].numpy() > 0
    iou = np.array([[(p & gt[i % 3]).sum() / (p | gt[i % 3]).sum() for p in pred[i]] for i in range(6)])
    iou_max = iou[np.arange(6), o["pred_ious"].numpy().argmax(axis=1)]
    assert point["1-IoU@Max"] == pytest.approx(100 * iou_max[:3].mean(), abs=1e-9)
    assert point["1-IoU@Oracle"] == pytest.approx(100 * iou[:3].max(axis=1).mean(), abs=1e-9)
    assert point["mIoU_token_5"] == pytest.approx(100 * iou[:3, 5].mean(), abs=1e-9)
    assert results["box"]["1-IoU@Max"] == pytest.approx(100 * iou_max[3:].mean(), abs=1e-9)
    # No text encoder: no object labels asked for, none reported.
    assert not any("label" in k for res in results.values() for k in res)


def test_coco_eval_with_a_text_encoder_reports_object_label_accuracy(coco_dataset):
    """The tiny text config (random weights) on the tiny COCO set: label accuracy of the Max and Oracle
    outputs, recomputed independently from the model's logits; the IoU metrics are those of the same
    model asked for no labels."""
    from semantic_sam.data.label_spaces import coco_panoptic_label_space

    name, out_dir = coco_dataset
    cfg = load_config(os.path.join(ROOT, "configs", "semantic_sam_tiny_text.yaml"),
                      [*SMALL, "MODEL.DECODER.TEST.BOX_INTERACTIVE=True", f"OUTPUT_DIR={out_dir}"])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    loader = build_test_loader(cfg, name)
    results = inference_on_dataset(PromptedInference(model), loader, build_evaluator(cfg, name))
    for kind in ("interactive", "box"):
        res = results[kind]
        assert res["num_labelled_segments"] == res["num_segments"] == 3
        for key in ("label_acc@Max", "label_acc@Oracle"):
            assert 0.0 <= res[key] <= 100.0, (kind, key)
    with open(os.path.join(out_dir, "inference", name, "interactive_results.json")) as f:
        assert json.load(f)["interactive"]["label_acc@Max"] == results["interactive"]["label_acc@Max"]

    # Independent recomputation on image 1: its GT classes are person, dog, wall-other-merged.
    names = coco_panoptic_label_space().object_classes
    d = next(x for x in (b[0] for b in loader) if len(x["points"]))
    assert [names[c] for c in d["instances"].gt_object_classes.tolist()] == ["person", "dog", "wall-other-merged"]
    gt = d["instances"].gt_masks.tensor.numpy()
    (o,) = model.inference([{"image": d["image"], "points": d["points"], "boxes": d["boxes"]}],
                           class_embeddings=model.class_embeddings(names))
    assert o["pred_logits"].shape == (6, 6, 133)
    pred = o["pred_masks"].numpy() > 0
    iou = np.array([[(p & gt[i % 3]).sum() / (p | gt[i % 3]).sum() for p in pred[i]] for i in range(6)])
    labels = o["pred_logits"].numpy().argmax(axis=-1)
    gt_cls = np.tile(d["instances"].gt_object_classes.numpy(), 2)
    hit_max = labels[np.arange(6), o["pred_ious"].numpy().argmax(axis=1)] == gt_cls
    hit_oracle = labels[np.arange(6), iou.argmax(axis=1)] == gt_cls
    for kind, rows in (("interactive", slice(0, 3)), ("box", slice(3, 6))):
        assert results[kind]["label_acc@Max"] == pytest.approx(100 * hit_max[rows].mean(), abs=1e-9)
        assert results[kind]["label_acc@Oracle"] == pytest.approx(100 * hit_oracle[rows].mean(), abs=1e-9)

    # The same model asked for no labels: the same IoU metrics, no label keys.
    plain = inference_on_dataset(PromptedInference(model, class_embeddings=None), loader,
                                 InteractiveEvaluator(name, distributed=False))
    for kind in ("interactive", "box"):
        assert plain[kind] == {k: v for k, v in results[kind].items() if "label" not in k}


def _write_sa1b_folder(folder, sizes=((48, 64), (40, 56)), only=None):
    """SA-1B-format images sa_1, sa_2, ... (one per size) with nested masks, as sa_N.jpg +
    sa_N.json; ``only``: write just these image numbers (the others' content is unchanged)."""
    os.makedirs(folder)
    rng = np.random.default_rng(0)
    for n, (h, w) in enumerate(sizes, start=1):
        masks = np.zeros((3, h, w), np.uint8)
        masks[0, 4 : h - 4, 4 : w - 4] = 1  # whole object
        masks[1, 4 : h // 2, 4 : w // 2] = 1  # part
        masks[2, h // 2 + 2 : h - 6, w // 2 + 2 : w - 6] = 1  # another part
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        if only is not None and n not in only:
            continue
        Image.fromarray(pixels).save(os.path.join(folder, f"sa_{n}.jpg"))
        anns = []
        for k, m in enumerate(masks):
            rle = mask_utils.encode(np.asfortranarray(m))
            anns.append({"id": k, "segmentation": {"size": [h, w], "counts": rle["counts"].decode()},
                         "bbox": [0, 0, 1, 1], "area": int(m.sum())})
        with open(os.path.join(folder, f"sa_{n}.json"), "w") as f:
            json.dump({"image": {"image_id": n, "width": w, "height": h, "file_name": f"sa_{n}.jpg"},
                       "annotations": anns}, f)


def test_sa1b_multi_granularity_end_to_end(model, tmp_path):
    name = "test_e2e_sam_minival"
    _write_sa1b_folder(str(tmp_path / "sa1b"))
    register_sa1b_json(name, str(tmp_path / "sa1b"))
    try:
        cfg = _cfg("TEST.MULTI_GRANULARITY.MAX_CLICKS_PER_IMAGE=2")
        loader = build_test_loader(cfg, name)
        evaluator = build_evaluator(cfg, name, str(tmp_path / "out"))
        assert isinstance(evaluator, MultiGranularityEvaluator)
        results = inference_on_dataset(PromptedInference(model), loader, evaluator)["multi_granularity"]
        assert (results["num_images"], results["num_clicks"]) == (2, 4)

        # Independent recomputation with brute-force matching.
        scores, num_gt = [], []
        for (d,) in loader:
            assert d["points"].shape == (2, 2) and (d["height"], d["width"]) == tuple(d["image"].shape[-2:])
            gt = d["instances"].gt_masks.tensor.numpy()
            (o,) = model.inference([{"image": d["image"], "points": d["points"]}])
            for p, (x, y) in enumerate(d["points"].long().tolist()):
                assert gt[d["click_gt_index"][p], y, x]
                containing = gt[gt[:, y, x]]
                pred = o["pred_masks"][p].numpy() > 0
                iou = np.array([[(g & q).sum() / (g | q).sum() for q in pred] for g in containing])
                best = max(np.mean([iou[i, perm[i]] for i in range(len(iou))])
                           for perm in itertools.permutations(range(iou.shape[1]), len(iou)))
                scores.append(best)
                num_gt.append(len(containing))
        assert results["1-IoU@MultiGranularity"] == pytest.approx(100 * np.mean(scores), abs=1e-9)
        assert results["mean_gt_per_click"] == pytest.approx(np.mean(num_gt))
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def _evaluate_sa1b_folder(model, name, folder, out_dir):
    register_sa1b_json(name, folder)
    try:
        cfg = _cfg("TEST.MULTI_GRANULARITY.MAX_CLICKS_PER_IMAGE=2")
        loader = build_test_loader(cfg, name)
        return inference_on_dataset(PromptedInference(model), loader, build_evaluator(cfg, name, out_dir))
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_sam_minival_skips_a_corrupt_record_instead_of_substituting(model, tmp_path, caplog):
    """3 images, sa_2's JSON has an RLE one pixel short: 2 images are scored (the same scores as a
    folder without sa_2), 1 record is reported skipped with its file name."""
    sizes = [(48, 64), (40, 56), (44, 60)]
    folder = str(tmp_path / "sa1b")
    _write_sa1b_folder(folder, sizes)
    bad_json = os.path.join(folder, "sa_2.json")
    with open(bad_json) as f:
        data = json.load(f)
    h, w = sizes[1]
    runs = [h * w - 1]  # covers one pixel less than the image
    data["annotations"][1]["segmentation"]["counts"] = mask_utils.frPyObjects(
        {"size": [h, w], "counts": runs}, h, w
    )["counts"].decode()
    with open(bad_json, "w") as f:
        json.dump(data, f)

    with caplog.at_level(logging.INFO):
        results = _evaluate_sa1b_folder(model, "test_e2e_minival_corrupt", folder, str(tmp_path / "out"))
    res = results["multi_granularity"]
    assert (res["num_images"], res["num_skipped_records"], res["num_clicks"]) == (2, 1, 4)
    with open(tmp_path / "out" / "multi_granularity_results.json") as f:
        assert json.load(f)["multi_granularity"]["num_skipped_records"] == 1
    log = "\n".join(r.getMessage() for r in caplog.records)
    assert f"skipped 1 unreadable record(s):\n  {bad_json}: annotation 1 (id 1): RLE counts cover {h * w - 1} " \
           f"pixels, expected {h * w} ({h}x{w})" in log
    assert "num_skipped_records" in next(m for m in log.split("Multi-granularity evaluation")[1:])

    # Independent expectation: the scores of the folder that holds only the two good images.
    clean = str(tmp_path / "clean")
    _write_sa1b_folder(clean, sizes, only=(1, 3))
    expected = _evaluate_sa1b_folder(model, "test_e2e_minival_clean", clean, str(tmp_path / "out2"))
    expected = dict(expected["multi_granularity"])
    assert expected.pop("num_skipped_records") == 0
    assert {k: v for k, v in res.items() if k != "num_skipped_records"} == pytest.approx(expected, abs=1e-9)


def _prompted_input(golden):
    gt = golden["eval_full.gt_masks"][golden["eval_full.click_gt_index"]]
    return {"image": golden["input.image"], "height": 200, "width": 300, "image_id": 0,
            "points": golden["eval_full.clicks_xy"].float(), "boxes": None, "gt": gt}


def test_default_precision_on_cpu_is_plain_float32(model, golden):
    """TEST.PRECISION "auto" on the CPU: the same float32 outputs as calling the model directly."""
    inp = _prompted_input(golden)
    (direct,) = model.inference([inp])
    (wrapped,) = PromptedInference(model, precision=_cfg().TEST.PRECISION)([inp])
    assert wrapped["pred_masks"].dtype == torch.float32
    for key in ("pred_masks", "pred_ious"):
        assert torch.equal(wrapped[key], direct[key]), key


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fp16_evaluation_runs_on_cuda(model, golden):
    """"auto" on CUDA is the reference's float16 autocast: float16 outputs, finite, the same binary masks
    as float32 wherever the float32 logit is not within 0.05 of the threshold, and the evaluator scores them."""
    import copy

    cuda_model = copy.deepcopy(model).to("cuda")
    inp = _prompted_input(golden)
    (half,) = PromptedInference(cuda_model)([inp])
    (full,) = PromptedInference(cuda_model, precision="fp32")([inp])
    assert half["pred_masks"].dtype == torch.float16 and full["pred_masks"].dtype == torch.float32
    assert torch.isfinite(half["pred_masks"]).all() and torch.isfinite(half["pred_ious"]).all()
    sure = full["pred_masks"].abs() > 0.05
    assert torch.equal((half["pred_masks"] > 0)[sure], (full["pred_masks"] > 0)[sure])

    inst = Instances((200, 300))
    inst.gt_masks = BitMasks(inp["gt"])
    ev = InteractiveEvaluator(distributed=False)
    ev.process([dict(inp, instances=inst)], [half])
    res = ev.evaluate()["interactive"]
    assert res["num_segments"] == 3 and 0 <= res["1-IoU@Max"] <= res["1-IoU@Oracle"] <= 100
