"""SemanticSAM: state-dict layout, preprocessing, prompts, inference, training forward, input errors."""
import os
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from detectron2.structures import BitMasks, Boxes, Instances

from semantic_sam.build import build_model
from semantic_sam.checkpoint import load_checkpoint
from semantic_sam.config import load_config
from semantic_sam.modeling import SemanticSAM
from semantic_sam.modeling.decoder import prompt_encoder

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PARITY = os.path.join(ROOT, "tests", "fixtures", "parity_tiny")
CRITERION = os.path.join(ROOT, "tests", "fixtures", "criterion_tiny")


@pytest.fixture(scope="module")
def golden():
    return torch.load(os.path.join(PARITY, "golden.pt"), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def model():
    m = build_model(load_config(os.path.join(PARITY, "tiny_parity.yaml")))
    load_checkpoint(m, os.path.join(PARITY, "tiny_parity.pth"))
    return m.eval()


def _random_image(h, w, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)


# ------------------------------------------------------------------------------------------------
# Structure
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,num_params", [("swinT", 52_980_543), ("swinL", 222_799_161)])
def test_state_dict_keys_and_parameter_count_match_release(name, num_params):
    cfg = load_config(
        os.path.join(ROOT, "configs", f"semantic_sam_only_sa-1b_{name}.yaml"), ["MODEL.BACKBONE.LOAD_PRETRAINED=False"]
    )
    with torch.device("meta"):  # shapes only: no memory, no random init
        m = build_model(cfg, device="meta")
    lines = [f"model.{k} {tuple(v.shape)}" for k, v in m.state_dict().items()]
    with open(os.path.join(ROOT, "tests", "fixtures", f"state_dict_keys_{name}.txt")) as f:
        expected = f.read().splitlines()
    assert lines == expected
    assert sum(p.numel() for p in m.parameters()) == num_params  # parameters() counts shared ones once
    assert sum(p.numel() for p in m.sem_seg_head.predictor.parameters()) == 14_967_941


def test_attributes_and_buffers(model):
    assert isinstance(model, SemanticSAM)
    assert model.size_divisibility == 32 and model.num_tokens == 6
    assert model.pixel_mean.shape == (3, 1, 1)
    torch.testing.assert_close(model.pixel_mean.view(-1), torch.tensor([123.675, 116.28, 103.53]))
    torch.testing.assert_close(model.pixel_std.view(-1), torch.tensor([58.395, 57.12, 57.375]))
    keys = model.state_dict().keys()
    assert "pixel_mean" not in keys and "pixel_std" not in keys
    assert not any("criterion" in k or "matcher" in k for k in keys)
    assert model.device == torch.device("cpu")
    from detectron2.modeling import META_ARCH_REGISTRY

    assert META_ARCH_REGISTRY.get("SemanticSAM") is SemanticSAM


def test_criterion_adds_no_state(model):
    before = list(model.state_dict())
    crit = model.criterion  # built lazily
    assert hasattr(crit, "weight_dict")
    assert list(model.state_dict()) == before
    assert all("criterion" not in n for n, _ in model.named_modules())


# ------------------------------------------------------------------------------------------------
# Building blocks
# ------------------------------------------------------------------------------------------------
def test_preprocess_normalizes_then_zero_pads(model):
    img = _random_image(40, 70, 0)
    images = model.preprocess_image([img, _random_image(33, 20, 1)])
    assert images.tensor.shape == (2, 3, 64, 96)
    assert images.image_sizes == [(40, 70), (33, 20)]
    expected = (img.float() - model.pixel_mean) / model.pixel_std
    torch.testing.assert_close(images.tensor[0, :, :40, :70], expected)
    assert images.tensor[0, :, 40:].abs().sum() == 0 and images.tensor[0, :, :, 70:].abs().sum() == 0


def test_preprocess_matches_golden(model, golden):
    images = model.preprocess_image([golden["input.image"]])
    torch.testing.assert_close(images.tensor, golden["input.image_normalized_padded"])


def test_encode_image_shapes(model):
    feats = model.encode_image(model.preprocess_image([_random_image(64, 96, 0)]))
    assert feats["mask_features"].shape == (1, 64, 16, 24)
    assert [tuple(f.shape[-2:]) for f in feats["multi_scale_features"]] == [(8, 12), (4, 6), (2, 3), (1, 2)]


def test_point_to_box_conventions(golden):
    clicks = golden["eval_direct.clicks_xy"].float()
    torch.testing.assert_close(
        SemanticSAM.point_to_box(clicks, (200, 300), (224, 320), "eval"), golden["eval_direct.points_padded_frame"]
    )
    torch.testing.assert_close(
        SemanticSAM.point_to_box(clicks, (200, 300), (224, 320), "demo"), golden["demo.points_padded_frame"]
    )
    # by hand: click (10, 20) in a 100x50 (H x W) image padded to 128x64
    box = SemanticSAM.point_to_box(torch.tensor([[10.0, 20.0]]), (100, 50), (128, 64), "eval")
    torch.testing.assert_close(box, torch.tensor([[10 / 64, 20 / 128, 6 / 64, 6 / 128]]))
    box = SemanticSAM.point_to_box(torch.tensor([[10.0, 20.0]]), (100, 50), (128, 64), "demo")
    torch.testing.assert_close(box, torch.tensor([[10 / 64, 20 / 128, 0.005 * 50 / 64, 0.005 * 100 / 128]]))
    with pytest.raises(ValueError, match="convention"):
        SemanticSAM.point_to_box(clicks, (200, 300), (224, 320), "sam")


def test_box_to_prompt_by_hand():
    out = SemanticSAM.box_to_prompt(torch.tensor([[10.0, 20.0, 30.0, 60.0]]), (128, 64))
    torch.testing.assert_close(out, torch.tensor([[20 / 64, 40 / 128, 20 / 64, 40 / 128]]))


def test_prompt_geometry_is_the_prompt_modules():
    assert SemanticSAM.point_to_box is prompt_encoder.point_to_box
    assert SemanticSAM.box_to_prompt is prompt_encoder.box_to_prompt


def test_postprocess_masks_matches_manual_chain():
    g = torch.Generator().manual_seed(0)
    low = torch.randn(2, 3, 8, 12, generator=g)
    out = SemanticSAM.postprocess_masks(low, (32, 48), (30, 41), (60, 82))
    assert out.shape == (2, 3, 60, 82)
    x = F.interpolate(low.reshape(1, 6, 8, 12), size=(32, 48), mode="bilinear", align_corners=False)[:, :, :30, :41]
    x = F.interpolate(x, size=(60, 82), mode="bicubic", align_corners=False, antialias=True)
    torch.testing.assert_close(out, x.reshape(2, 3, 60, 82))


# ------------------------------------------------------------------------------------------------
# Inference
# ------------------------------------------------------------------------------------------------
def test_inference_matches_golden_eval_and_demo(model, golden):
    image = golden["input.image"]
    clicks = golden["eval_direct.clicks_xy"].float()
    res = model.inference([{"image": image, "points": clicks}])[0]
    torch.testing.assert_close(
        res["pred_masks"].flatten(0, 1), golden["eval_direct.pred_masks_fullres_logits"], atol=1e-4, rtol=1e-4
    )
    assert torch.equal(res["pred_ious"].argmax(1), golden["eval_direct.max_index"])
    demo = model.inference(
        [{"image": image, "points": clicks, "height": 200, "width": 300}],
        tokens=[0, 1, 2, 3, 4, 5],
        attn_mask="none",
        point_convention="demo",
    )[0]
    torch.testing.assert_close(demo["pred_masks"].flatten(0, 1), golden["demo.pred_masks"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(demo["pred_ious"][None], golden["demo.pred_ious"], atol=1e-4, rtol=1e-4)


def test_inference_two_images_of_different_sizes_with_points_and_boxes(model):
    a, b = _random_image(50, 70, 1), _random_image(90, 40, 2)
    inputs = [
        {
            "image": a,
            "points": torch.tensor([[10.0, 20.0], [60.0, 45.0]]),
            "boxes": torch.tensor([[5.0, 5.0, 40.0, 30.0]]),
        },
        {
            "image": b,
            "boxes": torch.tensor([[0.0, 0.0, 40.0, 90.0], [10.0, 50.0, 30.0, 80.0]]),
            "height": 45,
            "width": 20,
        },
    ]
    res = model.inference(inputs, tokens=[3, 0])
    assert res[0]["pred_masks"].shape == (3, 2, 50, 70)
    assert res[0]["pred_ious"].shape == (3, 2) and res[0]["pred_boxes"].shape == (3, 2, 4)
    assert res[1]["pred_masks"].shape == (2, 2, 45, 20)
    assert res[1]["pred_boxes"].shape == (2, 2, 4)
    for r in res:
        assert torch.isfinite(r["pred_masks"]).all() and torch.isfinite(r["pred_ious"]).all()
        boxes = r["pred_boxes"]
        assert (boxes[..., 2] >= boxes[..., 0]).all() and (boxes[..., 3] >= boxes[..., 1]).all()

    # each image alone gives the same result (images are encoded and decoded independently)
    alone = model.inference([inputs[1]], tokens=[3, 0])[0]
    for key in ("pred_masks", "pred_ious", "pred_boxes"):
        torch.testing.assert_close(res[1][key], alone[key], atol=1e-5, rtol=1e-5)
    # token selection = slicing all tokens; block mask = prompts independent of each other
    full = model.inference([inputs[0]])[0]
    torch.testing.assert_close(res[0]["pred_masks"], full["pred_masks"][:, [3, 0]], atol=1e-5, rtol=1e-5)
    one = model.inference([{"image": a, "points": torch.tensor([[60.0, 45.0]])}])[0]
    torch.testing.assert_close(one["pred_masks"][0], full["pred_masks"][1], atol=1e-5, rtol=1e-5)


def test_same_size_images_are_batched_consistently(model):
    a, b = _random_image(64, 64, 3), _random_image(60, 50, 4)  # same padded size 64 x 64
    pts = torch.tensor([[20.0, 30.0]])
    both = model.inference([{"image": a, "points": pts}, {"image": b, "points": pts}])
    alone = model.inference([{"image": b, "points": pts}])[0]
    torch.testing.assert_close(both[1]["pred_masks"], alone["pred_masks"], atol=1e-5, rtol=1e-5)


def test_eval_forward_is_inference(model):
    inputs = [{"image": _random_image(40, 40, 5), "points": torch.tensor([[20.0, 20.0]])}]
    out = model(inputs)
    ref = model.inference(inputs)
    torch.testing.assert_close(out[0]["pred_masks"], ref[0]["pred_masks"])


@pytest.mark.parametrize(
    "entry,error,match",
    [
        ({"points": torch.tensor([[80.0, 10.0]])}, ValueError, "outside the image"),
        ({"points": torch.tensor([[-1.0, 10.0]])}, ValueError, "outside the image"),
        ({"boxes": torch.tensor([[10.0, 10.0, 5.0, 20.0]])}, ValueError, "must be xyxy with x0 <= x1"),
        ({"boxes": torch.tensor([[0.0, 0.0, 10.0, 41.0]])}, ValueError, "outside the image"),
        ({}, ValueError, "no prompts"),
        ({"points": torch.zeros(0, 2)}, ValueError, "no prompts"),
        ({"points": torch.tensor([10.0, 10.0])}, ValueError, r"\(P, 2\)"),
        ({"boxes": torch.tensor([[1.0, 2.0, 3.0]])}, ValueError, r"\(M, 4\)"),
        ({"points": torch.tensor([[True, False]])}, TypeError, "numeric"),
        ({"points": torch.tensor([[float("nan"), 1.0]])}, ValueError, "NaN"),
        ({"points": torch.tensor([[1.0, 1.0]]), "height": 0}, ValueError, "height"),
    ],
)
def test_bad_prompts_raise_clear_errors(model, entry, error, match):
    x = {"image": _random_image(40, 60, 0), **entry}
    with pytest.raises(error, match=match):
        model.inference([x])


def test_zero_width_box_is_accepted(model):
    """The model takes degenerate boxes (e.g. annotation boxes in evaluation); the predictor refuses them."""
    x = {"image": _random_image(40, 60, 0), "boxes": torch.tensor([[5.0, 5.0, 5.0, 20.0]])}
    assert model.inference([x])[0]["pred_masks"].shape == (1, 6, 40, 60)


@pytest.mark.parametrize(
    "image,error,match",
    [
        (torch.zeros(1, 40, 40, dtype=torch.uint8), ValueError, "3-channel"),
        (torch.zeros(4, 40, 40, dtype=torch.uint8), ValueError, "3-channel"),
        (torch.zeros(40, 40, 3, dtype=torch.uint8), ValueError, "3-channel"),
        (torch.zeros(3, 40, 40, dtype=torch.int32), TypeError, "uint8 or float"),
        (np.zeros((3, 40, 40), dtype=np.uint8), TypeError, "torch.Tensor"),
    ],
)
def test_bad_images_raise_clear_errors(model, image, error, match):
    with pytest.raises(error, match=match):
        model.inference([{"image": image, "points": torch.tensor([[1.0, 1.0]])}])


def test_bad_options_raise_clear_errors(model):
    x = [{"image": _random_image(40, 40, 0), "points": torch.tensor([[1.0, 1.0]])}]
    with pytest.raises(ValueError, match="tokens"):
        model.inference(x, tokens=[6])
    with pytest.raises(ValueError, match="tokens"):
        model.inference(x, tokens=[])
    with pytest.raises(ValueError, match="attn_mask"):
        model.inference(x, attn_mask="full")
    with pytest.raises(ValueError, match="point_convention"):
        model.inference(x, point_convention="sam")
    with pytest.raises(ValueError, match="non-empty list"):
        model.inference([])
    with pytest.raises(ValueError, match="attn_mask"):
        model.decode_prompts({}, torch.zeros(1, 1, 4), torch.zeros(1, 1), attn_mask="x")


# ------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------
def test_training_forward_reproduces_reference_losses():
    """One training step from the reference's seeds gives its weighted losses (criterion_tiny golden)."""
    g = torch.load(os.path.join(CRITERION, "golden.pt"), map_location="cpu", weights_only=True)
    m = build_model(load_config(os.path.join(CRITERION, "tiny_criterion_m2m.yaml")))
    load_checkpoint(m, os.path.join(CRITERION, "tiny_parity.pth"))
    m.train()
    img = g["input.image"]
    h, w = img.shape[-2:]
    inst = Instances(
        (h, w),
        gt_masks=BitMasks(g["input.gt_masks"]),
        gt_boxes=Boxes(g["input.gt_boxes_xyxy"]),
        gt_classes=g["input.gt_classes"],
    )
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    losses = m([{"image": img, "height": h, "width": w, "instances": inst}])
    assert len(losses) == 15
    for key, value in losses.items():
        torch.testing.assert_close(value, g[f"loss.weighted.{key}"], atol=1e-4, rtol=1e-4)
    total = sum(losses.values())
    torch.testing.assert_close(total, g["loss.total"], atol=1e-4, rtol=1e-4)
    total.backward()
    assert [n for n, p in m.named_parameters() if p.requires_grad and p.grad is None] == []


def test_training_input_errors(model):
    model.train()
    try:
        with pytest.raises(KeyError, match="instances"):
            model([{"image": _random_image(32, 32, 0)}])
    finally:
        model.eval()


def test_training_batch_of_two_sizes_and_an_empty_image():
    cfg = load_config(os.path.join(ROOT, "configs", "semantic_sam_tiny_cpu.yaml"))
    torch.manual_seed(0)
    m = build_model(cfg).train()

    def sample(h, w, n, seed):
        masks = torch.zeros(n, h, w, dtype=torch.bool)
        for i in range(n):
            masks[i, 5 * i : 5 * i + 20, 3 * i : 3 * i + 30] = True
        bm = BitMasks(masks)
        classes = torch.zeros(n, dtype=torch.long)
        inst = Instances((h, w), gt_masks=bm, gt_boxes=bm.get_bounding_boxes(), gt_classes=classes)
        return {"image": _random_image(h, w, seed), "instances": inst}

    losses = m([sample(64, 96, 3, 0), sample(80, 50, 2, 1)])
    assert len(losses) == 5 * cfg.MODEL.DECODER.DEC_LAYERS
    total = sum(losses.values())
    assert torch.isfinite(total) and total > 0
    total.backward()
    empty = m([sample(64, 64, 0, 2)])
    assert len(empty) == len(losses) and all(torch.isfinite(v) for v in empty.values())


def test_cached_decoder_memory_gives_the_same_outputs(model, golden):
    images = model.preprocess_image([golden["input.image"]])
    boxes = golden["eval_direct.points_padded_frame"][None]
    with torch.no_grad():
        plain = model.decode_prompts(model.encode_image(images), boxes, torch.zeros(1, 3))
        feats = model.encode_image(images, cache_decoder_memory=True)
        assert "decoder_memory" in feats
        cached = model.decode_prompts(feats, boxes, torch.zeros(1, 3))
    torch.testing.assert_close(cached["pred_masks"], plain["pred_masks"], atol=1e-6, rtol=1e-6)
    expected = golden["eval_direct.decoder.layer2.pred_masks"]
    torch.testing.assert_close(cached["pred_masks"], expected, atol=1e-4, rtol=1e-4)
