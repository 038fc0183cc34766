"""The UniCL language encoder: shapes, causal masking, TF LayerNorm, a hand-computed forward,
initialisation, and the state-dict layout of SEMANTIC_SPEC §2.2."""
import math

import pytest
import torch
import torch.nn.functional as F

from semantic_sam.modeling.language.base import LANG_ENCODER_PREFIX
from semantic_sam.modeling.language.tokenizer import EOT_ID
from semantic_sam.modeling.language.unicl import (
    QuickGELU,
    TFLayerNorm,
    UniclTextEncoder,
    language_state_dict_shapes,
)


def tiny(seed=0, **kw):
    torch.manual_seed(seed)
    args = dict(width=64, heads=4, layers=2, context_length=18, dim_proj=32)
    args.update(kw)
    return UniclTextEncoder(**args)


def test_output_shape_and_unit_norm():
    enc = tiny()
    emb = enc.encode_text(["a photo of a dog.", "license plate.", "sky."])
    assert emb.shape == (3, 32)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3), atol=1e-5, rtol=0)
    raw = enc.encode_ids(enc.tokenize(["sky."]), normalize=False)
    torch.testing.assert_close(raw / (raw.norm() + 1e-7), emb[2:3])
    torch.testing.assert_close(enc(enc.tokenize(["sky."])), emb[2:3])  # forward = encode_ids


def test_causal_mask_tokens_after_eot_do_not_matter_tokens_before_do():
    enc = tiny().eval()
    ids = enc.tokenize(["a photo of a dog."])  # EOT at index 7
    base = enc.encode_ids(ids)
    after = ids.clone()
    after[0, 10] = 1000  # a real token (< EOT) after the EOT
    torch.testing.assert_close(enc.encode_ids(after), base, atol=1e-6, rtol=0)
    before = ids.clone()
    before[0, 5] = 2368  # "dog" -> "cat"
    assert (enc.encode_ids(before) - base).abs().max() > 1e-3
    # the pad value cannot change the pooled embedding (SEMANTIC_SPEC §2.3)
    eot_padded = ids.clone()
    eot_padded[0, 8:] = EOT_ID
    torch.testing.assert_close(enc.encode_ids(eot_padded), base, atol=1e-6, rtol=0)


def test_bidirectional_mode_ignores_positions_after_eot():
    enc = tiny(autoregressive=False).eval()
    ids = enc.tokenize(["a photo of a dog."])
    base = enc.encode_ids(ids)
    after = ids.clone()
    after[0, 12] = 1000
    torch.testing.assert_close(enc.encode_ids(after), base, atol=1e-6, rtol=0)
    # bidirectional: the first token's output depends on later tokens
    out = enc.lang_encoder(ids)
    changed = ids.clone()
    changed[0, 5] = 2368
    assert (enc.lang_encoder(changed)[0, 1] - out[0, 1]).abs().max() > 1e-4
    causal = tiny(autoregressive=True).eval()
    torch.testing.assert_close(causal.lang_encoder(changed)[0, :5], causal.lang_encoder(ids)[0, :5])


def test_tf_layernorm_matches_hand_computation_with_eps_1e_12():
    torch.manual_seed(0)
    ln = TFLayerNorm(6)
    with torch.no_grad():
        ln.weight.copy_(torch.randn(6))
        ln.bias.copy_(torch.randn(6))
    x = torch.randn(3, 6) * 1e-4  # variance ~1e-8: eps 1e-5 (nn.LayerNorm) would shrink it, 1e-12 does not
    xd = x.double()
    mean = xd.mean(-1, keepdim=True)
    var = ((xd - mean) ** 2).mean(-1, keepdim=True)
    expected = (xd - mean) / torch.sqrt(var + 1e-12) * ln.weight.double() + ln.bias.double()
    torch.testing.assert_close(ln(x).double(), expected, atol=1e-5, rtol=1e-5)
    torch_ln = F.layer_norm(x, (6,), ln.weight, ln.bias, eps=1e-5)
    assert (torch_ln - ln(x)).abs().max() > 0.1
    # half input: normalised in float32, then cast back before weight and bias
    h = ln(x.half() * 1000)
    assert h.dtype == torch.float32 and torch.isfinite(h).all()


def test_quick_gelu():
    x = torch.tensor([-2.0, 0.0, 1.0, 3.0])
    torch.testing.assert_close(QuickGELU()(x), x * torch.sigmoid(1.702 * x))


