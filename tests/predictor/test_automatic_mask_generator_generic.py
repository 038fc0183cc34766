"""SemanticSamAutomaticMaskGenerator(mode="generic"): records from the generic queries' instances (model.segment),
against model.segment called directly on the tiny generic config (random weights)."""
import os

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from semantic_sam.build import build_model
from semantic_sam.config import load_config
from semantic_sam.predictor import ResizeShortestSide, SemanticSamAutomaticMaskGenerator
from semantic_sam.predictor.amg_utils import remove_small_regions
from semantic_sam.predictor.automatic_mask_generator import NoGenericQueriesError
from semantic_sam.utils.precision import inference_autocast

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GENERIC = os.path.join(ROOT, "configs", "semantic_sam_tiny_generic.yaml")
TINY = os.path.join(ROOT, "configs", "semantic_sam_tiny_cpu.yaml")
OBJECTS = ["cat", "dog", "sofa", "sky", "grass"]
IMAGE = np.random.default_rng(0).integers(0, 256, (72, 100, 3), dtype=np.uint8)
RECORD_KEYS = {"segmentation", "area", "bbox", "predicted_iou", "point_coords", "stability_score", "crop_box",
               "level", "object_label", "object_score", "part_label", "part_score"}


@pytest.fixture(scope="module")
def generic_model():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    return build_model(load_config(GENERIC, ["MODEL.TEXT.CACHE_DIR="])).eval()


def _generator(model, **kw):
    args = {"mode": "generic", "short_side": None, "min_mask_region_area": 0}
    args.update(kw)
    gen = SemanticSamAutomaticMaskGenerator(model, **args)
    gen.set_vocabulary(OBJECTS)
    return gen


def _segment(model, image, out_size=None, precision=None):
    """model.segment's instances (instance output only) for ``image`` (H, W, 3) uint8, on its own."""
    x = {"image": torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1)}
    if out_size is not None:
        x["height"], x["width"] = out_size
    emb = model.class_embeddings(OBJECTS)
    with torch.inference_mode(), inference_autocast("cpu", precision, pixel_decoder=True):
        inst = model.segment([x], emb, instance=True, panoptic=False, semantic=False)[0]["instances"]
    return inst.pred_masks.numpy(), inst.scores.float().numpy(), inst.pred_classes.numpy()


def _expected(masks, scores, classes, thresh):
    """(masks, scores, classes) of the instances scoring > thresh, by descending score (ties: segment's order)."""
    idx = np.nonzero(scores > thresh)[0]
    idx = idx[np.argsort(-scores[idx], kind="stable")]
    return masks[idx], scores[idx], classes[idx]


def _tight_xywh(mask):
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min()), float(ys.max() - ys.min())]


def test_records_are_segments_instances_above_the_threshold(generic_model):
    masks, scores, classes = _segment(generic_model, IMAGE)
    thresh = float(np.median(scores))  # random weights: about half of the instances pass
    exp_masks, exp_scores, exp_classes = _expected(masks, scores, classes, thresh)
    assert 0 < len(exp_scores) < len(scores)

    records = _generator(generic_model, score_thresh=thresh).generate(IMAGE)
    assert len(records) == len(exp_scores)
    h, w = IMAGE.shape[:2]
    for rec, m, s, c in zip(records, exp_masks, exp_scores, exp_classes, strict=True):
        assert set(rec) == RECORD_KEYS
        seg = rec["segmentation"]
        assert seg.shape == (h, w) and seg.dtype == bool
        np.testing.assert_array_equal(seg, m)
        assert rec["area"] == int(m.sum()) > 0
        assert rec["bbox"] == _tight_xywh(m)
        assert rec["predicted_iou"] == pytest.approx(float(s), abs=1e-6) and rec["predicted_iou"] > thresh
        assert rec["object_label"] == OBJECTS[c] and rec["object_score"] == rec["predicted_iou"]
        assert rec["part_label"] is None and rec["part_score"] is None
        assert rec["point_coords"] is None and rec["level"] is None and rec["stability_score"] is None
        assert rec["crop_box"] == [0.0, 0.0, float(w), float(h)]
    ious = [r["predicted_iou"] for r in records]
    assert ious == sorted(ious, reverse=True)


def test_resized_input_gives_masks_at_image_size(generic_model):
    # the generator resizes as the predictor does; segment is given the resized image and the original size
    resized = ResizeShortestSide(48).apply_image(IMAGE)
    assert resized.shape[:2] != IMAGE.shape[:2]
    masks, scores, classes = _segment(generic_model, resized, out_size=IMAGE.shape[:2])
    exp_masks, exp_scores, _ = _expected(masks, scores, classes, -1.0)
    records = _generator(generic_model, short_side=48, score_thresh=-1.0).generate(IMAGE)
    assert len(records) == len(scores)  # every instance (top-100 over queries x classes) passes -1
    for rec, m, s in zip(records, exp_masks, exp_scores, strict=True):
        assert rec["segmentation"].shape == IMAGE.shape[:2]
        np.testing.assert_array_equal(rec["segmentation"], m)
        assert rec["predicted_iou"] == pytest.approx(float(s), abs=1e-6)


