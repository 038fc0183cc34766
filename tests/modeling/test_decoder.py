"""The interactive query decoder against the reference's golden tensors and hand-computed values."""
import math
import os

import pytest
import torch

from semantic_sam.config import load_config
from semantic_sam.modeling.decoder import InteractiveDecoder, anchor_sine_embedding, inverse_sigmoid
from semantic_sam.modeling.decoder.prompt_encoder import block_diagonal_attn_mask, noise_anchor_boxes

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PARITY = os.path.join(ROOT, "tests", "fixtures", "parity_tiny")
CRITERION = os.path.join(ROOT, "tests", "fixtures", "criterion_tiny")
PREFIX = "model.sem_seg_head.predictor."
ATOL = 1e-4


@pytest.fixture(scope="module")
def golden():
    return torch.load(os.path.join(PARITY, "golden.pt"), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def cfg():
    return load_config(os.path.join(PARITY, "tiny_parity.yaml"))


@pytest.fixture(scope="module")
def checkpoint():
    sd = torch.load(os.path.join(PARITY, "tiny_parity.pth"), map_location="cpu", weights_only=True)
    return {k[len(PREFIX) :]: v for k, v in sd.items() if k.startswith(PREFIX)}


@pytest.fixture(scope="module")
def decoder(cfg, checkpoint):
    torch.manual_seed(0)
    dec = InteractiveDecoder(cfg, in_channels=cfg.MODEL.ENCODER.CONVS_DIM)
    dec.load_state_dict(checkpoint, strict=True)
    return dec.eval()


def _features(golden):
    ms = [golden[f"features.pixel_decoder.multi_scale_features.{i}"] for i in range(4)]
    return ms, golden["features.pixel_decoder.mask_features"]


def _run(decoder, golden, boxes, mode, pb=None):
    ms, mf = _features(golden)
    captured = {}

    def hook(module, args, kwargs, output):
        captured.update(kwargs)
        captured["hs"], captured["references"] = output

    handle = decoder.decoder.register_forward_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            out = decoder(ms, mf, boxes[None], torch.zeros(1, boxes.shape[0]) if pb is None else pb, attn_mask=mode)
    finally:
        handle.remove()
    return out, captured


def test_state_dict_matches_checkpoint_names_shapes_and_order(cfg, checkpoint):
    dec = InteractiveDecoder(cfg, in_channels=64)
    sd = dec.state_dict()
    assert list(sd) == list(checkpoint)
    assert all(tuple(sd[k].shape) == tuple(checkpoint[k].shape) for k in sd)
    # the reference's decoder has 8 heads whatever NHEADS (4 here) says
    assert sd["decoder.layers.0.cross_attn.sampling_offsets.weight"].shape == (8 * 4 * 4 * 2, 64)
    assert dec.decoder.layers[0].self_attn.num_heads == 8


def test_shared_modules_are_aliases(cfg):
    dec = InteractiveDecoder(cfg, in_channels=64)
    assert dec.decoder.norm is dec.decoder_norm
    assert all(m is dec._bbox_embed for m in dec.bbox_embed)
    assert all(m is dec._bbox_embed for m in dec.decoder.bbox_embed)
    # zero-initialized last box layer; unused projections trunc-normal(0.02)
    assert dec._bbox_embed.layers[-1].weight.abs().sum() == 0
    assert dec.lang_mapper.shape == (512, 64) and 0.01 < float(dec.lang_mapper.detach().std()) < 0.03
    assert 0.01 < float(dec.class_embed.detach().std()) < 0.03


def test_query_decoder_heads_option(cfg):
    c = cfg.clone()
    c.defrost()
    c.MODEL.DECODER.QUERY_DECODER_NHEADS = 0  # follow NHEADS (4)
    dec = InteractiveDecoder(c, in_channels=64)
    assert dec.decoder.layers[0].self_attn.num_heads == 4
    assert dec.decoder.layers[0].cross_attn.sampling_offsets.out_features == 4 * 4 * 4 * 2


@pytest.mark.parametrize(
    "path,mode",
    [("demo", "none"), ("eval_direct", "block"), ("eval_full", "block")],
)
def test_decoder_parity_with_golden_features(decoder, golden, path, mode):
    boxes = golden[f"{path}.points_padded_frame"]
    out, cap = _run(decoder, golden, boxes, mode)
    layers = out["aux_outputs"] + [out]
    assert len(layers) == 3
    for l, layer_out in enumerate(layers):
        for key in ("pred_masks", "pred_boxes", "pred_ious"):
            torch.testing.assert_close(layer_out[key], golden[f"{path}.decoder.layer{l}.{key}"], atol=ATOL, rtol=ATOL)
    torch.testing.assert_close(cap["tgt"], golden[f"{path}.decoder.query_content"], atol=ATOL, rtol=ATOL)
    torch.testing.assert_close(
        cap["refpoints_unsigmoid"], golden[f"{path}.decoder.refpoints_unsigmoid"], atol=ATOL, rtol=ATOL
    )
    for l in range(3):
        torch.testing.assert_close(cap["hs"][l], golden[f"{path}.decoder.hs{l}"], atol=ATOL, rtol=ATOL)
    for l in range(4):
        torch.testing.assert_close(cap["references"][l], golden[f"{path}.decoder.reference{l}"], atol=ATOL, rtol=ATOL)
    if mode == "block":
        assert torch.equal(cap["tgt_mask"], golden[f"{path}.decoder.self_attn_mask"])
    else:
        assert cap["tgt_mask"] is None and not bool(golden[f"{path}.decoder.self_attn_mask_used"])


def test_block_mask_makes_prompts_independent(decoder, golden):
    boxes = golden["eval_direct.points_padded_frame"]
    both, _ = _run(decoder, golden, boxes, "block")
    alone, _ = _run(decoder, golden, boxes[1:2], "block")
    torch.testing.assert_close(both["pred_masks"][:, 6:12], alone["pred_masks"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(both["pred_ious"][:, 1:2], alone["pred_ious"], atol=1e-5, rtol=1e-5)
    # without the mask, the other prompts change the result
    both_none, _ = _run(decoder, golden, boxes, "none")
    alone_none, _ = _run(decoder, golden, boxes[1:2], "none")
    assert (both_none["pred_masks"][:, 6:12] - alone_none["pred_masks"]).abs().max() > 1e-3


def test_return_aux_false_gives_only_last_layer(decoder, golden):
    boxes = golden["eval_direct.points_padded_frame"]
    ms, mf = _features(golden)
    with torch.no_grad():
        out = decoder(ms, mf, boxes[None], torch.zeros(1, 3), return_aux=False)
    assert out["aux_outputs"] == []
    torch.testing.assert_close(out["pred_masks"], golden["eval_direct.decoder.layer2.pred_masks"], atol=ATOL, rtol=ATOL)


def test_training_anchor_noise_and_queries_match_reference(cfg):
    """Training mode: pb = 1 and the recorded anchor noise give the reference's decoder inputs."""
    g = torch.load(os.path.join(CRITERION, "golden.pt"), map_location="cpu", weights_only=True)
    sd = torch.load(os.path.join(CRITERION, "tiny_parity.pth"), map_location="cpu", weights_only=True)
    dec = InteractiveDecoder(cfg, in_channels=64)
    dec.load_state_dict({k[len(PREFIX) :]: v for k, v in sd.items() if k.startswith(PREFIX)})
    dec.train()
    captured = {}
    handle = dec.decoder.register_forward_hook(lambda m, a, kw, o: captured.update(kw), with_kwargs=True)
    ms = [torch.randn(1, 64, 256 // s, 256 // s) for s in (8, 16, 32, 64)]
    out = dec(
        ms,
        torch.randn(1, 64, 64, 64),
        g["targets.boxes_dn"][None],
        g["targets.pb"][None],
        num_point_prompts=[6],
        anchor_noise=g["forward.dn_rand"],
    )
    handle.remove()
    torch.testing.assert_close(captured["refpoints_unsigmoid"], g["forward.refpoints_unsigmoid"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(captured["tgt"], g["forward.query_content"], atol=1e-5, rtol=1e-5)
    assert torch.equal(captured["tgt_mask"], g["forward.self_attn_mask"])
    # every parameter but the language projections (no class embeddings given) is in the graph; the
    # meta-architecture keeps those in it too (tests/modeling/test_gradients.py)
    total = sum(v.sum() for k, v in out.items() if k != "aux_outputs")
    total = total + sum(v.sum() for aux in out["aux_outputs"] for v in aux.values())
    total.backward()
    assert [n for n, p in dec.named_parameters() if p.grad is None] == ["lang_mapper", "class_embed", "class_embed_part"]


def test_no_noise_in_eval_mode(decoder, golden):
    boxes = golden["eval_direct.points_padded_frame"]
    _, cap = _run(decoder, golden, boxes, "block")
    torch.testing.assert_close(cap["refpoints_unsigmoid"][0, ::6], inverse_sigmoid(boxes))


def test_noise_anchor_boxes_by_hand():
    boxes = torch.tensor([[[0.5, 0.5, 0.1, 0.2], [0.5, 0.5, 0.1, 0.2]]])
    u = torch.tensor([[[1.0, 0.0, 0.75, 0.5], [1.0, 0.0, 0.75, 0.5]]])
    out = noise_anchor_boxes(boxes, 0.4, num_point_prompts=[1], point_noise_factor=0.01, uniform=u)
    # diff = (w/2, h/2, w, h) = (0.05, 0.1, 0.1, 0.2); (2u - 1) = (1, -1, 0.5, 0)
    box = torch.tensor([0.5 + 0.05 * 0.4, 0.5 - 0.1 * 0.4, 0.1 + 0.5 * 0.1 * 0.4, 0.2])
    point = torch.tensor([0.5 + 0.0005 * 0.4, 0.5 - 0.001 * 0.4, 0.1 + 0.5 * 0.001 * 0.4, 0.2])
    torch.testing.assert_close(out[0, 0], point)
    torch.testing.assert_close(out[0, 1], box)
    # clamped to [0, 1]
    u = torch.tensor([[[1.0, 0.0, 0.5, 0.5]]])
    edge = noise_anchor_boxes(torch.tensor([[[0.999, 0.0, 0.5, 0.5]]]), 1.0, [0], uniform=u)
    assert edge.min() >= 0 and edge.max() <= 1


def test_anchor_sine_embedding_by_hand():
    box = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
    emb = anchor_sine_embedding(box, num_feats=4)
    expected = []
    for v in (0.2, 0.1, 0.3, 0.4):  # y, x, w, h
        for i in range(4):
            arg = v * 2 * math.pi / 10000 ** (2 * (i // 2) / 4)
            expected.append(math.sin(arg) if i % 2 == 0 else math.cos(arg))
    torch.testing.assert_close(emb[0], torch.tensor(expected), atol=1e-6, rtol=1e-6)


def test_block_diagonal_mask():
    m = block_diagonal_attn_mask(2, 3)
    expected = torch.ones(6, 6, dtype=torch.bool)
    expected[:3, :3] = False
    expected[3:, 3:] = False
    assert torch.equal(m, expected)


def test_bad_inputs_raise_clear_errors(decoder, golden):
    ms, mf = _features(golden)
    boxes = golden["eval_direct.points_padded_frame"][None]
    with pytest.raises(ValueError, match=r"\(B, N, 4\)"):
        decoder(ms, mf, boxes[0], torch.zeros(1, 3))
    with pytest.raises(ValueError, match="pb must be"):
        decoder(ms, mf, boxes, torch.zeros(1, 2))
    with pytest.raises(ValueError, match="at least one prompt"):
        decoder(ms, mf, boxes[:, :0], torch.zeros(1, 0))
    with pytest.raises(ValueError, match="attn_mask"):
        decoder(ms, mf, boxes, torch.zeros(1, 3), attn_mask="diagonal")
    with pytest.raises(ValueError, match="feature levels"):
        decoder(ms[:3], mf, boxes, torch.zeros(1, 3))
    with pytest.raises(TypeError, match="floating point"):
        decoder(ms, mf, boxes.long(), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="batch size"):
        decoder([f.expand(2, -1, -1, -1) for f in ms], mf.expand(2, -1, -1, -1)[:1], boxes, torch.zeros(1, 3))


def test_unsupported_config_values_are_refused(cfg):
    from semantic_sam.config import ConfigError

    c = cfg.clone()
    c.defrost()
    c.MODEL.DECODER.TWO_STAGE = True
    with pytest.raises(ConfigError, match="TWO_STAGE"):
        InteractiveDecoder(c, in_channels=64)


@pytest.mark.parametrize("mode", ["block", "none"])
def test_precomputed_memory_gives_the_same_outputs(decoder, golden, mode):
    ms, mf = _features(golden)
    boxes = golden["demo.points_padded_frame"][None]
    with torch.no_grad():
        cache = decoder.precompute_memory(ms)
        assert len(cache["values"]) == 3 and cache["values"][0].shape == cache["memory"].shape
        plain = decoder(ms, mf, boxes, torch.zeros(1, 3), attn_mask=mode)
        cached = decoder(ms, mf, boxes, torch.zeros(1, 3), attn_mask=mode, memory_cache=cache)
    for a, b in zip(plain["aux_outputs"] + [plain], cached["aux_outputs"] + [cached]):
        for key in ("pred_masks", "pred_boxes", "pred_ious"):
            torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=1e-6)