def test_forward_matches_a_hand_computation():
    """Embedding + position, pre-LN blocks with causal attention and QuickGELU MLP, ln_final, pooling
    at the first EOT, lang_proj, normalisation: all written out with plain tensor ops."""
    enc = tiny(width=16, heads=2, layers=1, context_length=8, dim_proj=12).eval()
    ids = enc.tokenize(["a photo of a dog.", "sky."])
    blk = enc.lang_encoder.resblocks[0]

    def ln(m, x):
        u = x.mean(-1, keepdim=True)
        s = ((x - u) ** 2).mean(-1, keepdim=True)
        return m.weight * (x - u) / torch.sqrt(s + 1e-12) + m.bias

    x = enc.lang_encoder.token_embedding.weight[ids] + enc.lang_encoder.positional_embedding  # (N, L, W)
    N, L, W = x.shape
    H, hd = 2, W // 2
    y = ln(blk.ln_1, x)
    qkv = y @ blk.attn.in_proj_weight.T + blk.attn.in_proj_bias
    q, k, v = qkv.split(W, dim=-1)
    q, k, v = (t.view(N, L, H, hd).transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(-1, -2) / math.sqrt(hd)
    scores = scores.masked_fill(torch.ones(L, L, dtype=torch.bool).triu(1), float("-inf"))
    att = (scores.softmax(-1) @ v).transpose(1, 2).reshape(N, L, W)
    x = x + att @ blk.attn.out_proj.weight.T + blk.attn.out_proj.bias
    h = ln(blk.ln_2, x) @ blk.mlp.c_fc.weight.T + blk.mlp.c_fc.bias
    h = h * torch.sigmoid(1.702 * h)
    x = x + h @ blk.mlp.c_proj.weight.T + blk.mlp.c_proj.bias
    x = ln(enc.lang_encoder.ln_final, x)
    pooled = x[torch.arange(N), ids.argmax(-1)] @ enc.lang_proj
    expected = pooled / (pooled.norm(dim=-1, keepdim=True) + 1e-7)
    torch.testing.assert_close(enc.encode_ids(ids), expected, atol=1e-5, rtol=1e-5)


def test_initialisation():
    enc = tiny().requires_grad_(False)
    assert enc.logit_scale.shape == () and float(enc.logit_scale.detach()) == 1.0
    tok = enc.lang_encoder.token_embedding.weight.detach()
    assert tok.abs().max() <= 2.0 and abs(float(tok.std()) - 0.02) < 0.001
    blk = enc.lang_encoder.resblocks[0]
    for lin in (blk.mlp.c_fc, blk.mlp.c_proj, blk.attn.out_proj):
        assert abs(float(lin.weight.std()) - 0.02) < 0.003 and (lin.bias == 0).all()
    assert (blk.attn.in_proj_bias == 0).all()
    for norm in (blk.ln_1, blk.ln_2, enc.lang_encoder.ln_final):
        assert (norm.weight == 1).all() and (norm.bias == 0).all()
    assert abs(float(enc.lang_proj.std()) - 0.02) < 0.004
    assert list(enc.buffers()) == []  # the causal mask is not state


def test_tiny_key_layout_matches_the_documented_shapes():
    enc = tiny()
    sd = enc.state_dict()
    shapes = language_state_dict_shapes(width=64, layers=2, context_length=18, dim_proj=32)
    assert list(sd) == list(shapes)
    assert {k: tuple(v.shape) for k, v in sd.items()} == dict(shapes)


@pytest.mark.parametrize("L, params", [(77, 63_428_097), (18, 63_397_889)])
def test_full_size_key_list_counts_and_parameters(L, params):
    shapes = language_state_dict_shapes(width=512, layers=12, context_length=L, dim_proj=512)
    keys = [LANG_ENCODER_PREFIX + k for k in shapes]
    assert len(keys) == 150
    assert sum(math.prod(s) for s in shapes.values()) == params
    # the table of SEMANTIC_SPEC §2.2
    P = "sem_seg_head.predictor.lang_encoder."
    expected = {
        f"{P}lang_encoder.token_embedding.weight": (49408, 512),
        f"{P}lang_encoder.positional_embedding": (L, 512),
        f"{P}lang_encoder.ln_final.weight": (512,),
        f"{P}lang_encoder.ln_final.bias": (512,),
        f"{P}lang_proj": (512, 512),
        f"{P}logit_scale": (),
    }
    for i in range(12):
        b = f"{P}lang_encoder.resblocks.{i}."
        expected.update({
            b + "attn.in_proj_weight": (1536, 512), b + "attn.in_proj_bias": (1536,),
            b + "attn.out_proj.weight": (512, 512), b + "attn.out_proj.bias": (512,),
            b + "ln_1.weight": (512,), b + "ln_1.bias": (512,),
            b + "mlp.c_fc.weight": (2048, 512), b + "mlp.c_fc.bias": (2048,),
            b + "mlp.c_proj.weight": (512, 2048), b + "mlp.c_proj.bias": (512,),
            b + "ln_2.weight": (512,), b + "ln_2.bias": (512,),
        })
    assert dict(zip(keys, shapes.values(), strict=True)) == expected
    # the module itself, built on the meta device (no memory, no time)
    with torch.device("meta"):
        enc = UniclTextEncoder(width=512, heads=8, layers=12, context_length=L, dim_proj=512)
    sd = enc.state_dict()
    assert {k: tuple(v.shape) for k, v in sd.items()} == dict(shapes)
    assert sum(p.numel() for p in enc.parameters()) == params


def test_bad_arguments():
    enc = tiny()
    with pytest.raises(ValueError, match=r"\(N, 18\)"):
        enc.encode_ids(torch.zeros(1, 77, dtype=torch.long))
    with pytest.raises(ValueError, match="divisible"):
        UniclTextEncoder(width=30, heads=4, layers=1, context_length=8)
    with pytest.raises(ValueError, match="vocab_size"):
        UniclTextEncoder(width=8, heads=2, layers=1, context_length=8, vocab_size=1000)


@pytest.mark.parametrize("autoregressive", [True, False])
def test_dropping_positions_after_the_last_eot_changes_nothing(autoregressive):
    """encode_ids runs the transformer only up to the batch's last EOT; the full-length
    computation (the reference's) pools the same vectors."""
    enc = tiny(autoregressive=autoregressive).eval()
    ids = enc.tokenize(["a photo of a dog.", "sky.", "a jpeg corrupted photo of the window-blind."])
    with torch.no_grad():
        full = enc.lang_encoder(ids)  # all 18 positions
        pooled = full[torch.arange(3), ids.argmax(-1)] @ enc.lang_proj
        torch.testing.assert_close(enc.encode_ids(ids), pooled / (pooled.norm(dim=-1, keepdim=True) + 1e-7),
                                   atol=1e-6, rtol=1e-5)


def test_empty_batch():
    enc = tiny()
    assert enc.encode_text([]).shape == (0, 32)
