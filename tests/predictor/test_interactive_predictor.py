"""SemanticSamPredictor with a geometric stand-in model (exact expectations) and with the tiny real model."""
import math
import os

import numpy as np
import pytest
import torch
from PIL import Image

from semantic_sam.predictor import PromptableModel, SemanticSamPredictor
from semantic_sam.predictor.levels import levels_to_tokens
from semantic_sam.predictor.transforms import ResizeShortestSide
from semantic_sam.utils.image_io import UnsupportedImageError, load_image, to_rgb_uint8

from tests.predictor.disk_model import FIXTURES, IOUS, RADII, DiskModel


def _image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _centroid(mask):
    ys, xs = np.nonzero(mask)
    return xs.mean(), ys.mean()


# ------------------------------------------------------------------ stand-in model


def test_level_to_token_mapping():
    assert levels_to_tokens([1, 2, 3, 4, 5, 6], 6) == [3, 2, 0, 4, 1, 5]
    assert levels_to_tokens([3, 1], 3) == [2, 0]
    for bad in ([], [0], [7], [1, 1], [2.5], ["x"], [None]):
        with pytest.raises(ValueError):
            levels_to_tokens(bad, 6)


@pytest.mark.parametrize(
    "size, short_side, click",
    [((300, 440), None, (200.0, 150.0)), ((300, 440), 150, (231.0, 147.0)), ((1200, 1700), 640, (850.0, 600.0))],
)
def test_click_lands_where_given(disk_model, size, short_side, click):
    """Non-square and large images: the mask of a click is centred on the click in original pixels."""
    h, w = size
    pred = SemanticSamPredictor(disk_model, short_side=short_side)
    pred.set_image(_image(h, w))
    assert pred.original_size == (h, w)
    assert pred.input_size == ResizeShortestSide(short_side).get_output_shape(h, w)
    masks, scores, low_res = pred.predict(point_coords=[click], point_labels=[1])
    hp, wp = pred.padded_size
    assert hp % 32 == 0 and wp % 32 == 0
    assert masks.shape == (1, 6, h, w) and masks.dtype == bool
    assert scores.shape == (1, 6) and low_res.shape == (1, 6, hp // 4, wp // 4)
    tokens = levels_to_tokens(range(1, 7), 6)
    np.testing.assert_allclose(scores[0], [IOUS[t] for t in tokens], rtol=1e-6)
    scale = pred.input_size[0] / h  # original pixels per input pixel = 1 / scale
    for j, t in enumerate(tokens):
        cx, cy = _centroid(masks[0, j])
        # continuous coordinate x is the centre of pixel index x - 0.5
        assert abs(cx - (click[0] - 0.5)) < 0.6 / scale + 0.1, (t, cx)
        assert abs(cy - (click[1] - 0.5)) < 0.6 / scale + 0.1, (t, cy)
        radius = 4 * RADII[t] / scale
        assert masks[0, j].sum() == pytest.approx(math.pi * radius**2, rel=0.08)


def test_levels_select_and_order(disk_model):
    pred = SemanticSamPredictor(disk_model, short_side=None)
    pred.set_image(_image(96, 128))
    all_m, all_s, all_low = pred.predict(point_coords=[[60, 40]])
    m, s, low = pred.predict(point_coords=[[60, 40]], levels=[6, 3])
    np.testing.assert_array_equal(m[0], all_m[0, [5, 2]])
    np.testing.assert_array_equal(s[0], all_s[0, [5, 2]])
    np.testing.assert_array_equal(low[0], all_low[0, [5, 2]])
    logits, _, _ = pred.predict(point_coords=[[60, 40]], levels=[6, 3], return_logits=True)
    assert logits.dtype == np.float32
    np.testing.assert_array_equal(logits > 0, m)
    assert disk_model.encode_calls == 1  # encoded once for all calls


def test_several_clicks_and_boxes(disk_model):
    pred = SemanticSamPredictor(disk_model, short_side=None)
    pred.set_image(_image(128, 160))
    m1, s1, _ = pred.predict(point_coords=[[40, 50]])
    m, s, _ = pred.predict(point_coords=[[40, 50], [120, 90]], point_labels=[1, 1], box=[[20, 30, 100, 90]])
    assert m.shape == (3, 6, 128, 160)
    np.testing.assert_array_equal(m[0], m1[0])  # block attention: a click ignores the others
    np.testing.assert_array_equal(s[0], s1[0])
    cx, cy = _centroid(m[2, 5])  # the box prompt is anchored at its centre (60, 60)
    assert abs(cx - 59.5) < 0.7 and abs(cy - 59.5) < 0.7
    # the reference's unmasked attention: every prompt of the call influences the others
    _, s_none, _ = pred.predict(point_coords=[[40, 50], [120, 90]], attn_mask="none")
    assert not np.allclose(s_none[0], s1[0])


def test_models_satisfy_the_protocol(disk_model, tiny_model):
    assert isinstance(disk_model, PromptableModel) and isinstance(tiny_model, PromptableModel)
    assert not isinstance(torch.nn.Linear(2, 2), PromptableModel)


@pytest.mark.parametrize("cache", [True, False])
def test_decoder_memory_cache_is_an_option(cache):
    model = DiskModel().eval()
    pred = SemanticSamPredictor(model, short_side=None, cache_decoder_memory=cache)
    pred.set_image(_image(32, 32))
    assert model.cache_requests == [cache]


def test_bad_prompts(disk_model):
    pred = SemanticSamPredictor(disk_model, short_side=None)
    with pytest.raises(RuntimeError, match="set_image"):
        pred.predict(point_coords=[[1, 1]])
    pred.set_image(_image(50, 70))
    with pytest.raises(ValueError, match="not supported by this model"):
        pred.predict(point_coords=[[10, 10], [20, 20]], point_labels=[1, 0])
    with pytest.raises(ValueError, match="outside the image"):
        pred.predict(point_coords=[[71, 10]])
    with pytest.raises(ValueError, match="outside the image"):
        pred.predict(point_coords=[[10, -1]])
    with pytest.raises(ValueError, match="empty"):
        pred.predict(point_coords=[[10, 10]], levels=[])
    with pytest.raises(ValueError, match="out of range"):
        pred.predict(point_coords=[[10, 10]], levels=[7])
    with pytest.raises(ValueError, match="at least one"):
        pred.predict()
    with pytest.raises(ValueError, match="x0 < x1"):
        pred.predict(box=[30, 10, 20, 40])
    with pytest.raises(ValueError, match="outside the image"):
        pred.predict(box=[0, 0, 71, 10])
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        pred.predict(point_coords=[[1, 2, 3]])


def test_image_conversions(tmp_path, disk_model):
    rgb = _image(20, 30)
    np.testing.assert_array_equal(to_rgb_uint8(rgb[:, :, ::-1], "BGR"), rgb)
    gray = rgb[:, :, 0]
    assert to_rgb_uint8(gray).shape == (20, 30, 3)
    rgba = np.concatenate([rgb, np.full((20, 30, 1), 7, np.uint8)], axis=2)
    np.testing.assert_array_equal(to_rgb_uint8(rgba), rgb)
    with pytest.raises(UnsupportedImageError, match=r"must be in \[0, 1\], got \[\d+, 255\]"):
        to_rgb_uint8(rgb.astype(np.float32))  # float on the 0-255 scale: ambiguous, refused
    with pytest.raises(ValueError, match="shape"):
        to_rgb_uint8(np.zeros((4, 4, 2), np.uint8))
    # files: grayscale and RGBA PNGs load as RGB, a text file is refused clearly
    Image.fromarray(gray).save(tmp_path / "g.png")
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    assert load_image(tmp_path / "g.png").shape == (20, 30, 3)
    np.testing.assert_array_equal(load_image(tmp_path / "a.png"), rgb)
    (tmp_path / "x.png").write_text("not an image")
    with pytest.raises(ValueError, match="not a readable image"):
        load_image(tmp_path / "x.png")
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "missing.png")
    pred = SemanticSamPredictor(disk_model, short_side=None)
    pred.set_image(rgba)
    assert pred.original_size == (20, 30)


