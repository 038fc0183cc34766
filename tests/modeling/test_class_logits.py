"""Object and part logits of the interactive decoder (SEMANTIC_SPEC §3), checked by hand on every layer.

``z = exp(s) * (v / (||v|| + 1e-7)) @ T^T`` with ``v = decoder_norm(h) @ W`` and ``h`` a layer's output,
which the decoder has already passed through ``decoder_norm`` once: the heads apply it a second time.
``W`` (``class_embed`` / ``class_embed_part``), ``s`` (``logit_scale``) and ``T`` are set to small known
tensors so that ``v`` and ``z`` reduce to sums written out below.
"""
import math
import os

import pytest
import torch

from semantic_sam.build import build_model
from semantic_sam.config import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_TEXT = os.path.join(ROOT, "configs", "semantic_sam_tiny_text.yaml")
TINY = os.path.join(ROOT, "configs", "semantic_sam_tiny_cpu.yaml")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = build_model(load_config(TINY_TEXT)).eval()
    dec = m.sem_seg_head.predictor
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        # a LayerNorm with a non-trivial affine map, so that applying it twice differs from once
        dec.decoder_norm.weight.copy_(1 + 0.5 * torch.randn(dec.hidden_dim, generator=g))
        dec.decoder_norm.bias.copy_(0.5 * torch.randn(dec.hidden_dim, generator=g))
        # object head: v_j = sum of the channels i = j (mod 3), j < 3; part head: v_{3 + j} = channels i = j (mod 2)
        dec.class_embed.zero_()
        dec.class_embed_part.zero_()
        for i in range(dec.hidden_dim):
            dec.class_embed[i, i % 3] = 1.0
            dec.class_embed_part[i, 3 + i % 2] = 1.0
        dec.lang_encoder.logit_scale.fill_(math.log(2.0))
    return m


def _embeddings(dim):
    """T_object: e_0, e_1, (e_0 + e_2) / sqrt(2); T_part: e_3, e_4, (e_3 - e_4) / sqrt(2)."""
    obj = torch.zeros(3, dim)
    obj[0, 0] = obj[1, 1] = 1.0
    obj[2, 0] = obj[2, 2] = 2**-0.5
    part = torch.zeros(3, dim)
    part[0, 3] = part[1, 4] = 1.0
    part[2, 3], part[2, 4] = 2**-0.5, -(2**-0.5)
    return {"object": obj, "part": part}