def test_rle_output_modes_decode_to_the_binary_masks(generic_model):
    thresh = float(np.median(_segment(generic_model, IMAGE)[1]))
    binary = _generator(generic_model, score_thresh=thresh).generate(IMAGE)
    coco = _generator(generic_model, score_thresh=thresh, output_mode="coco_rle").generate(IMAGE)
    raw = _generator(generic_model, score_thresh=thresh, output_mode="uncompressed_rle").generate(IMAGE)
    assert len(binary) == len(coco) == len(raw) > 0
    for b, c, r in zip(binary, coco, raw, strict=True):
        compressed = dict(c["segmentation"], counts=c["segmentation"]["counts"].encode("ascii"))
        np.testing.assert_array_equal(mask_utils.decode(compressed).astype(bool), b["segmentation"])
        rle = mask_utils.frPyObjects(r["segmentation"], *r["segmentation"]["size"])
        np.testing.assert_array_equal(mask_utils.decode(rle).astype(bool), b["segmentation"])
        assert b["area"] == c["area"] == r["area"] and b["bbox"] == c["bbox"] == r["bbox"]


def test_small_region_clean_up_applies_and_keeps_the_score_order(generic_model):
    masks, scores, classes = _segment(generic_model, IMAGE)
    exp_masks, exp_scores, _ = _expected(masks, scores, classes, float(np.median(scores)))
    area = 200
    records = _generator(generic_model, score_thresh=float(np.median(scores)), min_mask_region_area=area,
                         box_nms_thresh=1.0).generate(IMAGE)  # NMS at IoU 1.0: the clean-up drops nothing
    assert len(records) == len(exp_scores)
    for rec, m, s in zip(records, exp_masks, exp_scores, strict=True):
        cleaned, _ = remove_small_regions(m, area, "holes")
        cleaned, _ = remove_small_regions(cleaned, area, "islands")
        np.testing.assert_array_equal(rec["segmentation"], cleaned)
        assert rec["predicted_iou"] == pytest.approx(float(s), abs=1e-6)


def test_bf16_runs_segment_under_autocast(generic_model):
    masks, scores, classes = _segment(generic_model, IMAGE, precision="bf16")
    exp_masks, _, exp_classes = _expected(masks, scores, classes, float(np.median(scores)))
    records = _generator(generic_model, score_thresh=float(np.median(scores)), precision="bf16").generate(IMAGE)
    assert [r["object_label"] for r in records] == [OBJECTS[c] for c in exp_classes]
    for rec, m in zip(records, exp_masks, strict=True):
        np.testing.assert_array_equal(rec["segmentation"], m)


def test_grid_mode_is_the_default_and_unchanged(generic_model):
    gen = SemanticSamAutomaticMaskGenerator(generic_model, points_per_side=2, short_side=None,
                                            pred_iou_thresh=-1e9, stability_score_thresh=0.0, box_nms_thresh=1.0,
                                            min_mask_region_area=0)
    assert gen.mode == "grid"
    gen.set_vocabulary(OBJECTS)
    records = gen.generate(IMAGE)
    assert len(records) == 4 * 6  # 2 x 2 clicks x 6 levels, every filter off
    assert all(isinstance(r["level"], int) and len(r["point_coords"]) == 1 for r in records)
    assert all(r["object_label"] in OBJECTS and r["stability_score"] is not None for r in records)


def test_a_model_without_generic_queries_is_a_clear_error():
    torch.manual_seed(0)
    plain = build_model(load_config(TINY)).eval()
    assert not plain.has_generic_queries
    with pytest.raises(NoGenericQueriesError, match="generic queries.*NUM_OBJECT_QUERIES"):
        SemanticSamAutomaticMaskGenerator(plain, mode="generic")
    assert issubclass(NoGenericQueriesError, ValueError)
    SemanticSamAutomaticMaskGenerator(plain)  # the grid mode still works for it


def test_bad_mode_and_crops_are_refused(generic_model):
    with pytest.raises(ValueError, match="mode must be one of"):
        SemanticSamAutomaticMaskGenerator(generic_model, mode="panoptic")
    with pytest.raises(ValueError, match="crop_n_layers must be 0"):
        SemanticSamAutomaticMaskGenerator(generic_model, mode="generic", crop_n_layers=1)
