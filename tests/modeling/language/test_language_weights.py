"""load_language_weights: every accepted key form loads strictly, positional embeddings are
interpolated, and bad files are errors naming the keys."""
import logging

import pytest
import torch

from semantic_sam.checkpoint import CheckpointError
from semantic_sam.modeling.language.base import LANG_ENCODER_PREFIX, LanguageWeightsError
from semantic_sam.modeling.language.unicl import UniclTextEncoder, load_language_weights

P = LANG_ENCODER_PREFIX  # sem_seg_head.predictor.lang_encoder.


def tiny(seed, context_length=18, width=64):
    torch.manual_seed(seed)
    return UniclTextEncoder(width=width, heads=4, layers=2, context_length=context_length, dim_proj=32)


def assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def _forms(sd):
    transformer_relative = {k[len("lang_encoder."):] if k.startswith("lang_encoder.") else k: v for k, v in sd.items()}
    return {
        "model-relative": {P + k: v for k, v in sd.items()},
        "model.-prefixed": {"model." + P + k: v for k, v in sd.items()},
        "detectron2-wrapped": {"model": {P + k: v for k, v in sd.items()}, "iteration": 5},
        "module-relative": dict(sd),
        "transformer-relative": transformer_relative,
    }


@pytest.mark.parametrize("form", ["model-relative", "model.-prefixed", "detectron2-wrapped", "module-relative",
                                  "transformer-relative"])
@pytest.mark.parametrize("from_file", [False, True])
def test_each_key_form_loads_strictly(form, from_file, tmp_path):
    src, dst = tiny(0), tiny(1)
    weights = _forms(src.state_dict())[form]
    if from_file:
        path = tmp_path / "lang.pt"
        torch.save(weights, path)
        weights = str(path)
    report = load_language_weights(dst, weights)
    assert_same_weights(src, dst)
    assert len(report.loaded) == len(src.state_dict()) and not report.missing and not report.unexpected
    assert report.interpolated == []


def test_full_model_checkpoint_uses_only_the_language_keys():
    src, dst = tiny(0), tiny(1)
    sd = {P + k: v for k, v in src.state_dict().items()}
    sd.update({"backbone.patch_embed.proj.weight": torch.zeros(3), "sem_seg_head.predictor.class_embed": torch.ones(2)})
    report = load_language_weights(dst, {"model." + k: v for k, v in sd.items()})
    assert_same_weights(src, dst)
    assert sorted(report.ignored) == ["backbone.patch_embed.proj.weight", "sem_seg_head.predictor.class_embed"]


def test_positional_embedding_is_interpolated_linearly(caplog):
    src, dst = tiny(0), tiny(1, context_length=5)
    sd = dict(src.state_dict())
    p = torch.randn(3, 64)
    sd["lang_encoder.positional_embedding"] = p
    with caplog.at_level(logging.INFO, logger="semantic_sam.modeling.language"):
        report = load_language_weights(dst, sd)
    assert report.interpolated == [("lang_encoder.positional_embedding", 3, 5)]
    assert "interpolating lang_encoder.positional_embedding from length 3 to 5" in caplog.text
    q = dst.lang_encoder.positional_embedding.detach()
    # align_corners=False: output i samples input position (i + 0.5) * 3 / 5 - 0.5, clamped
    torch.testing.assert_close(q[0], p[0])  # clamped to the first row
    torch.testing.assert_close(q[1], 0.6 * p[0] + 0.4 * p[1])  # position 0.4
    torch.testing.assert_close(q[2], p[1])  # the midpoint is the middle row
    torch.testing.assert_close(q[3], 0.4 * p[1] + 0.6 * p[2])  # position 1.6
    torch.testing.assert_close(q[4], p[2])  # clamped to the last row
    # the other weights loaded as they are
    assert torch.equal(dst.lang_proj, src.lang_proj)
    # 77 -> 18, the OSD configs' two lengths
    big = dict(src.state_dict())
    big["lang_encoder.positional_embedding"] = torch.randn(77, 64)
    assert load_language_weights(tiny(2), big).interpolated == [("lang_encoder.positional_embedding", 77, 18)]


def test_missing_key_is_an_error_naming_it_and_leaves_the_module_unchanged():
    src, dst = tiny(0), tiny(1)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    sd = {P + k: v for k, v in src.state_dict().items() if k != "lang_proj"}
    with pytest.raises(LanguageWeightsError, match=r"1 missing keys: sem_seg_head\.predictor\.lang_encoder\.lang_proj"):
        load_language_weights(dst, sd)
    assert all(torch.equal(before[k], v) for k, v in dst.state_dict().items())
    # non-strict: logged, the rest loaded
    report = load_language_weights(dst, sd, strict=False)
    assert report.missing == ["lang_proj"]
    assert torch.equal(dst.lang_proj, before["lang_proj"]) and torch.equal(dst.logit_scale, src.logit_scale)


def test_wrong_shape_is_an_error_naming_the_key_and_shapes():
    src, dst = tiny(0, width=32), tiny(1)
    sd = {P + k: v for k, v in src.state_dict().items()}
    with pytest.raises(LanguageWeightsError) as e:
        load_language_weights(dst, sd)
    msg = str(e.value)
    assert f"{P}lang_encoder.token_embedding.weight: (49408, 32) in the file vs (49408, 64) in the model" in msg
    one = {P + k: v for k, v in tiny(0).state_dict().items()}
    one[P + "lang_encoder.resblocks.1.mlp.c_fc.bias"] = torch.zeros(7)
    with pytest.raises(LanguageWeightsError, match=r"1 shape mismatches: .*resblocks\.1\.mlp\.c_fc\.bias: \(7,\)"):
        load_language_weights(dst, one, strict=False)  # mismatches are errors even when not strict


def test_unexpected_duplicate_and_foreign_keys():
    src, dst = tiny(0), tiny(1)
    sd = {P + k: v for k, v in src.state_dict().items()}
    sd[P + "lang_encoder.cls_token"] = torch.zeros(64)
    expected = r"1 unexpected keys: sem_seg_head\.predictor\.lang_encoder\.lang_encoder\.cls_token"
    with pytest.raises(LanguageWeightsError, match=expected):
        load_language_weights(dst, sd)
    both = dict(src.state_dict())
    both["positional_embedding"] = both["lang_encoder.positional_embedding"]  # Transformer- and module-relative
    with pytest.raises(LanguageWeightsError, match="'lang_encoder.positional_embedding' and 'positional_embedding'"):
        load_language_weights(dst, both)
    with pytest.raises(LanguageWeightsError, match="none of its 1 keys is a text-encoder key"):
        load_language_weights(dst, {"backbone.w": torch.zeros(1)})


class _Opaque:
    pass


def test_files_are_read_weights_only(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"x": _Opaque()}, path)
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_language_weights(tiny(0), str(path))
    with pytest.raises(FileNotFoundError):
        load_language_weights(tiny(0), str(tmp_path / "none.pt"))
