"""Checkpoint loading: released (flat / wrapped) and detectron2 formats, reports, strictness, safety."""
import logging
import os

import pytest
import torch
from torch import nn

from semantic_sam.checkpoint import (
    CheckpointError,
    CheckpointMismatchError,
    load_checkpoint,
    read_state_dict,
    save_release_checkpoint,
    state_dict_for_release,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARITY = os.path.join(ROOT, "tests", "fixtures", "parity_tiny")
RELEASED = os.path.join(PARITY, "tiny_parity.pth")


class Tiny(nn.Module):
    """A small model with a shared submodule listed under two names, like the decoder's aliases."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4)
        self.body = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        self.head = nn.Module()
        self.head.norm = self.norm  # alias: "norm.*" and "head.norm.*"
        self.register_buffer("index", torch.arange(5))


def _filled(seed: int) -> Tiny:
    torch.manual_seed(seed)
    m = Tiny()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_()
    return m


def _assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.fixture(scope="module")
def tiny_model():
    from semantic_sam.build import build_model
    from semantic_sam.config import load_config

    return build_model(load_config(os.path.join(PARITY, "tiny_parity.yaml")))


def test_released_flat_checkpoint_loads_strictly(tiny_model):
    report = load_checkpoint(tiny_model, RELEASED, strict=True)
    assert report.ok and report.applied and report.layout == "flat"
    file_sd = torch.load(RELEASED, weights_only=True)
    assert report.prefixed == len(file_sd) == 324
    model_sd = tiny_model.state_dict()
    assert len(report.loaded) == len(model_sd) == 324
    for k, v in file_sd.items():
        assert torch.equal(model_sd[k[len("model.") :]], v), k


def test_release_roundtrip(tiny_model, tmp_path):
    load_checkpoint(tiny_model, RELEASED)
    sd = state_dict_for_release(tiny_model)
    assert all(k.startswith("model.") for k in sd)
    assert list(sd) == list(torch.load(RELEASED, weights_only=True))
    path = save_release_checkpoint(tiny_model, tmp_path / "out" / "release.pth")
    loaded, report = read_state_dict(path)
    assert report.prefixed == len(loaded) == 324


def test_wrapped_and_detectron2_formats(tmp_path):
    src = _filled(0)
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"model": {"model." + k: v for k, v in src.state_dict().items()}}, wrapped)
    dst = _filled(1)
    report = load_checkpoint(dst, wrapped)
    assert report.layout == "wrapped:model" and report.prefixed == len(src.state_dict())
    _assert_same_weights(src, dst)

    # our training checkpoints: detectron2 DetectionCheckpointer layout, keys without the prefix
    d2 = tmp_path / "model_0000099.pth"
    opt = torch.optim.AdamW(src.parameters())
    torch.save({"model": src.state_dict(), "optimizer": opt.state_dict(), "iteration": 99}, d2)
    dst = _filled(2)
    report = load_checkpoint(dst, d2)
    assert report.ok and report.prefixed == 0
    assert report.ignored_entries == ["iteration", "optimizer"]
    _assert_same_weights(src, dst)


def test_missing_unexpected_and_mismatched_keys_are_reported(tmp_path):
    src = _filled(0)
    sd = src.state_dict()
    del sd["body.2.bias"]
    sd["body.0.weight"] = torch.zeros(5, 4)  # wrong shape
    sd["extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save(sd, path)

    dst = _filled(1)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint(dst, path, strict=True)
    msg = str(info.value)
    assert "1 missing" in msg and "body.2.bias" in msg
    assert "1 unexpected" in msg and "extra.weight" in msg
    assert "1 shape mismatches" in msg and "body.0.weight: (5, 4) vs (3, 4)" in msg
    report = info.value.report
    assert report.missing == ["body.2.bias"] and report.unexpected == ["extra.weight"]
    assert not report.applied
    for k, v in dst.state_dict().items():  # strict failure leaves the model untouched
        assert torch.equal(v, before[k]), k


def test_non_strict_loads_the_rest_and_warns(tmp_path, caplog):
    src = _filled(0)
    sd = src.state_dict()
    del sd["body.2.bias"]
    sd["body.0.weight"] = torch.zeros(5, 4)
    path = tmp_path / "partial.pth"
    torch.save(sd, path)
    dst = _filled(1)
    old_bias, old_w0 = dst.body[2].bias.clone(), dst.body[0].weight.clone()
    with caplog.at_level(logging.WARNING, logger="semantic_sam.checkpoint"):
        report = load_checkpoint(dst, path, strict=False)
    assert report.applied and not report.ok
    assert "body.2.bias" in caplog.text and "shape mismatches" in caplog.text
    assert torch.equal(dst.body[2].bias, old_bias) and torch.equal(dst.body[0].weight, old_w0)
    assert torch.equal(dst.body[2].weight, src.body[2].weight)
    assert torch.equal(dst.norm.weight, src.norm.weight)


def test_alias_names_are_filled_and_conflicts_reported(tmp_path):
    src = _filled(0)
    sd = {k: v for k, v in src.state_dict().items() if not k.startswith("head.")}  # only one alias name
    path = tmp_path / "dedup.pth"
    torch.save(sd, path)
    dst = _filled(1)
    report = load_checkpoint(dst, path, strict=True)
    assert sorted(report.alias_filled) == ["head.norm.bias", "head.norm.weight"]
    _assert_same_weights(src, dst)

    sd = src.state_dict()
    sd["head.norm.weight"] = sd["head.norm.weight"] + 1
    torch.save(sd, path)
    with pytest.raises(CheckpointMismatchError, match="norm.weight = head.norm.weight"):
        load_checkpoint(_filled(1), path)


class _NotATensor:
    pass


def test_file_needing_arbitrary_unpickling_is_refused(tmp_path):
    path = tmp_path / "pickled.pth"
    torch.save({"model": _filled(0).state_dict(), "cfg": _NotATensor()}, path)
    with pytest.raises(CheckpointError, match="arbitrary unpickling"):
        load_checkpoint(_filled(1), path)


def test_unreadable_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_checkpoint(_filled(0), tmp_path / "nope.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        load_checkpoint(_filled(0), garbage)
    empty = tmp_path / "empty.pth"
    torch.save({"iteration": 3}, empty)
    with pytest.raises(CheckpointError, match="no tensors"):
        load_checkpoint(_filled(0), empty)
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(CheckpointError, match="expected a dict"):
        load_checkpoint(_filled(0), listed)


def test_non_finite_weights_are_refused(tmp_path):
    model = torch.nn.Linear(2, 2)
    state = {f"model.{k}": v.clone() for k, v in model.state_dict().items()}
    state["model.bias"][1] = float("inf")
    torch.save(state, tmp_path / "inf.pth")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"1 tensor\(s\) hold NaN or infinite values, e.g. bias"):
        load_checkpoint(model, tmp_path / "inf.pth")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ------------------------------------------------------------------------------------------------
# Optional parts: the text encoder (``sem_seg_head.predictor.lang_encoder.*``)
# ------------------------------------------------------------------------------------------------
TINY_TEXT = os.path.join(ROOT, "configs", "semantic_sam_tiny_text.yaml")
LANG = "sem_seg_head.predictor.lang_encoder."


def _text_model(seed: int) -> nn.Module:
    """The tiny model (same sizes as the parity model) with a tiny random text encoder."""
    from semantic_sam.build import build_model
    from semantic_sam.config import load_config

    torch.manual_seed(seed)
    return build_model(load_config(TINY_TEXT))


def test_released_checkpoint_without_text_weights_loads_into_a_text_model(tiny_model):
    model = _text_model(0)
    language = {k: v.clone() for k, v in model.state_dict().items() if k.startswith(LANG)}
    assert model.optional_key_prefixes == (LANG,) and len(language) > 0
    report = load_checkpoint(model, RELEASED, strict=True)
    assert report.ok and report.applied
    assert report.missing == [] and report.unexpected == [] and report.mismatched == []
    assert report.kept == list(language) and report.kept_prefixes == [LANG]
    assert len(report.loaded) == 324
    assert f"{len(language)} keys of optional parts ({LANG}*)" in str(report)
    state = model.state_dict()
    for k, v in language.items():  # the text encoder keeps its own weights
        assert torch.equal(state[k], v), k
    for k, v in torch.load(RELEASED, weights_only=True).items():
        assert torch.equal(state[k[len("model.") :]], v), k

    # and segments exactly as the model without a text encoder
    load_checkpoint(tiny_model, RELEASED)
    g = torch.Generator().manual_seed(0)
    x = {"image": torch.randint(0, 256, (3, 64, 80), dtype=torch.uint8, generator=g),
         "points": torch.tensor([[20.0, 30.0], [60.0, 10.0]])}
    (ours,) = model.eval().inference([x])
    (released,) = tiny_model.eval().inference([x])
    for key in ("pred_masks", "pred_ious", "pred_boxes"):
        assert torch.equal(ours[key], released[key]), key


def test_own_text_model_checkpoint_roundtrip(tmp_path):
    src, dst = _text_model(0), _text_model(1)
    path = save_release_checkpoint(src, tmp_path / "text.pth")
    report = load_checkpoint(dst, path, strict=True)
    assert report.ok and report.kept == [] and len(report.loaded) == len(dst.state_dict())
    _assert_same_weights(src, dst)


def test_partial_text_weights_are_refused(tmp_path):
    src = _text_model(0)
    state = state_dict_for_release(src)
    dropped = "model." + LANG + "lang_proj"
    del state[dropped]
    torch.save(state, tmp_path / "partial.pth")
    dst = _text_model(1)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(CheckpointMismatchError, match="1 missing") as info:
        load_checkpoint(dst, tmp_path / "partial.pth", strict=True)
    assert info.value.report.missing == [LANG + "lang_proj"] and info.value.report.kept == []
    assert LANG + "lang_proj" in str(info.value)
    for k, v in dst.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_text_weights_into_a_model_without_a_text_encoder_are_unexpected(tmp_path, tiny_model):
    src = _text_model(0)
    path = save_release_checkpoint(src, tmp_path / "text.pth")
    language = [k for k in src.state_dict() if k.startswith(LANG)]
    assert tiny_model.optional_key_prefixes == ()
    with pytest.raises(CheckpointMismatchError, match=f"{len(language)} unexpected") as info:
        load_checkpoint(tiny_model, path, strict=True)
    assert info.value.report.unexpected == language and info.value.report.missing == []