def test_select_masks_reference_rules(disk_model):
    pred = SemanticSamPredictor(disk_model)
    base = np.zeros((40, 40), bool)
    base[5:35, 5:35] = True
    near_dup = base.copy()
    near_dup[5, 5:20] = False  # IoU 0.983 with base
    holed = base.copy()
    holed[10:30, 10:30] = False
    holed[18:20, 18:20] = True  # 4-pixel island inside a large hole
    other = np.zeros((40, 40), bool)
    other[0:10, 0:10] = True
    masks = np.stack([base, near_dup, holed, other])
    scores = np.array([0.9, 0.95, 0.7, 0.3])
    recs = pred.select_masks(masks, scores, [1, 2, 3, 4], island_area=10, hole_area=0)
    assert [r["level"] for r in recs] == [2, 3]  # 1 duplicates 2, 4 is below 0.5
    assert recs[0]["score"] == 0.95 and not recs[1]["mask"][18:20, 18:20].any()
    assert recs[1]["area"] == holed.sum() - 4
    # everything below the threshold: the best mask is kept
    recs = pred.select_masks(masks[3:], np.array([0.1]), [4])
    assert len(recs) == 1 and recs[0]["level"] == 4


# ------------------------------------------------------------------ tiny real model


def test_tiny_model_reproduces_reference_demo(tiny_model):
    """attn_mask="none" and the reference's level list reproduce the reference's demo path (golden data)."""
    golden = torch.load(os.path.join(FIXTURES, "golden.pt"))
    image = np.asarray(Image.open(os.path.join(FIXTURES, "image.png")).convert("RGB"))
    h, w = image.shape[:2]
    pred = SemanticSamPredictor(tiny_model, short_side=None, attn_mask="none")
    pred.set_image(image)
    assert pred.padded_size == tuple(golden["input.padded_size_hw"].tolist())
    points = golden["demo.points"][:, :2].double().numpy() * [w, h]
    token_order = golden["demo.level"].tolist()
    token_to_level = {t: lv for lv, t in zip(range(1, 7), levels_to_tokens(range(1, 7), 6))}
    levels = [token_to_level[t] for t in token_order]
    logits, scores, _ = pred.predict(point_coords=points, levels=levels, return_logits=True)
    want = golden["demo.pred_masks"].reshape(3, 6, h, w).numpy()
    np.testing.assert_allclose(logits, want, atol=1e-4)
    np.testing.assert_allclose(scores, golden["demo.pred_ious"][0].numpy(), atol=1e-4)