def _hand_logits(h, norm):
    """Object and part logits of layer outputs ``h`` (B, Q, C), written out with the test's W, s and T."""
    mean = h.mean(-1, keepdim=True)
    var = ((h - mean) ** 2).mean(-1, keepdim=True)
    o = (h - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias
    v = [o[..., j::3].sum(-1) for j in range(3)]
    n = torch.sqrt(v[0] ** 2 + v[1] ** 2 + v[2] ** 2) + 1e-7
    obj = 2.0 * torch.stack([v[0], v[1], (v[0] + v[2]) * 2**-0.5], -1) / n[..., None]
    u = [o[..., j::2].sum(-1) for j in range(2)]
    m = torch.sqrt(u[0] ** 2 + u[1] ** 2) + 1e-7
    part = 2.0 * torch.stack([u[0], u[1], (u[0] - u[1]) * 2**-0.5], -1) / m[..., None]
    return obj, part


def _decode(model, class_embeddings, return_aux=True):
    g = torch.Generator().manual_seed(2)
    image = torch.randint(0, 256, (3, 64, 96), dtype=torch.uint8, generator=g)
    features = model.encode_image(model.preprocess_image([image]))
    boxes = torch.tensor([[[0.3, 0.4, 0.01, 0.01], [0.7, 0.5, 0.3, 0.4]]])
    captured = {}
    hook = model.sem_seg_head.predictor.decoder.register_forward_hook(
        lambda mod, args, out: captured.update(hs=[h.detach().clone() for h in out[0]])
    )
    try:
        with torch.no_grad():
            out = model.decode_prompts(features, boxes, torch.zeros(1, 2), return_aux=return_aux,
                                       class_embeddings=class_embeddings)
    finally:
        hook.remove()
    return out, captured["hs"]


def test_logits_of_every_layer_match_the_hand_computation(model):
    dec = model.sem_seg_head.predictor
    out, hs = _decode(model, _embeddings(dec.class_embed.shape[1]))
    layers = out["aux_outputs"] + [out]
    assert len(layers) == len(hs) == dec.num_layers == 3
    for l, (layer, h) in enumerate(zip(layers, hs)):
        obj, part = _hand_logits(h, dec.decoder_norm)
        assert layer["pred_logits"].shape == (1, 2 * dec.num_tokens, 3)
        assert layer["pred_logits_part"].shape == (1, 2 * dec.num_tokens, 3)
        torch.testing.assert_close(layer["pred_logits"], obj, atol=1e-5, rtol=1e-5, msg=f"layer {l}")
        torch.testing.assert_close(layer["pred_logits_part"], part, atol=1e-5, rtol=1e-5, msg=f"layer {l}")
        assert layer["pred_logits"].abs().max() <= 2.0 + 1e-5  # |z| <= exp(s) for unit-norm T
        # the second decoder_norm matters: with a single one (o = h) the logits would differ
        once = 2.0 * torch.nn.functional.normalize(h @ dec.class_embed, dim=-1, eps=0) @ _embeddings(512)["object"].T
        assert (once - layer["pred_logits"]).abs().max() > 0.05


def test_logits_follow_logit_scale_and_the_embeddings(model):
    """Doubling exp(s) doubles the logits; permuting the classes permutes their columns."""
    dec = model.sem_seg_head.predictor
    emb = _embeddings(dec.class_embed.shape[1])
    base, _ = _decode(model, emb, return_aux=False)
    with torch.no_grad():
        dec.lang_encoder.logit_scale.fill_(math.log(4.0))
    try:
        doubled, _ = _decode(model, {"object": emb["object"][[2, 0, 1]]}, return_aux=False)
    finally:
        with torch.no_grad():
            dec.lang_encoder.logit_scale.fill_(math.log(2.0))
    torch.testing.assert_close(doubled["pred_logits"], 2 * base["pred_logits"][..., [2, 0, 1]])
    assert "pred_logits_part" not in doubled  # no part embeddings: no part head


def test_no_class_embeddings_no_logits(model):
    out, _ = _decode(model, None)
    assert not any(k.startswith("pred_logits") for layer in out["aux_outputs"] + [out] for k in layer)


def test_inference_returns_the_logits_of_the_requested_tokens(model):
    g = torch.Generator().manual_seed(3)
    x = {
        "image": torch.randint(0, 256, (3, 60, 90), dtype=torch.uint8, generator=g),
        "points": torch.tensor([[10.0, 20.0], [70.0, 30.0]]),
        "boxes": torch.tensor([[5.0, 5.0, 40.0, 50.0]]),
    }
    emb = _embeddings(512)
    (full,) = model.inference([x], class_embeddings=emb)
    (some,) = model.inference([x], tokens=[4, 1], class_embeddings=emb)
    (plain,) = model.inference([x])
    k = model.num_tokens
    assert full["pred_logits"].shape == (3, k, 3) and full["pred_logits_part"].shape == (3, k, 3)
    assert some["pred_logits"].shape == (3, 2, 3)
    torch.testing.assert_close(some["pred_logits"], full["pred_logits"][:, [4, 1]])
    torch.testing.assert_close(some["pred_logits_part"], full["pred_logits_part"][:, [4, 1]])
    assert "pred_logits" not in plain
    torch.testing.assert_close(plain["pred_masks"], full["pred_masks"])  # naming changes no mask


def test_class_embeddings_of_the_model(model):
    emb = model.class_embeddings(["cat", "traffic light"], ["head"])
    assert emb["object"].shape == (2, 512) and emb["part"].shape == (1, 512)
    assert not emb["object"].requires_grad
    torch.testing.assert_close(emb["object"].norm(dim=-1), torch.ones(2))
    assert "part" not in model.class_embeddings(["cat"])
    again = model.class_embeddings(["traffic light"])
    torch.testing.assert_close(again["object"][0], emb["object"][1])
    train = model.training_class_embeddings({"object": ["cat", "dog"], "part": ["head"]})
    assert train["object"].shape == (2, 512) and train["part"].shape == (1, 512)
    assert train["object"].requires_grad and train["part"].grad_fn is not None


def test_errors(model):
    dec = model.sem_seg_head.predictor
    h = torch.randn(1, 6, dec.hidden_dim)
    with pytest.raises(ValueError, match="needs an 'object' entry"):
        dec.class_logits(h, {"part": torch.randn(2, 512)})
    with pytest.raises(ValueError, match="needs an 'object' entry"):
        dec.class_logits(h, {"object": torch.randn(2, 512), "whole": torch.randn(2, 512)})
    with pytest.raises(ValueError, match=r"class_embeddings\['object'\] must be \(C, 512\)"):
        dec.class_logits(h, {"object": torch.randn(2, 64)})
    with pytest.raises(ValueError, match=r"class_embeddings\['part'\] must be"):
        dec.class_logits(h, {"object": torch.randn(2, 512), "part": torch.zeros(0, 512)})
    plain = build_model(load_config(TINY)).eval()
    assert plain.text_encoder is None
    with pytest.raises(ValueError, match="noencoder"):
        plain.sem_seg_head.predictor.class_logits(h, {"object": torch.randn(2, 512)})
    with pytest.raises(ValueError, match="no text encoder"):
        plain.class_embeddings(["cat"])


def test_prompt_templates_of_the_config():
    """MODEL.TEXT.PROMPT_TEMPLATES: evaluation averages exactly those templates, training draws among them."""
    from semantic_sam.modeling.language import evaluation_text_embeddings, prompt_templates

    torch.manual_seed(0)
    m = build_model(load_config(TINY_TEXT, ['MODEL.TEXT.PROMPT_TEMPLATES=["{}", "a {} here"]'])).eval()
    assert m.prompt_templates == ("{}", "a {} here")
    enc = m.text_encoder
    both = enc.encode_text(["car", "a car here"]).detach()  # (2, D), unit norm
    mean = both.mean(0)
    torch.testing.assert_close(m.class_embeddings(["car"])["object"][0], mean / mean.norm())
    train = m.training_class_embeddings({"object": ["car"]})["object"][0].detach()
    assert min(float((train - e).abs().max()) for e in both) < 1e-6  # one of the two, nothing else
    m.prompt_templates = None  # the reference's 81; the cache follows the change
    torch.testing.assert_close(
        m.class_embeddings(["car"])["object"], evaluation_text_embeddings(enc, ["car"], prompt_templates())
    )
