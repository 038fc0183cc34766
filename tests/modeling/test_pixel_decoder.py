"""Pixel decoder ``encoder_deform``: keys, golden parity, sizes, position embedding, training."""

import math
import os

import pytest
import torch
from detectron2.layers import ShapeSpec

from semantic_sam.config import load_config
from semantic_sam.modeling.backbone.swin import build_swin_backbone
from semantic_sam.modeling.pixel_decoder.deformable_encoder import encoder_reference_points
from semantic_sam.modeling.pixel_decoder.encoder_deform import (
    MSDeformAttnPixelDecoder,
    build_encoder_deform,
)
from semantic_sam.modeling.position_encoding import PositionEmbeddingSine
from semantic_sam.modeling.registry import PIXEL_DECODER
from tests.fixture_files import PARITY, ROOT, load_golden, reference_keys, tiny_cfg

PREFIX = "model.sem_seg_head.pixel_decoder."
ATOL = 1e-4
FEATURES = ("res2", "res3", "res4", "res5")


def _swin_shapes(embed_dim: int) -> dict[str, ShapeSpec]:
    return {f"res{i + 2}": ShapeSpec(channels=embed_dim * 2**i, stride=4 * 2**i) for i in range(4)}


@pytest.fixture(scope="module")
def golden():
    return load_golden()


@pytest.fixture(scope="module")
def checkpoint():
    return torch.load(
        os.path.join(PARITY, "tiny_parity.pth"), map_location="cpu", weights_only=True
    )


def _sub(sd, prefix):
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


@pytest.fixture(scope="module")
def tiny_decoder(checkpoint):
    torch.manual_seed(0)
    model = build_encoder_deform(tiny_cfg(), _swin_shapes(16))
    model.load_state_dict(_sub(checkpoint, PREFIX), strict=True)
    return model.eval()


# --------------------------------------------------------------------------- key names


def test_registered_builder():
    assert PIXEL_DECODER.get("encoder_deform") is build_encoder_deform


@pytest.mark.parametrize(
    "variant,embed_dim,params", [("T", 96, 10_491_904), ("L", 192, 12_630_016)]
)
def test_state_dict_matches_released_keys(variant, embed_dim, params):
    cfg = load_config(
        os.path.join(ROOT, "configs", f"semantic_sam_only_sa-1b_swin{variant}.yaml"),
        ["MODEL.BACKBONE.LOAD_PRETRAINED=False"],
    )
    model = PIXEL_DECODER.get(cfg.MODEL.ENCODER.NAME)(cfg, _swin_shapes(embed_dim))
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = reference_keys(variant, PREFIX)
    assert got == expected
    assert list(got) == list(expected)
    assert sum(p.numel() for p in model.parameters()) == params


# --------------------------------------------------------------------------- golden parity


def _check_outputs(outputs, golden):
    mask_features, enc, multi_scale = outputs
    torch.testing.assert_close(
        mask_features, golden["features.pixel_decoder.mask_features"], atol=ATOL, rtol=0
    )
    torch.testing.assert_close(
        enc, golden["features.pixel_decoder.transformer_encoder_features"], atol=ATOL, rtol=0
    )
    assert len(multi_scale) == 4
    for i, m in enumerate(multi_scale):
        ref = golden[f"features.pixel_decoder.multi_scale_features.{i}"]
        torch.testing.assert_close(m, ref, atol=ATOL, rtol=0, msg=f"multi_scale_features.{i}")


def test_golden_parity_from_golden_backbone_features(tiny_decoder, golden):
    features = {k: golden[f"features.backbone.{k}"] for k in FEATURES}
    with torch.no_grad():
        _check_outputs(tiny_decoder.forward_features(features), golden)


def test_golden_parity_chained_with_backbone(tiny_decoder, golden, checkpoint):
    backbone = build_swin_backbone(tiny_cfg())
    backbone.load_state_dict(_sub(checkpoint, "model.backbone."), strict=True)
    with torch.no_grad():
        features = backbone.eval()(golden["input.image_normalized_padded"])
        _check_outputs(tiny_decoder.forward_features(features), golden)


def test_float32_under_autocast(tiny_decoder, golden):
    features = {k: golden[f"features.backbone.{k}"].bfloat16() for k in FEATURES}
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        mask_features, enc, multi_scale = tiny_decoder.forward_features(features)
    assert mask_features.dtype == enc.dtype == torch.float32
    assert all(m.dtype == torch.float32 for m in multi_scale)
    # only the bf16 rounding of the inputs differs from the float32 run
    torch.testing.assert_close(
        mask_features, golden["features.pixel_decoder.mask_features"], atol=0.15, rtol=0
    )


