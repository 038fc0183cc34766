"""Swin backbone: checkpoint key names, golden parity, odd sizes, training, ImageNet init."""

import logging
import os

import pytest
import torch
import torch.nn.functional as F

from semantic_sam.config import load_config
from semantic_sam.modeling.backbone.swin import (
    D2SwinTransformer,
    PatchMerging,
    SwinTransformer,
    SwinTransformerBlock,
    build_swin_backbone,
    window_layout,
)
from semantic_sam.modeling.registry import BACKBONE
from tests.fixture_files import PARITY, ROOT, load_golden, reference_keys, tiny_cfg

PREFIX = "model.backbone."
ATOL = 1e-4


@pytest.fixture(scope="module")
def golden():
    return load_golden()


@pytest.fixture(scope="module")
def tiny_backbone():
    sd = torch.load(os.path.join(PARITY, "tiny_parity.pth"), map_location="cpu", weights_only=True)
    model = build_swin_backbone(tiny_cfg())
    model.load_state_dict(
        {k[len(PREFIX) :]: v for k, v in sd.items() if k.startswith(PREFIX)}, strict=True
    )
    return model.eval()


# --------------------------------------------------------------------------- key names


def test_registered_builder():
    assert BACKBONE.get("swin") is build_swin_backbone


def test_swinT_state_dict_matches_released_keys():
    cfg = load_config(
        os.path.join(ROOT, "configs", "semantic_sam_only_sa-1b_swinT.yaml"),
        ["MODEL.BACKBONE.LOAD_PRETRAINED=False"],
    )
    model = BACKBONE.get(cfg.MODEL.BACKBONE.NAME)(cfg)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = reference_keys("T", PREFIX)
    assert got == expected
    assert list(got) == list(expected)
    assert sum(p.numel() for p in model.parameters()) == 27_520_698
    assert {k: (s.channels, s.stride) for k, s in model.output_shape().items()} == {
        "res2": (96, 4),
        "res3": (192, 8),
        "res4": (384, 16),
        "res5": (768, 32),
    }
    assert model.size_divisibility == 32


def test_swinL_state_dict_matches_released_keys():
    cfg = load_config(
        os.path.join(ROOT, "configs", "semantic_sam_only_sa-1b_swinL.yaml"),
        ["MODEL.BACKBONE.LOAD_PRETRAINED=False"],
    )
    with torch.device("meta"):  # shapes only: no 200M-parameter allocation
        model = D2SwinTransformer(cfg)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == reference_keys("L", PREFIX)
    assert sum(p.numel() for p in model.parameters()) == 195_201_204


# --------------------------------------------------------------------------- golden parity


def test_golden_parity(tiny_backbone, golden):
    with torch.no_grad():
        out = tiny_backbone(golden["input.image_normalized_padded"])
    assert list(out) == ["res2", "res3", "res4", "res5"]
    for name, value in out.items():
        ref = golden[f"features.backbone.{name}"]
        assert value.shape == ref.shape, name
        assert value.is_contiguous()
        torch.testing.assert_close(value, ref, atol=ATOL, rtol=0, msg=name)


# --------------------------------------------------------------------------- an independent block


