"""build_text_encoder: MODEL.TEXT.ARCH noencoder / unicl / open_clip, MODEL.TEXT.WEIGHTS, and
errors naming the config key."""
import json
import os

import pytest
import torch

from semantic_sam.config import ConfigError, load_config
from semantic_sam.modeling.language import (
    LANG_ENCODER_PREFIX,
    OpenClipTextEncoder,
    UniclTextEncoder,
    build_text_embedding_cache,
    build_text_encoder,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
TINY = os.path.join(ROOT, "configs", "semantic_sam_tiny_cpu.yaml")
TINY_TEXT = os.path.join(ROOT, "configs", "semantic_sam_tiny_text.yaml")
OPEN_CLIP_CFG = {
    "embed_dim": 32,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2},
}


def test_schema_defaults():
    cfg = load_config(None)
    assert cfg.MODEL.TEXT.ARCH == "noencoder"
    assert cfg.MODEL.TEXT.WEIGHTS == "" and cfg.MODEL.TEXT.OPEN_CLIP_MODEL == ""
    assert cfg.MODEL.TEXT.CACHE_DIR == "~/.cache/semantic_sam/text_embeddings"


def test_noencoder_is_none():
    assert build_text_encoder(load_config(TINY)) is None
    assert build_text_encoder(load_config(os.path.join(ROOT, "configs", "semantic_sam_only_sa-1b_swinT.yaml"))) is None


def test_unicl_tiny_config():
    cfg = load_config(TINY_TEXT)
    enc = build_text_encoder(cfg)
    assert isinstance(enc, UniclTextEncoder)
    assert (enc.context_length, enc.dim_proj, enc.lang_encoder.width, enc.lang_encoder.layers) == (18, 512, 64, 2)
    assert enc.encode_text(["a photo of a dog."]).shape == (1, 512)
    cache = build_text_embedding_cache(cfg, enc)
    assert cache.cache_dir is None  # CACHE_DIR "" in the tiny config: memory only
    default = build_text_embedding_cache(load_config(TINY), enc)
    assert default.cache_dir == os.path.join(os.path.expanduser("~"), ".cache", "semantic_sam", "text_embeddings")


def test_unicl_weights_from_config(tmp_path):
    src = build_text_encoder(load_config(TINY_TEXT))
    path = tmp_path / "lang.pt"
    torch.save({"model." + LANG_ENCODER_PREFIX + k: v for k, v in src.state_dict().items()}, path)
    enc = build_text_encoder(load_config(TINY_TEXT, [f"MODEL.TEXT.WEIGHTS={path}"]))
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), enc.state_dict().values(), strict=True))
    with pytest.raises(ConfigError, match=r"^MODEL.TEXT.WEIGHTS: file not found: .*missing.pt"):
        build_text_encoder(load_config(TINY_TEXT, [f"MODEL.TEXT.WEIGHTS={tmp_path / 'missing.pt'}"]))


def test_open_clip_from_a_local_config_and_weights(tmp_path):
    from open_clip.model import CLIP

    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": OPEN_CLIP_CFG}))
    torch.manual_seed(0)
    cfgs = {k: v for k, v in OPEN_CLIP_CFG.items() if k != "quick_gelu"}
    clip = CLIP(**cfgs, quick_gelu=True)
    torch.save(clip.state_dict(), tmp_path / "clip.pt")
    overrides = ["MODEL.TEXT.ARCH=open_clip", f"MODEL.TEXT.OPEN_CLIP_MODEL=local-dir:{tmp_path}", "MODEL.DIM_PROJ=32"]
    enc = build_text_encoder(load_config(TINY, overrides + [f"MODEL.TEXT.WEIGHTS={tmp_path / 'clip.pt'}"]))
    assert isinstance(enc, OpenClipTextEncoder) and enc.dim_proj == 32
    ids = enc.tokenize(["a photo of a dog."])
    with torch.no_grad():
        expected = torch.nn.functional.normalize(clip.encode_text(ids), dim=-1)
        torch.testing.assert_close(enc.encode_ids(ids), expected, atol=1e-6, rtol=1e-5)
    with pytest.raises(ConfigError, match=r"^MODEL.DIM_PROJ: 512 differs .* \(32\)"):
        build_text_encoder(load_config(TINY, overrides[:2]))
    with pytest.raises(ConfigError, match=r"^MODEL.TEXT.OPEN_CLIP_MODEL: required"):
        build_text_encoder(load_config(TINY, ["MODEL.TEXT.ARCH=open_clip"]))
    with pytest.raises(ConfigError, match=r"^MODEL.TEXT.OPEN_CLIP_MODEL: unknown open_clip model 'nope'"):
        build_text_encoder(load_config(TINY, ["MODEL.TEXT.ARCH=open_clip", "MODEL.TEXT.OPEN_CLIP_MODEL=nope"]))


@pytest.mark.parametrize("overrides, message", [
    (["MODEL.TEXT.ARCH=foo"], r"'MODEL.TEXT.ARCH': 'foo'; allowed: one of 'noencoder', 'unicl', 'open_clip'"),
    (["MODEL.TEXT.ARCH=vlpencoder"], r"'MODEL.TEXT.ARCH': 'vlpencoder'; .*the reference's vlpencoder is unicl here"),
    (["MODEL.TEXT.HEADS=3"], r"^MODEL.TEXT.HEADS: 3 does not divide MODEL.TEXT.WIDTH \(64\)"),
    (["MODEL.TEXT.TOKENIZER=bert"], r"^MODEL.TEXT.TOKENIZER: 'bert' is not supported"),
    (["MODEL.TEXT.CONTEXT_LENGTH=1"], r"^MODEL.TEXT.CONTEXT_LENGTH: must be an integer >= 2"),
    (["MODEL.TEXT.LAYERS=0"], r"^MODEL.TEXT.LAYERS: must be an integer >= 1"),
])
def test_bad_values_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        build_text_encoder(load_config(TINY_TEXT, overrides))


def test_logit_scale_init():
    assert float(build_text_encoder(load_config(TINY_TEXT)).logit_scale.detach()) == 1.0  # the reference's
    enc = build_text_encoder(load_config(TINY_TEXT, ["MODEL.TEXT.LOGIT_SCALE_INIT=2.6593"]))
    assert float(enc.logit_scale.detach()) == pytest.approx(2.6593) and enc.logit_scale.requires_grad


@pytest.mark.parametrize("overrides, message", [
    (["MODEL.TEXT.LOGIT_SCALE_INIT=11.0"], r"'MODEL.TEXT.LOGIT_SCALE_INIT': 11.0; allowed: a number in \[-10, 10\]"),
    (['MODEL.TEXT.PROMPT_TEMPLATES=["a {} and {}"]'], r"'MODEL.TEXT.PROMPT_TEMPLATES'.*exactly one '\{\}'"),
    (['MODEL.TEXT.PROMPT_TEMPLATES=["{}", "{}"]'], r"'MODEL.TEXT.PROMPT_TEMPLATES'.*distinct format strings"),
    (["MODEL.TEXT.PROMPT_TEMPLATES=[3]"], r"'MODEL.TEXT.PROMPT_TEMPLATES'.*format strings"),
])
def test_bad_template_and_scale_values_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TINY_TEXT, overrides)
