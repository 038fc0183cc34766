"""MODEL.TEXT.ARCH open_clip: an open_clip text tower from a config (no download), loaded from
CLIP / CustomTextCLIP checkpoints, giving the same embeddings as open_clip itself."""
import json

import pytest
import torch
import torch.nn.functional as F

from semantic_sam.modeling.language.base import LanguageWeightsError
from semantic_sam.modeling.language.open_clip_text import OpenClipTextEncoder, load_open_clip_text_weights

TEXT_CFG = {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2}
MODEL_CFG = {"embed_dim": 32, "quick_gelu": True, "text_cfg": TEXT_CFG}
VISION_CFG = {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16, "head_width": 32}
TEXTS = ["a photo of a dog.", "itap of my traffic light.", "sky."]


def _clip(custom_text=False, seed=0):
    from open_clip.model import CLIP, CustomTextCLIP

    torch.manual_seed(seed)
    cls = CustomTextCLIP if custom_text else CLIP
    return cls(embed_dim=32, vision_cfg=VISION_CFG, text_cfg=dict(TEXT_CFG), quick_gelu=True).eval()


def test_tiny_tower_shapes_and_tokenizer():
    import open_clip

    enc = OpenClipTextEncoder(model_cfg=MODEL_CFG)
    assert enc.context_length == 16 and enc.dim_proj == 32
    ids = enc.tokenize(TEXTS)
    assert torch.equal(ids, open_clip.tokenize(TEXTS, context_length=16))
    emb = enc.encode_text(TEXTS)
    assert emb.shape == (3, 32)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3), atol=1e-5, rtol=0)
    assert enc.logit_scale.shape == ()
    assert all(k == "logit_scale" or k.startswith("text.") for k in enc.state_dict())


@pytest.mark.parametrize("custom_text", [False, True])
def test_loads_clip_checkpoints_and_matches_open_clip(custom_text):
    clip = _clip(custom_text)
    with torch.no_grad():
        clip.logit_scale.fill_(4.6)
    enc = OpenClipTextEncoder(model_cfg=MODEL_CFG)
    report = load_open_clip_text_weights(enc, clip.state_dict())
    assert not report.missing and not report.unexpected and report.loaded
    ids = enc.tokenize(TEXTS)
    with torch.no_grad():
        expected = F.normalize(clip.encode_text(ids), dim=-1)
        torch.testing.assert_close(enc.encode_ids(ids), expected, atol=1e-6, rtol=1e-5)
    assert float(enc.logit_scale.detach()) == pytest.approx(4.6)


def test_loads_files_pt_and_safetensors_with_ddp_prefix(tmp_path):
    from safetensors.torch import save_file

    clip = _clip()
    sd = {k: v.contiguous() for k, v in clip.state_dict().items()}
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}, "epoch": 3}, tmp_path / "clip.pt")
    save_file(sd, str(tmp_path / "clip.safetensors"))
    ids = OpenClipTextEncoder(model_cfg=MODEL_CFG).tokenize(TEXTS)
    with torch.no_grad():
        expected = F.normalize(clip.encode_text(ids), dim=-1)
    for name in ("clip.pt", "clip.safetensors"):
        enc = OpenClipTextEncoder(model_cfg=MODEL_CFG)
        load_open_clip_text_weights(enc, str(tmp_path / name))
        with torch.no_grad():
            torch.testing.assert_close(enc.encode_ids(ids), expected, atol=1e-6, rtol=1e-5)


def test_bad_checkpoints_name_the_keys():
    sd = dict(_clip().state_dict())
    del sd["text_projection"]
    expected = r"missing keys: sem_seg_head\.predictor\.lang_encoder\.text\.text_projection"
    with pytest.raises(LanguageWeightsError, match=expected):
        load_open_clip_text_weights(OpenClipTextEncoder(model_cfg=MODEL_CFG), sd)
    wide = OpenClipTextEncoder(model_cfg={**MODEL_CFG, "embed_dim": 48})
    with pytest.raises(LanguageWeightsError, match=r"text\.text_projection: \(64, 32\) in the file vs \(64, 48\)"):
        load_open_clip_text_weights(wide, _clip().state_dict())
    with pytest.raises(LanguageWeightsError, match="none of its"):
        load_open_clip_text_weights(OpenClipTextEncoder(model_cfg=MODEL_CFG), {"visual.proj": torch.zeros(2)})


def test_model_names_local_dir_and_builtin(tmp_path):
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": {**MODEL_CFG, "vision_cfg": VISION_CFG}}))
    enc = OpenClipTextEncoder(f"local-dir:{tmp_path}")
    assert enc.dim_proj == 32 and enc.context_length == 16
    with torch.device("meta"):  # the built-in config, without spending time or memory on weights
        big = OpenClipTextEncoder("ViT-B-32")
    assert (big.dim_proj, big.context_length) == (512, 77)
    assert sum(p.numel() for p in big.parameters()) == 63_428_097  # same size as UniCL's at L = 77
    with pytest.raises(ValueError, match="download from the hub"):
        OpenClipTextEncoder("hf-hub:timm/ViT-B-16-SigLIP")
    with pytest.raises(ValueError, match="unknown open_clip model 'ViT-X-99'"):
        OpenClipTextEncoder("ViT-X-99")
    with pytest.raises(ValueError, match="HuggingFace"):
        OpenClipTextEncoder(model_cfg={"embed_dim": 32, "text_cfg": {"hf_model_name": "roberta-base"}})
    with pytest.raises(ValueError, match="exactly one"):
        OpenClipTextEncoder()


def test_towers_without_a_causal_mask_use_open_clips_forward():
    enc = OpenClipTextEncoder(model_cfg={**MODEL_CFG, "text_cfg": {**TEXT_CFG, "no_causal_mask": True}}).eval()
    ids = enc.tokenize(TEXTS)
    with torch.no_grad():
        torch.testing.assert_close(enc.encode_ids(ids), F.normalize(enc.text(ids), dim=-1), atol=1e-6, rtol=1e-5)
