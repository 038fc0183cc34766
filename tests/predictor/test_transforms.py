"""ResizeShortestSide: the reference's 640 short side, the long-side cap and the aspect-ratio limit."""
import numpy as np
import pytest
import torch
from PIL import Image

from semantic_sam.predictor import SemanticSamAutomaticMaskGenerator, SemanticSamPredictor, load_image
from semantic_sam.predictor.transforms import ResizeShortestSide
from semantic_sam.utils.image_io import UnsupportedImageError


@pytest.mark.parametrize(
    "hw, expected",
    [
        ((480, 640), (640, 853)),  # 4:3, the reference's int(640 * 640 / 480)
        ((1080, 1920), (640, 1137)),
        ((200, 800), (640, 2560)),  # 4:1: exactly at the cap, unchanged
        ((800, 200), (2560, 640)),
        ((100, 1000), (256, 2560)),  # 10:1: 640 x 6400 scaled by 0.4
        ((32, 640), (128, 2560)),  # 20:1, the most elongated accepted
    ],
)
def test_default_cap(hw, expected):
    assert ResizeShortestSide().get_output_shape(*hw) == expected


def test_no_cap_and_own_size():
    assert ResizeShortestSide(max_size=None).get_output_shape(100, 1000) == (640, 6400)
    assert ResizeShortestSide(short_side=None).get_output_shape(3000, 4000) == (1920, 2560)
    assert ResizeShortestSide(short_side=None).get_output_shape(300, 400) == (300, 400)


def test_aspect_ratio_refused():
    with pytest.raises(UnsupportedImageError, match=r"width 480 and height 4 .* 120:1 exceeds the limit of 20:1$"):
        ResizeShortestSide().get_output_shape(4, 480)
    with pytest.raises(ValueError, match="21:1"):
        ResizeShortestSide(short_side=None, max_size=None).get_output_shape(420, 20)
    assert ResizeShortestSide(max_aspect_ratio=None).get_output_shape(4, 480) == (21, 2560)
    with pytest.raises(ValueError, match="max_aspect_ratio"):
        ResizeShortestSide(max_aspect_ratio=0.5)


def test_predictor_encodes_capped_size(tmp_path, disk_model):
    # a 10:1 PNG: without the cap the predictor would encode 640 x 6400
    rgb = np.random.default_rng(0).integers(0, 256, (40, 400, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "wide.png")
    pred = SemanticSamPredictor(disk_model)
    pred.set_image(load_image(tmp_path / "wide.png"))
    assert pred.original_size == (40, 400)
    assert pred.input_size == pred.padded_size == (256, 2560)
    masks, _, _ = pred.predict(point_coords=[[200, 20]], levels=[1])
    assert masks.shape == (1, 1, 40, 400)


def test_predictor_refuses_elongated_image_and_forgets_the_last(disk_model):
    pred = SemanticSamPredictor(disk_model)
    pred.set_image(np.zeros((20, 30, 3), np.uint8))
    with pytest.raises(UnsupportedImageError, match="aspect ratio 120:1"):
        pred.set_image(np.zeros((4, 480, 3), np.uint8))
    assert not pred.is_image_set and disk_model.encode_calls == 1
    with pytest.raises(ValueError, match="aspect ratio"):
        SemanticSamAutomaticMaskGenerator(disk_model, points_per_side=2).generate(np.zeros((480, 4, 3), np.uint8))


def test_predictor_converts_or_refuses_arrays(disk_model):
    rgb8 = np.random.default_rng(1).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    pred = SemanticSamPredictor(disk_model, short_side=None)
    pred.set_image(rgb8)
    ref = pred.features["mask_features"].clone()
    for same in (rgb8.astype(np.uint16) * 257, rgb8.astype(np.float32) / 255):
        pred.set_image(same)
        torch.testing.assert_close(pred.features["mask_features"], ref, rtol=0, atol=0)
    with pytest.raises(UnsupportedImageError, match="NaN"):
        pred.set_image(np.where(rgb8 > 250, np.nan, rgb8 / 255.0))
    with pytest.raises(UnsupportedImageError, match=r"\[0, 1\]"):
        pred.set_image(rgb8.astype(np.float32))


@pytest.mark.parametrize("n", [0, -2])
def test_generator_refuses_empty_grid(disk_model, n):
    with pytest.raises(ValueError, match=f"points_per_side must be >= 1, got {n}"):
        SemanticSamAutomaticMaskGenerator(disk_model, points_per_side=n)