def _naive_block(blk: SwinTransformerBlock, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The textbook shifted-window block, window by window, with masks built pixel by pixel."""
    ws, s = blk.window_size, blk.shift_size
    b, _, c = x.shape
    attn = blk.attn
    nh, hd = attn.num_heads, c // attn.num_heads
    hp, wp = -(-h // ws) * ws, -(-w // ws) * ws
    y = torch.zeros(b, hp, wp, c, dtype=x.dtype)
    y[:, :h, :w] = blk.norm1(x).view(b, h, w, c)
    y = torch.roll(y, (-s, -s), (1, 2)) if s else y

    def region(i, n):  # region of a coordinate of the shifted, padded grid
        return 0 if i < n - ws else (1 if i < n - s else 2)

    table = attn.relative_position_bias_table
    out = torch.zeros_like(y)
    for wi in range(hp // ws):
        for wj in range(wp // ws):
            cells = [(wi * ws + r, wj * ws + q) for r in range(ws) for q in range(ws)]
            tok = torch.stack([y[:, i, j] for i, j in cells], 1)  # (B, N, C)
            bias = torch.empty(nh, len(cells), len(cells), dtype=x.dtype)
            mask = torch.zeros(len(cells), len(cells), dtype=x.dtype)
            for a, (ia, ja) in enumerate(cells):
                for bb, (ib, jb) in enumerate(cells):
                    bias[:, a, bb] = table[(ia - ib + ws - 1) * (2 * ws - 1) + (ja - jb + ws - 1)]
                    if s and (region(ia, hp), region(ja, wp)) != (region(ib, hp), region(jb, wp)):
                        mask[a, bb] = -100.0
            q, k, v = attn.qkv(tok).view(b, -1, 3, nh, hd).permute(2, 0, 3, 1, 4)
            p = torch.softmax((q * attn.scale) @ k.transpose(-1, -2) + bias + mask, -1)
            o = attn.proj((p @ v).transpose(1, 2).reshape(b, -1, c))
            for n_, (i, j) in enumerate(cells):
                out[:, i, j] = o[:, n_]
    out = torch.roll(out, (s, s), (1, 2)) if s else out
    x = x + out[:, :h, :w].reshape(b, h * w, c)
    return x + blk.mlp(blk.norm2(x))


@pytest.mark.parametrize("shift", [0, 3])
@pytest.mark.parametrize("hw", [(7, 7), (9, 13), (14, 5), (3, 4)])
def test_block_matches_naive_windows(shift, hw):
    torch.manual_seed(0)
    h, w = hw
    blk = SwinTransformerBlock(dim=8, num_heads=2, window_size=7, shift_size=shift).double()
    with torch.no_grad():
        for p in blk.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    x = torch.randn(2, h * w, 8, dtype=torch.float64, requires_grad=True)
    got = blk(x, window_layout(h, w, 7, shift, x.device))
    x2 = x.detach().clone().requires_grad_(True)
    ref = _naive_block(blk, x2, h, w)
    torch.testing.assert_close(got, ref, atol=1e-10, rtol=0)
    # gradients, including the one through the relative position bias table
    g = torch.randn_like(got)
    grads = torch.autograd.grad(got, [x, *blk.parameters()], g)
    ref_grads = torch.autograd.grad(ref, [x2, *blk.parameters()], g)
    for a, b_ in zip(grads, ref_grads):
        torch.testing.assert_close(a, b_, atol=1e-9, rtol=0)


def test_window_layout_is_a_permutation():
    lay = window_layout(9, 13, 7, 3, torch.device("cpu"))
    assert lay.num_windows == 2 * 2 and lay.gather.numel() == 4 * 49
    assert lay.pad_slots.numel() == 4 * 49 - 9 * 13
    assert torch.equal(lay.gather[lay.scatter], torch.arange(9 * 13))
    assert lay.mask.shape == (4, 49, 49) and set(lay.mask.unique().tolist()) == {0.0, -100.0}
    assert window_layout(9, 13, 7, 0, torch.device("cpu")).mask is None


def test_patch_merging_order_and_odd_padding():
    merge = PatchMerging(1)
    with torch.no_grad():
        merge.norm.weight.fill_(1.0)
        merge.norm.bias.zero_()
    x = torch.arange(1.0, 16.0).view(1, 15, 1)  # 3x5 grid, value = 1 + row * 5 + col
    captured = {}
    merge.norm.register_forward_hook(lambda m, i, o: captured.setdefault("in", i[0]))
    merge(x, 3, 5)
    grid = x.view(3, 5)
    padded = F.pad(grid, (0, 1, 0, 1))
    expected = torch.stack(
        [padded[0::2, 0::2], padded[1::2, 0::2], padded[0::2, 1::2], padded[1::2, 1::2]], -1
    )
    torch.testing.assert_close(captured["in"], expected.reshape(1, 6, 4))


# --------------------------------------------------------------------------- sizes


@pytest.mark.parametrize("size", [(100, 150), (128, 160), (37, 61)])
def test_any_input_size(size):
    torch.manual_seed(0)
    model = build_swin_backbone(tiny_cfg()).eval()
    h, w = size
    with torch.no_grad():
        out = model(torch.randn(1, 3, h, w))
    hh, ww = -(-h // 4), -(-w // 4)
    for i, name in enumerate(["res2", "res3", "res4", "res5"]):
        assert out[name].shape == (1, 16 * 2**i, hh, ww), (name, out[name].shape)
        assert torch.isfinite(out[name]).all()
        hh, ww = -(-hh // 2), -(-ww // 2)


def test_padded_input_golden_size_batch_consistency(tiny_backbone, golden):
    """Two images in a batch give the same features as one by one."""
    x = golden["input.image_normalized_padded"]
    batch = torch.cat([x, x.flip(-1)])
    with torch.no_grad():
        both = tiny_backbone(batch)
        second = tiny_backbone(x.flip(-1))
    for name in both:
        torch.testing.assert_close(both[name][1:], second[name], atol=1e-5, rtol=0)


def test_bad_input_rank():
    model = build_swin_backbone(tiny_cfg())
    with pytest.raises(ValueError, match="B, C, H, W"):
        model(torch.randn(3, 64, 64))


def test_unknown_out_feature():
    with pytest.raises(ValueError, match="res6"):
        D2SwinTransformer(tiny_cfg("MODEL.BACKBONE.SWIN.OUT_FEATURES=[res2,res6]"))


# --------------------------------------------------------------------------- training


def test_drop_path_and_checkpointing_train_with_gradients():
    x = torch.randn(4, 3, 64, 96)
    grads = {}
    for ckpt in (False, True):
        torch.manual_seed(0)
        model = D2SwinTransformer(
            tiny_cfg(
                "MODEL.BACKBONE.SWIN.DROP_PATH_RATE=0.3",
                f"MODEL.BACKBONE.SWIN.USE_CHECKPOINT={ckpt}",
            )
        ).train()
        torch.manual_seed(2)  # a draw where no residual branch is dropped for all 4 images
        out = model(x)
        sum(v.square().mean() for v in out.values()).backward()
        grads[ckpt] = {n: p.grad for n, p in model.named_parameters()}
        missing = [
            n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0
        ]
        assert not missing, missing
    # checkpointing recomputes the same stochastic depth draws
    for name, g in grads[False].items():
        torch.testing.assert_close(grads[True][name], g, atol=1e-6, rtol=1e-4, msg=name)


def test_drop_path_is_active_in_training_only():
    torch.manual_seed(0)
    model = D2SwinTransformer(tiny_cfg("MODEL.BACKBONE.SWIN.DROP_PATH_RATE=0.5"))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        model.eval()
        a, b = model(x)["res5"], model(x)["res5"]
        assert torch.equal(a, b)
        model.train()
        c = model(x)["res5"]
        assert not torch.allclose(a, c)


# --------------------------------------------------------------------------- ImageNet init


def _imagenet_file(tmp_path, window_size=7):
    """A synthetic classification checkpoint in the official Swin release layout."""
    torch.manual_seed(3)
    src = SwinTransformer(
        embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window_size=window_size
    )
    sd = {k: v for k, v in src.state_dict().items() if not k.startswith("norm")}
    for k in list(sd):
        if k.endswith("relative_position_index"):
            sd[k] = torch.zeros_like(sd[k])  # must be ignored
    sd["layers.0.blocks.1.attn_mask"] = torch.full((64, 49, 49), -100.0)
    sd["norm.weight"], sd["norm.bias"] = torch.randn(128), torch.randn(128)
    sd["head.weight"], sd["head.bias"] = torch.randn(1000, 128), torch.randn(1000)
    path = tmp_path / "swin_imagenet.pth"
    torch.save({"model": sd}, path)
    return str(path), sd


def test_imagenet_weights_with_resized_bias_tables(tmp_path, caplog):
    path, sd = _imagenet_file(tmp_path)
    cfg = tiny_cfg(
        "MODEL.BACKBONE.SWIN.WINDOW_SIZE=12",
        "MODEL.BACKBONE.LOAD_PRETRAINED=True",
        f"MODEL.BACKBONE.PRETRAINED={path}",
    )
    with caplog.at_level(logging.INFO):
        model = build_swin_backbone(cfg)
    assert "Loaded ImageNet Swin weights" in caplog.text
    own = model.state_dict()
    torch.testing.assert_close(
        own["patch_embed.proj.weight"], sd["patch_embed.proj.weight"], atol=0, rtol=0
    )
    torch.testing.assert_close(
        own["layers.2.blocks.1.mlp.fc2.weight"], sd["layers.2.blocks.1.mlp.fc2.weight"]
    )
    torch.testing.assert_close(
        own["layers.1.downsample.reduction.weight"], sd["layers.1.downsample.reduction.weight"]
    )
    # 13x13 relative offsets (window 7) resized to 23x23 (window 12), per head
    key = "layers.3.blocks.0.attn.relative_position_bias_table"
    table = sd[key]
    assert own[key].shape == (23 * 23, 8)
    grid = table.t().reshape(1, 8, 13, 13)
    expected = (
        F.interpolate(grid, size=(23, 23), mode="bicubic", align_corners=False).reshape(8, -1).t()
    )
    torch.testing.assert_close(own[key], expected)
    # the index buffer is recomputed, not loaded
    fresh = D2SwinTransformer(tiny_cfg("MODEL.BACKBONE.SWIN.WINDOW_SIZE=12")).state_dict()
    assert torch.equal(
        own["layers.0.blocks.0.attn.relative_position_index"],
        fresh["layers.0.blocks.0.attn.relative_position_index"],
    )
    # the per-output norms are not in a classification checkpoint: left at their init
    assert torch.equal(own["norm0.weight"], torch.ones(16))
    with torch.no_grad():
        assert all(torch.isfinite(v).all() for v in model(torch.randn(1, 3, 64, 64)).values())


def test_imagenet_weights_selected_layers(tmp_path):
    path, sd = _imagenet_file(tmp_path)
    cfg = tiny_cfg(
        "MODEL.BACKBONE.LOAD_PRETRAINED=True",
        f"MODEL.BACKBONE.PRETRAINED={path}",
        "MODEL.BACKBONE.SWIN.PRETRAINED_LAYERS=[patch_embed]",
    )
    own = build_swin_backbone(cfg).state_dict()
    assert torch.equal(own["patch_embed.proj.weight"], sd["patch_embed.proj.weight"])
    assert not torch.equal(
        own["layers.0.blocks.0.attn.qkv.weight"], sd["layers.0.blocks.0.attn.qkv.weight"]
    )


@pytest.mark.parametrize(
    "pretrained", ["https://example.com/swin_tiny_patch4_window7_224.pth", "/nonexistent/x.pth", ""]
)
def test_no_local_file_keeps_random_init(pretrained, caplog):
    cfg = tiny_cfg(
        "MODEL.BACKBONE.LOAD_PRETRAINED=True", f"MODEL.BACKBONE.PRETRAINED={pretrained}"
    )
    with caplog.at_level(logging.INFO):
        model = build_swin_backbone(cfg)
    assert "not a local file" in caplog.text and "nothing is downloaded" in caplog.text
    assert isinstance(model, D2SwinTransformer)


def test_corrupt_file_names_the_path(tmp_path):
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"not a checkpoint")
    cfg = tiny_cfg("MODEL.BACKBONE.LOAD_PRETRAINED=True", f"MODEL.BACKBONE.PRETRAINED={bad}")
    with pytest.raises(RuntimeError, match="broken.pth"):
        build_swin_backbone(cfg)


def test_foreign_checkpoint_warns(tmp_path, caplog):
    path = tmp_path / "semantic_sam.pth"
    torch.save({"model.backbone.patch_embed.proj.weight": torch.zeros(16, 3, 4, 4)}, path)
    cfg = tiny_cfg("MODEL.BACKBONE.LOAD_PRETRAINED=True", f"MODEL.BACKBONE.PRETRAINED={path}")
    with caplog.at_level(logging.INFO):
        build_swin_backbone(cfg)
    assert "holds no tensor of this Swin" in caplog.text