# --------------------------------------------------------------------------- sizes


@pytest.mark.parametrize("size", [(128, 160), (100, 150)])
def test_sizes_through_backbone_and_decoder(tiny_decoder, size):
    torch.manual_seed(0)
    backbone = build_swin_backbone(tiny_cfg()).eval()
    with torch.no_grad():
        features = backbone(torch.randn(2, 3, *size))
        mask_features, enc, multi_scale = tiny_decoder(features)
    h, w = features["res2"].shape[-2:]
    assert mask_features.shape == (2, 64, h, w)
    expected = [tuple(features[k].shape[-2:]) for k in ("res3", "res4", "res5")]
    r5 = expected[-1]
    expected.append(((r5[0] + 1) // 2, (r5[1] + 1) // 2))  # 3x3 stride-2 conv, padding 1
    assert [tuple(m.shape[-2:]) for m in multi_scale] == expected
    assert all(m.shape[:2] == (2, 64) for m in multi_scale)
    assert enc is multi_scale[0]
    assert torch.isfinite(mask_features).all()
    if size == (100, 150):  # res2 25x38, res5 4x5, extra level 2x3
        assert expected == [(13, 19), (7, 10), (4, 5), (2, 3)]


def test_missing_feature_is_named(tiny_decoder, golden):
    features = {k: golden[f"features.backbone.{k}"] for k in ("res2", "res3", "res4")}
    with pytest.raises(KeyError, match="res5"):
        tiny_decoder.forward_features(features)


def test_unsupported_feature_order():
    with pytest.raises(ValueError, match="FEATURE_ORDER"):
        MSDeformAttnPixelDecoder(
            tiny_cfg("MODEL.ENCODER.FEATURE_ORDER=high2low"), _swin_shapes(16)
        )


# --------------------------------------------------------------------------- building blocks


def test_reference_points_are_normalized_pixel_centres():
    ref = encoder_reference_points([(2, 3), (1, 2)], torch.device("cpu"), batch_size=2)
    assert ref.shape == (2, 8, 2, 2)
    expected = torch.tensor(
        [[x / 3, y / 2] for y in (0.5, 1.5) for x in (0.5, 1.5, 2.5)] + [[0.25, 0.5], [0.75, 0.5]]
    )
    for b in range(2):
        for lvl in range(2):
            torch.testing.assert_close(ref[b, :, lvl], expected)


def test_sine_position_embedding_by_hand():
    pe = PositionEmbeddingSine(4, normalize=True)  # 4 features per axis
    out = pe(torch.zeros(1, 7, 2, 3))
    assert out.shape == (1, 8, 2, 3)
    for i in range(2):
        for j in range(3):
            y = (i + 1) / (2 + 1e-6) * 2 * math.pi
            x = (j + 1) / (3 + 1e-6) * 2 * math.pi
            feats = []
            for v in (y, x):
                for k in range(4):
                    arg = v / 10000 ** (2 * (k // 2) / 4)
                    feats.append(math.sin(arg) if k % 2 == 0 else math.cos(arg))
            torch.testing.assert_close(out[0, :, i, j], torch.tensor(feats), atol=1e-6, rtol=0)


# --------------------------------------------------------------------------- training


def test_encoder_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    features = {
        k: torch.randn(1, s.channels, 64 // s.stride, 96 // s.stride)
        for k, s in _swin_shapes(16).items()
    }
    grads = {}
    for ckpt in (False, True):
        torch.manual_seed(0)
        model = build_encoder_deform(
            tiny_cfg(f"MODEL.ENCODER.USE_CKPT={ckpt}"), _swin_shapes(16)
        ).train()
        # The init zeroes the offset and attention-weight projections, so the queries (and with
        # them level_embed) would not influence anything: perturb every parameter.
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.02)
        mask_features, _, multi_scale = model(features)
        (mask_features.square().mean() + sum(m.square().mean() for m in multi_scale)).backward()
        grads[ckpt] = {n: p.grad for n, p in model.named_parameters()}
        missing = [n for n, g in grads[ckpt].items() if g is None or not g.abs().sum() > 0]
        assert not missing, missing
    for name, g in grads[False].items():
        torch.testing.assert_close(grads[True][name], g, atol=1e-6, rtol=1e-4, msg=name)