def test_tiny_model_shapes_and_levels(tiny_model):
    image = np.asarray(Image.open(os.path.join(FIXTURES, "image.png")).convert("RGB"))[:, :250]  # 200 x 250
    pred = SemanticSamPredictor(tiny_model, short_side=256)
    pred.set_image(image)
    assert pred.input_size == (256, 320) and pred.padded_size == (256, 320)
    masks, scores, low = pred.predict(point_coords=[[100, 80], [10, 190]], box=[50, 60, 150, 120])
    assert masks.shape == (3, 6, 200, 250) and scores.shape == (3, 6) and low.shape == (3, 6, 64, 80)
    m2, s2, _ = pred.predict(point_coords=[[10, 190]], levels=[4, 2])
    np.testing.assert_allclose(s2[0], scores[1, [3, 1]], atol=1e-5)
    np.testing.assert_array_equal(m2[0], masks[1, [3, 1]])
    # block attention: the lone click equals the click decoded among others
    recs = pred.predict_masks(point_coords=[[100, 80]])
    assert len(recs) == 1 and 1 <= len(recs[0]) <= 6
    assert all(r["mask"].shape == (200, 250) for r in recs[0])


def test_point_convention_gives_the_training_click_box(tiny_model):
    """``point_convention="eval"`` feeds the model the 6-pixel training box of each click (the decoder's
    ``point_convention="eval"``); the default is the reference predictor's 0.005 box."""
    image = _image(60, 80, seed=3)
    clicks = np.array([[20.0, 30.0], [61.0, 12.0]])
    outputs = {}
    for convention in ("demo", "eval"):
        pred = SemanticSamPredictor(tiny_model, short_side=None, point_convention=convention)
        pred.set_image(image)
        outputs[convention] = pred.predict(point_coords=clicks, return_logits=True)[0]
        direct = tiny_model.inference(
            [{"image": torch.from_numpy(image).permute(2, 0, 1), "points": torch.from_numpy(clicks).float()}],
            tokens=levels_to_tokens(range(1, 7), 6), point_convention=convention,
        )[0]["pred_masks"]
        np.testing.assert_allclose(outputs[convention], direct.numpy(), atol=1e-4)
    assert np.abs(outputs["demo"] - outputs["eval"]).max() > 1e-3
    assert SemanticSamPredictor(tiny_model).point_convention == "demo"
    with pytest.raises(ValueError, match="point_convention"):
        SemanticSamPredictor(tiny_model, point_convention="sam")
