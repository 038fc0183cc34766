"""SemanticSamAutomaticMaskGenerator: each filter against the geometric stand-in model, then the tiny model."""
import json

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from torchvision.ops import box_iou

from semantic_sam.predictor import SemanticSamAutomaticMaskGenerator
from semantic_sam.predictor.amg_utils import MaskData, masks_to_coco_rle

IMAGE = np.random.default_rng(0).integers(0, 256, (256, 320, 3), dtype=np.uint8)
NO_FILTERS = dict(pred_iou_thresh=-1e9, stability_score_thresh=0.0, box_nms_thresh=1.0, min_mask_region_area=0)


def _amg(model, **kw):
    args = dict(points_per_side=4, short_side=None)
    args.update(kw)
    return SemanticSamAutomaticMaskGenerator(model, **args)


def _xyxy(records):
    b = torch.tensor([r["bbox"] for r in records], dtype=torch.float)
    return torch.cat([b[:, :2], b[:, :2] + b[:, 2:]], dim=1)


def test_all_candidates_without_filters(disk_model):
    recs = _amg(disk_model, **NO_FILTERS).generate(IMAGE)
    assert len(recs) == 16 * 6
    assert set(recs[0]) == {
        "segmentation", "area", "bbox", "predicted_iou", "point_coords", "stability_score", "crop_box", "level"
    }
    for r in recs:
        m = r["segmentation"]
        assert m.shape == (256, 320) and m.dtype == bool and r["area"] == m.sum()
        x, y = r["point_coords"][0]
        assert m[int(y), int(x)]  # each disk is centred on its click (pixel coordinates of the image)
        ys, xs = np.nonzero(m)
        assert r["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()]
        assert r["crop_box"] == [0, 0, 320, 256]


@pytest.mark.parametrize("thresh, per_point", [(0.92, 4), (0.96, 2)])
def test_pred_iou_thresh(disk_model, thresh, per_point):
    recs = _amg(disk_model, **{**NO_FILTERS, "pred_iou_thresh": thresh}).generate(IMAGE)
    assert len(recs) == 16 * per_point
    assert all(r["predicted_iou"] > thresh for r in recs)


def test_stability_score_thresh_and_offset(disk_model):
    recs = _amg(disk_model, **{**NO_FILTERS, "stability_score_thresh": 0.92}).generate(IMAGE)
    # token 1 (user level 5) has a logit slope of 0.5 per low-res pixel: unstable at offset 1
    assert len(recs) == 16 * 5 and 5 not in {r["level"] for r in recs}
    assert all(r["stability_score"] >= 0.92 for r in recs)
    recs = _amg(disk_model, **{**NO_FILTERS, "stability_score_thresh": 0.92, "stability_score_offset": 0.01}).generate(
        IMAGE
    )
    assert len(recs) == 16 * 6


def test_stability_at_full_resolution(disk_model):
    low = _amg(disk_model, **{**NO_FILTERS, "stability_score_thresh": 0.92}).generate(IMAGE)
    full = _amg(disk_model, **{**NO_FILTERS, "stability_score_thresh": 0.92}, stability_at_full_res=True).generate(IMAGE)
    assert len(full) == len(low) and all(r["stability_score"] >= 0.92 for r in full)


def test_box_nms(disk_model):
    everything = _amg(disk_model, **NO_FILTERS).generate(IMAGE)
    kept = _amg(disk_model, **{**NO_FILTERS, "box_nms_thresh": 0.7}).generate(IMAGE)
    assert 0 < len(kept) < len(everything)
    iou = box_iou(_xyxy(kept), _xyxy(kept))
    iou.fill_diagonal_(0)
    assert iou.max() <= 0.7
    kept_boxes = _xyxy(kept)
    kept_scores = torch.tensor([r["predicted_iou"] for r in kept])
    for r in everything:
        if any(r["bbox"] == k["bbox"] and r["predicted_iou"] == k["predicted_iou"] for k in kept):
            continue
        overlap = box_iou(_xyxy([r]), kept_boxes)[0] > 0.7
        assert (overlap & (kept_scores >= r["predicted_iou"])).any()  # dropped for a better overlapping mask


def test_min_mask_region_area_postprocessing():
    a = np.zeros((60, 60), bool)
    a[10:40, 10:40] = True
    a[20:22, 20:22] = False  # 4-pixel hole
    b = a.copy()
    b[20:22, 20:22] = True  # a without its hole: a duplicate once a is cleaned
    c = np.zeros((60, 60), bool)
    c[45:58, 5:25] = True
    c[2:4, 55:57] = True  # 4-pixel island far away
    masks = np.stack([a, b, c])
    data = MaskData(
        rles=masks_to_coco_rle(masks),
        boxes=torch.tensor([[10, 10, 39, 39], [10, 10, 39, 39], [5, 2, 56, 57]]),
        iou_preds=torch.tensor([0.99, 0.9, 0.95]),
    )
    out = SemanticSamAutomaticMaskGenerator.postprocess_small_regions(data, 10, 0.7)
    assert out["iou_preds"].tolist() == pytest.approx([0.9, 0.95])  # a (changed) loses to b (unchanged)
    cleaned_c = mask_utils.decode({"size": [60, 60], "counts": out["rles"][1]["counts"]}).astype(bool)
    assert cleaned_c.sum() == 13 * 20 and not cleaned_c[2:4, 55:57].any()
    assert out["boxes"][1].tolist() == [5, 45, 24, 57]


@pytest.mark.parametrize("attn_mask", ["block", "none"])
def test_points_per_batch(disk_model, attn_mask):
    runs = [_amg(disk_model, points_per_batch=ppb, attn_mask=attn_mask).generate(IMAGE) for ppb in (1, 5, 200)]
    scores = [[r["predicted_iou"] for r in recs] for recs in runs]
    if attn_mask == "block":
        for recs in runs[1:]:
            assert len(recs) == len(runs[0])
            for r, r0 in zip(recs, runs[0]):
                assert r["bbox"] == r0["bbox"] and r["predicted_iou"] == r0["predicted_iou"]
                assert (r["segmentation"] == r0["segmentation"]).all()
    else:  # the reference's mode: a click's score depends on the clicks decoded with it
        assert scores[0] != scores[1] or scores[1] != scores[2]


def test_crop_layers(disk_model):
    gen = _amg(disk_model, crop_n_layers=1, points_per_side=6, pred_iou_thresh=0.9, min_mask_region_area=0)
    recs = gen.generate(IMAGE)
    crops = {tuple(r["crop_box"]) for r in recs}
    assert (0, 0, 320, 256) in crops and len(crops) > 1
    for r in recs:
        x0, y0, cw, ch = r["crop_box"]
        x, y = r["point_coords"][0]
        assert x0 <= x <= x0 + cw and y0 <= y <= y0 + ch
        assert r["segmentation"][int(y), int(x)]
        if (x0, y0, cw, ch) != (0, 0, 320, 256):
            bx, by, bw, bh = r["bbox"]
            for edge, img_edge, v in ((x0, 0, bx), (y0, 0, by), (x0 + cw, 320, bx + bw), (y0 + ch, 256, by + bh)):
                assert edge == img_edge or abs(v - edge) > 20  # the crop-edge filter
    iou = box_iou(_xyxy(recs), _xyxy(recs))
    iou.fill_diagonal_(0)
    assert iou.max() <= 0.7


def test_output_modes_and_levels(disk_model):
    binary = _amg(disk_model, levels=[3, 6]).generate(IMAGE)
    assert binary and {r["level"] for r in binary} <= {3, 6}
    coco = _amg(disk_model, levels=[3, 6], output_mode="coco_rle").generate(IMAGE)
    unc = _amg(disk_model, levels=[3, 6], output_mode="uncompressed_rle").generate(IMAGE)
    json.dumps([{k: v for k, v in r.items()} for r in coco])
    json.dumps(unc)
    for b, c, u in zip(binary, coco, unc):
        np.testing.assert_array_equal(mask_utils.decode(c["segmentation"]).astype(bool), b["segmentation"])
        h, w = u["segmentation"]["size"]
        rle = mask_utils.frPyObjects(u["segmentation"], h, w)
        np.testing.assert_array_equal(mask_utils.decode(rle).astype(bool), b["segmentation"])
        assert c["area"] == u["area"] == b["area"]


def test_resized_input_and_bad_arguments(disk_model):
    recs = _amg(disk_model, short_side=128).generate(IMAGE)
    assert recs and all(r["segmentation"].shape == (256, 320) for r in recs)
    with pytest.raises(ValueError, match="exactly one"):
        SemanticSamAutomaticMaskGenerator(disk_model, points_per_side=4, point_grids=[np.zeros((1, 2))])
    with pytest.raises(ValueError, match="output_mode"):
        SemanticSamAutomaticMaskGenerator(disk_model, output_mode="png")
    with pytest.raises(ValueError, match="empty"):
        SemanticSamAutomaticMaskGenerator(disk_model, levels=[])
    with pytest.raises(ValueError, match="crop_n_layers"):
        SemanticSamAutomaticMaskGenerator(disk_model, points_per_side=None, point_grids=[np.full((3, 2), 0.5)], crop_n_layers=1)
    grid = np.array([[0.5, 0.5]])
    recs = SemanticSamAutomaticMaskGenerator(disk_model, points_per_side=None, point_grids=[grid], short_side=None).generate(IMAGE)
    assert {tuple(r["point_coords"][0]) for r in recs} == {(160.0, 128.0)}


def test_encodes_once_per_crop(disk_model):
    _amg(disk_model, points_per_side=3, points_per_batch=4, crop_n_layers=1, min_mask_region_area=0).generate(IMAGE)
    assert disk_model.encode_calls == 5 and disk_model.decode_calls == [4, 4, 1] * 5


# ------------------------------------------------------------------ tiny real model


def _synthetic_image():
    img = np.full((160, 224, 3), 40, np.uint8)
    img[20:90, 30:120] = (200, 60, 60)
    yy, xx = np.mgrid[:160, :224]
    img[(yy - 100) ** 2 + (xx - 160) ** 2 < 35**2] = (60, 200, 90)
    return img


def test_tiny_model_batch_independent_and_rle(tiny_model):
    img = _synthetic_image()
    # random weights give small logits: a small stability offset keeps some masks
    kw = dict(
        points_per_side=6, short_side=None, pred_iou_thresh=-1e9, stability_score_thresh=0.5,
        stability_score_offset=0.02, output_mode="coco_rle",
    )
    a = SemanticSamAutomaticMaskGenerator(tiny_model, points_per_batch=7, **kw).generate(img)
    b = SemanticSamAutomaticMaskGenerator(tiny_model, points_per_batch=64, **kw).generate(img)
    assert len(a) > 0 and len(a) == len(b)
    for ra, rb in zip(a, b):
        assert ra["predicted_iou"] == pytest.approx(rb["predicted_iou"], abs=1e-5)
        ma = mask_utils.decode(ra["segmentation"]).astype(bool)
        mb = mask_utils.decode(rb["segmentation"]).astype(bool)
        assert ma.shape == (160, 224) and (ma != mb).sum() <= 2
        assert mask_utils.area(ra["segmentation"]) == ra["area"]


def test_tiny_model_crop_layers(tiny_model):
    img = _synthetic_image()
    gen = SemanticSamAutomaticMaskGenerator(
        tiny_model, points_per_side=4, crop_n_layers=1, short_side=128, pred_iou_thresh=-1e9,
        stability_score_thresh=0.0, crop_n_points_downscale_factor=2,
    )
    recs = gen.generate(img)
    assert recs and all(r["segmentation"].shape == (160, 224) for r in recs)
    crops = [[0, 0, 224, 160], [0, 0, 139, 107], [0, 53, 139, 160], [85, 0, 224, 107], [85, 53, 224, 160]]
    crops_xywh = [[float(x0), float(y0), float(x1 - x0), float(y1 - y0)] for x0, y0, x1, y1 in crops]
    assert all(r["crop_box"] in crops_xywh for r in recs)
