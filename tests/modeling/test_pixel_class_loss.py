"""The per-pixel object-class loss (MODEL.DECODER.PIXEL_CLASS_WEIGHT): targets, loss value, training step."""
from __future__ import annotations

import math
import os
import random

import numpy as np
import pytest
import torch
from detectron2.structures import BitMasks, Instances

from semantic_sam.build import build_model
from semantic_sam.config import ConfigError, load_config
from semantic_sam.modeling.pixel_class_loss import IGNORE, pixel_class_loss, pixel_class_targets

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_TEXT = os.path.join(ROOT, "configs", "semantic_sam_tiny_text.yaml")
TINY = os.path.join(ROOT, "configs", "semantic_sam_tiny_cpu.yaml")


def _box_mask(hp: int, wp: int, y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
    m = torch.zeros(hp, wp, dtype=torch.bool)
    m[y0:y1, x0:x1] = True
    return m


def test_targets_take_the_smallest_mask_at_each_sampled_pixel():
    # 8 x 8 padded frame, features 4 x 4: cell (i, j) samples pixel (2i + 1, 2j + 1)
    big = _box_mask(8, 8, 0, 6, 0, 8)      # rows 0-5: cells of rows 0-2
    small = _box_mask(8, 8, 2, 4, 2, 6)    # sampled pixels (3, 3) and (3, 5): cells (1, 1), (1, 2)
    unlabelled = _box_mask(8, 8, 6, 8, 0, 8)
    target = pixel_class_targets(torch.stack([small, big, unlabelled]), torch.tensor([2, 0, -1]), (4, 4))
    expected = torch.tensor(
        [[0, 0, 0, 0],
         [0, 2, 2, 0],
         [0, 0, 0, 0],
         [IGNORE, IGNORE, IGNORE, IGNORE]]
    )
    assert torch.equal(target, expected)
    # the order of the masks does not matter, only their areas
    again = pixel_class_targets(torch.stack([big, small]), torch.tensor([0, 2]), (4, 4))
    assert torch.equal(again[:3], expected[:3])


def test_targets_of_an_image_without_labelled_masks_ignore_everything():
    assert (pixel_class_targets(torch.zeros(0, 8, 8, dtype=torch.bool), torch.zeros(0, dtype=torch.long), (2, 2)) == IGNORE).all()
    m = _box_mask(8, 8, 0, 8, 0, 8)[None]
    assert (pixel_class_targets(m, torch.tensor([-1]), (4, 4)) == IGNORE).all()


@pytest.mark.parametrize("size", [(3, 4), (0, 4)])
def test_targets_refuse_features_that_do_not_tile_the_masks(size):
    with pytest.raises(ValueError, match="do not tile"):
        pixel_class_targets(torch.zeros(1, 8, 8, dtype=torch.bool), torch.tensor([0]), size)


def test_loss_is_the_cross_entropy_of_the_labelled_pixels():
    # 1 image, 2 x 1 pixels, C = D = 2, identity projection, class embeddings e0 and e1
    features = torch.tensor([[3.0, 4.0], [0.0, -2.0]]).t().reshape(1, 2, 2, 1)  # pixel 0: (3, 4), pixel 1: (0, -2)
    class_embed = torch.eye(2)
    classes = torch.eye(2)
    scale = torch.tensor(math.log(2.0))
    target = torch.tensor([[1], [IGNORE]])
    loss = pixel_class_loss(features, class_embed, classes, scale, [target])
    # pixel 0 normalized = (0.6, 0.8); logits 2 * (0.6, 0.8) = (1.2, 1.6); target class 1
    expected = -math.log(math.exp(1.6) / (math.exp(1.2) + math.exp(1.6)))
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    both = pixel_class_loss(features, class_embed, classes, scale, [torch.tensor([[1], [0]])])
    # pixel 1 normalized = (0, -1): logits (0, -2), target 0
    expected_1 = -math.log(1.0 / (1.0 + math.exp(-2.0)))
    assert both.item() == pytest.approx((expected + expected_1) / 2, rel=1e-5)


def test_loss_without_labelled_pixels_is_zero_and_keeps_the_graph():
    features = torch.randn(2, 4, 3, 3, requires_grad=True)
    loss = pixel_class_loss(features, torch.randn(4, 5), torch.randn(3, 5), torch.tensor(0.0),
                            [torch.full((3, 3), IGNORE)] * 2)
    assert loss.item() == 0.0
    loss.backward()
    assert features.grad is not None


def test_loss_input_errors():
    features = torch.randn(1, 4, 2, 2)
    args = (torch.randn(4, 5), torch.randn(3, 5), torch.tensor(0.0))
    with pytest.raises(ValueError, match="2 target maps for a batch of 1"):
        pixel_class_loss(features, *args, [torch.zeros(2, 2, dtype=torch.long)] * 2)
    with pytest.raises(ValueError, match=r"must be \(h, w\) = \(2, 2\)"):
        pixel_class_loss(features, *args, [torch.zeros(3, 2, dtype=torch.long)])
    with pytest.raises(ValueError, match="class id 3 is out of range for 3 classes"):
        pixel_class_loss(features, *args, [torch.full((2, 2), 3)])


def _labelled(seed: int, h: int = 64, w: int = 80) -> dict:
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(3, h, w, dtype=torch.bool)
    masks[0, :40] = True
    masks[1, 10:30, 10:50] = True
    masks[2, 40:, :] = True
    bm = BitMasks(masks)
    inst = Instances((h, w), gt_masks=bm, gt_boxes=bm.get_bounding_boxes())
    inst.gt_object_classes = torch.tensor([0, 1, 2])
    return {
        "image": torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g),
        "instances": inst,
        "dataset_name": "toy",
        "vocabulary": {"object": ["cat", "car", "cup"], "part": []},
    }


def _step(weight: float) -> tuple[dict, torch.nn.Module]:
    torch.manual_seed(0)
    model = build_model(load_config(TINY_TEXT, [f"MODEL.DECODER.PIXEL_CLASS_WEIGHT={weight}"])).train()
    torch.manual_seed(1)
    random.seed(1)
    np.random.seed(1)
    return model([_labelled(0), _labelled(1)]), model


def test_training_step_adds_the_weighted_pixel_loss_and_trains_the_backbone():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        base, _ = _step(0.0)
        losses, model = _step(3.0)
        assert "loss_pixel_cls" not in base
        assert set(losses) == set(base) | {"loss_pixel_cls"}
        for key in base:  # the other losses do not change
            torch.testing.assert_close(losses[key], base[key], msg=key)
        # the loss is about log(3) for near-uniform logits of an untrained model, times the weight
        assert 0.5 * 3.0 * math.log(3) < losses["loss_pixel_cls"].item() < 2.0 * 3.0 * math.log(3)
        losses["loss_pixel_cls"].backward()
        dec = model.sem_seg_head.predictor
        assert dec.class_embed.grad.any()
        assert any(p.grad is not None and p.grad.any() for p in model.backbone.parameters())
        assert any(p.grad is not None and p.grad.any() for p in model.text_encoder.parameters())
    finally:
        torch.set_num_threads(threads)


def test_pixel_class_weight_config_errors():
    with pytest.raises(ConfigError, match="PIXEL_CLASS_WEIGHT"):
        load_config(TINY_TEXT, ["MODEL.DECODER.PIXEL_CLASS_WEIGHT=-1.0"])
    with pytest.raises(ConfigError, match="PIXEL_CLASS_WEIGHT.*noencoder"):
        load_config(TINY, ["MODEL.DECODER.PIXEL_CLASS_WEIGHT=1.0"])
