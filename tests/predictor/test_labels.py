"""Object and part labels of the predictor and the generator (a tiny model with a random text encoder).

The model is random, so the labels themselves mean nothing: the tests check that they are the argmax
of the logits the model returns for the same prompts, that the vocabulary and the part threshold
rule apply, and that a model without a text encoder returns what it returned before.
"""
import math

import numpy as np
import pytest
import torch

from semantic_sam.modeling.language import VocabularyError
from semantic_sam.predictor import (
    PART_SCORE_THRESH,
    MaskLabels,
    NoTextEncoderError,
    SemanticSamAutomaticMaskGenerator,
    SemanticSamPredictor,
    Vocabulary,
    default_vocabulary,
    label_text,
    levels_to_tokens,
)
from semantic_sam.predictor.labels import NO_PART, top_labels

IMAGE = np.random.default_rng(3).integers(0, 256, (96, 128, 3), dtype=np.uint8)
CLICKS = [[30.0, 40.0], [100.0, 20.0]]
BOX = [10.0, 50.0, 70.0, 90.0]
OBJECTS = ["cat", "dog", "person", "car", "tree"]
PARTS = ["head", "leg", "wheel"]
LABEL_KEYS = {"object_label", "object_score", "part_label", "part_score"}
NO_FILTERS = dict(pred_iou_thresh=-1e9, stability_score_thresh=0.0, box_nms_thresh=1.0, min_mask_region_area=0)


@pytest.fixture(scope="module")
def text_model():
    from semantic_sam.build import build_model
    from semantic_sam.config import load_config

    torch.set_num_threads(1)
    torch.manual_seed(0)
    return build_model(load_config("configs/semantic_sam_tiny_text.yaml")).eval()


def _predictor(model, **kw) -> SemanticSamPredictor:
    pred = SemanticSamPredictor(model, short_side=None, **kw)
    pred.set_image(IMAGE)
    return pred


def _model_outputs(model, levels, objects, parts):
    """The model's own inference for CLICKS and BOX with the vocabulary's class embeddings."""
    inputs = [{
        "image": torch.from_numpy(IMAGE).permute(2, 0, 1),
        "points": torch.tensor(CLICKS),
        "boxes": torch.tensor([BOX]),
    }]
    return model.inference(
        inputs, tokens=levels_to_tokens(levels, 6), attn_mask="block", point_convention="demo",
        class_embeddings=model.class_embeddings(objects, parts),
    )[0]


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# ------------------------------------------------------------------ agreement with the model


@pytest.mark.parametrize("vocabulary", ["default", "small"])
def test_labels_are_the_argmax_of_the_model_logits(text_model, vocabulary):
    pred = _predictor(text_model)
    if vocabulary == "default":
        objects, parts = list(default_vocabulary().objects), list(default_vocabulary().parts)
        assert len(objects) == 133 and len(parts) == 30 and "sky" in objects and "license plate" in parts
    else:
        objects, parts = OBJECTS, PARTS
        pred.set_vocabulary(objects=objects, parts=parts)
    levels = [1, 3, 6]
    masks, scores, low_res, labels = pred.predict(point_coords=CLICKS, box=BOX, levels=levels, return_labels=True)
    assert isinstance(labels, MaskLabels) and labels.shape == (3, 3) == scores.shape
    assert labels.vocabulary == Vocabulary(tuple(objects), tuple(parts)) == pred.vocabulary

    want = _model_outputs(text_model, levels, objects, parts)
    obj, part = want["pred_logits"], want["pred_logits_part"]
    assert obj.shape == (3, 3, len(objects)) and part.shape == (3, 3, len(parts))
    # the same computation as the predictor's decoder call (bit for bit on CPU), so the argmax is exact
    np.testing.assert_allclose(scores, want["pred_ious"].numpy(), atol=1e-6)
    np.testing.assert_array_equal(labels.object_ids, obj.argmax(-1).numpy())
    for p in range(3):
        for j in range(3):
            assert labels.object_label((p, j)) == objects[int(obj[p, j].argmax())]
            assert labels.object_scores[p, j] == pytest.approx(_sigmoid(float(obj[p, j].max())), abs=1e-4)
            top_part = float(part[p, j].max())
            assert labels.part_scores[p, j] == pytest.approx(_sigmoid(top_part), abs=1e-4)
            want_part = parts[int(part[p, j].argmax())] if _sigmoid(top_part) >= PART_SCORE_THRESH else None
            assert labels.part_label((p, j)) == want_part
    # the labels do not change the masks: the same pass as a prediction without labels
    m2, s2, low2 = pred.predict(point_coords=CLICKS, box=BOX, levels=levels)
    np.testing.assert_array_equal(m2, masks)
    np.testing.assert_array_equal(s2, scores)
    np.testing.assert_array_equal(low2, low_res)


def test_one_decoder_pass_and_embeddings_once_per_vocabulary(text_model, monkeypatch):
    pred = _predictor(text_model)
    pred.set_vocabulary(OBJECTS, PARTS)
    pred.predict(point_coords=CLICKS, return_labels=True)  # fills the model's embedding cache
    calls = []
    decode = text_model.decode_prompts

    def counting_decode(*args, **kwargs):
        calls.append(kwargs.get("class_embeddings") is not None)
        return decode(*args, **kwargs)

    monkeypatch.setattr(text_model, "decode_prompts", counting_decode)
    cache = text_model._text_cache
    encoded = cache.encoded_names
    pred.predict(point_coords=CLICKS, box=BOX, return_labels=True)
    pred.predict_masks(point_coords=CLICKS)
    assert calls == [True, True]  # masks and labels from one decoder call each
    assert cache.encoded_names == encoded  # nothing re-encoded for the same vocabulary
    pred.set_vocabulary(OBJECTS + ["platypus"], PARTS)  # a name in no other test's vocabulary
    pred.predict(point_coords=CLICKS, return_labels=True)
    assert cache.encoded_names == encoded + 1  # only the new name
    pred.predict(point_coords=CLICKS)
    assert calls[-1] is False  # no labels asked, no class logits computed


def test_set_vocabulary_changes_the_labels(text_model):
    pred = _predictor(text_model)
    pred.set_vocabulary(objects=["cat", "dog"], parts=["head"])
    *_, labels = pred.predict(point_coords=CLICKS, return_labels=True)
    assert set(labels.object_ids.ravel()) <= {0, 1}
    assert {labels.object_label((p, j)) for p in range(2) for j in range(6)} <= {"cat", "dog"}
    assert {labels.part_label((p, j)) for p in range(2) for j in range(6)} <= {"head", None}

    pred.set_vocabulary(objects=["zebra"])  # no parts
    *_, labels = pred.predict(point_coords=CLICKS, levels=[2], return_labels=True)
    assert labels.text((1, 0)) == "zebra" and (labels.part_ids == NO_PART).all() and np.isnan(labels.part_scores).all()
    assert labels.record((0, 0)) == {
        "object_label": "zebra", "object_score": pytest.approx(float(labels.object_scores[0, 0])),
        "part_label": None, "part_score": None,
    }
    records = pred.predict_masks(point_coords=CLICKS[:1], levels=[2, 4])[0]
    assert records and all(r["object_label"] == "zebra" and r["part_label"] is None for r in records)


def test_predict_masks_records_carry_the_labels_of_their_level(text_model):
    pred = _predictor(text_model, score_thresh=-1e9, dedup_iou_thresh=1.0)
    pred.set_vocabulary(OBJECTS, PARTS)
    levels = [5, 2, 3]
    *_, labels = pred.predict(point_coords=CLICKS, box=BOX, levels=levels, return_labels=True)
    records = pred.predict_masks(point_coords=CLICKS, box=BOX, levels=levels)
    assert len(records) == 3
    for p, recs in enumerate(records):
        assert sorted(r["level"] for r in recs) == sorted(levels)  # nothing filtered
        for r in recs:
            assert set(r) == {"mask", "score", "level", "area"} | LABEL_KEYS
            assert {k: r[k] for k in LABEL_KEYS} == labels.record((p, levels.index(r["level"])))


# ------------------------------------------------------------------ the part threshold rule


def test_top_labels_hand_made_logits():
    logit_30 = math.log(0.30 / 0.70)  # sigmoid = 0.30: above the 0.25 threshold
    logit_20 = math.log(0.20 / 0.80)  # sigmoid = 0.20: below
    obj = torch.tensor([[0.0, 2.0, -1.0], [3.0, -3.0, 0.5]])
    part = torch.tensor([[-5.0, logit_30, -4.0], [logit_20, -6.0, -7.0]])
    top = top_labels(obj, part)
    assert top["object_ids"].tolist() == [1, 0]
    np.testing.assert_allclose(top["object_scores"], [_sigmoid(2.0), _sigmoid(3.0)], rtol=1e-6)
    assert top["part_ids"].tolist() == [1, NO_PART]
    np.testing.assert_allclose(top["part_scores"], [0.30, 0.20], rtol=1e-6)
    assert top_labels(obj, part, part_score_thresh=0.15)["part_ids"].tolist() == [1, 0]
    assert top_labels(obj, None)["part_ids"].tolist() == [NO_PART, NO_PART]
    vocab = Vocabulary(("cat", "dog", "car"), ("ear", "head", "leg"))
    labels = MaskLabels(vocab, *(v.numpy() for v in top.values()))
    assert [labels.text(0), labels.text(1)] == ["dog: head", "cat"]
    assert labels.record(1) == {"object_label": "cat", "object_score": pytest.approx(_sigmoid(3.0)),
                                "part_label": None, "part_score": pytest.approx(0.20)}
    assert label_text("person") == "person" and label_text("person", "head") == "person: head"


def _fixed_part_logits(model, monkeypatch, per_prompt_top: list[float]):
    """Make every token of prompt i score its part 1 at ``per_prompt_top[i]`` (a logit), the others far below."""
    decode = model.decode_prompts

    def decode_with_fixed_parts(*args, **kwargs):
        out = decode(*args, **kwargs)
        if "pred_logits_part" in out:
            part = torch.full_like(out["pred_logits_part"], -8.0)
            k = model.num_tokens
            for i, top in enumerate(per_prompt_top):
                part[0, i * k : (i + 1) * k, 1] = top
            out["pred_logits_part"] = part
        return out

    monkeypatch.setattr(model, "decode_prompts", decode_with_fixed_parts)


def test_part_label_only_above_the_threshold(text_model, monkeypatch):
    above, below = math.log(0.26 / 0.74), math.log(0.24 / 0.76)  # sigmoid 0.26 and 0.24
    _fixed_part_logits(text_model, monkeypatch, [above, below])
    pred = _predictor(text_model, score_thresh=-1e9, dedup_iou_thresh=1.0)
    pred.set_vocabulary(OBJECTS, PARTS)
    *_, labels = pred.predict(point_coords=CLICKS, return_labels=True)
    assert [labels.part_label((0, j)) for j in range(6)] == ["leg"] * 6
    assert [labels.part_label((1, j)) for j in range(6)] == [None] * 6
    np.testing.assert_allclose(labels.part_scores, [[0.26] * 6, [0.24] * 6], rtol=1e-5)
    records = pred.predict_masks(point_coords=CLICKS)
    assert {r["part_label"] for r in records[0]} == {"leg"} and {r["part_label"] for r in records[1]} == {None}
    assert all(r["part_score"] == pytest.approx(0.24, rel=1e-5) for r in records[1])
    assert labels.text((0, 0)) == labels.object_label((0, 0)) + ": leg"
    assert labels.text((1, 0)) == labels.object_label((1, 0))
    # the threshold is the predictor's setting
    pred.part_score_thresh = 0.2
    *_, labels = pred.predict(point_coords=CLICKS, return_labels=True)
    assert labels.part_label((1, 3)) == "leg"
    # the generator applies the same rule
    gen = SemanticSamAutomaticMaskGenerator(_predictor(text_model), points_per_side=None,
                                            point_grids=[np.array([[0.25, 0.5]])], **NO_FILTERS)
    gen.set_vocabulary(OBJECTS, PARTS)
    recs = gen.generate(IMAGE)
    assert len(recs) == 6 and {r["part_label"] for r in recs} == {"leg"}


# ------------------------------------------------------------------ the generator


def test_generator_records_have_the_predictor_labels(text_model):
    gen = SemanticSamAutomaticMaskGenerator(text_model, points_per_side=2, levels=[1, 4], short_side=None, **NO_FILTERS)
    assert gen.has_text_encoder and gen.vocabulary == default_vocabulary()
    gen.set_vocabulary(OBJECTS, PARTS)
    assert gen.vocabulary == gen.predictor.vocabulary == Vocabulary(tuple(OBJECTS), tuple(PARTS))
    records = gen.generate(IMAGE)
    assert len(records) == 4 * 2
    pred = _predictor(text_model)
    pred.set_vocabulary(OBJECTS, PARTS)
    for r in records:
        assert set(r) == {"segmentation", "area", "bbox", "predicted_iou", "point_coords", "stability_score",
                          "crop_box", "level"} | LABEL_KEYS
        # block attention: a click of the grid alone gives the labels of its record
        _, scores, _, labels = pred.predict(point_coords=r["point_coords"], levels=[r["level"]], return_labels=True)
        assert r["predicted_iou"] == pytest.approx(float(scores[0, 0]), abs=1e-5)
        assert {k: r[k] for k in LABEL_KEYS} == pytest.approx(labels.record((0, 0)), abs=1e-5)
        assert r["object_label"] in OBJECTS and r["part_label"] in PARTS + [None]
    gen.set_vocabulary(["zebra"])  # no parts: no part label, no part score
    assert all(r["object_label"] == "zebra" and r["part_label"] is None and r["part_score"] is None
               for r in gen.generate(IMAGE))


def test_generator_with_crops_keeps_labels_aligned(text_model):
    """The crop-edge filter, crop NMS and the small-region clean-up drop rows of every column together:
    each record's labels are its own."""
    gen = SemanticSamAutomaticMaskGenerator(text_model, points_per_side=2, levels=[3, 5], crop_n_layers=1,
                                            short_side=None, pred_iou_thresh=-1e9, stability_score_thresh=0.0,
                                            box_nms_thresh=1.0)
    gen.set_vocabulary(OBJECTS, PARTS)
    records = gen.generate(IMAGE)
    assert records and all(LABEL_KEYS <= set(r) and r["object_label"] in OBJECTS for r in records)
    full = [r for r in records if r["crop_box"] == [0.0, 0.0, 128.0, 96.0]]
    assert full  # crop NMS kept one of the whole-image masks (identical boxes), dropping the other rows
    pred = _predictor(text_model)
    pred.set_vocabulary(OBJECTS, PARTS)
    for r in full:
        *_, labels = pred.predict(point_coords=r["point_coords"], levels=[r["level"]], return_labels=True)
        assert {k: r[k] for k in LABEL_KEYS} == pytest.approx(labels.record((0, 0)), abs=1e-5)


# ------------------------------------------------------------------ models without a text encoder, errors


def test_model_without_text_encoder_is_unchanged(tiny_model):
    pred = _predictor(tiny_model)
    assert not pred.has_text_encoder
    out = pred.predict(point_coords=CLICKS, box=BOX)
    assert len(out) == 3
    records = pred.predict_masks(point_coords=CLICKS)
    assert all(set(r) == {"mask", "score", "level", "area"} for recs in records for r in recs)
    with pytest.raises(NoTextEncoderError, match="no text encoder"):
        pred.predict(point_coords=CLICKS, return_labels=True)
    with pytest.raises(NoTextEncoderError, match="MODEL.TEXT.ARCH"):
        pred.set_vocabulary(["cat"])
    gen = SemanticSamAutomaticMaskGenerator(pred, points_per_side=2, **NO_FILTERS)
    assert not gen.has_text_encoder
    assert not LABEL_KEYS & set(gen.generate(IMAGE)[0])
    with pytest.raises(NoTextEncoderError):
        gen.set_vocabulary(["cat"])


@pytest.mark.parametrize(
    "objects, parts, message",
    [
        ([], None, "the object vocabulary is empty"),
        (["cat"], [], "the part vocabulary is empty"),
        ("cat", None, "must be a list of class names"),
        (["cat", 3], None, r"object vocabulary\[1\] is int"),
        (["cat"], ["head", "-other"], r"part vocabulary\[1\] \('-other'\) is empty after normalisation"),
    ],
)
def test_bad_vocabularies(text_model, objects, parts, message):
    pred = SemanticSamPredictor(text_model, short_side=None)
    pred.set_vocabulary(OBJECTS, PARTS)
    with pytest.raises(VocabularyError, match=message):
        pred.set_vocabulary(objects, parts)
    assert pred.vocabulary == Vocabulary(tuple(OBJECTS), tuple(PARTS))  # unchanged after an error
    gen = SemanticSamAutomaticMaskGenerator(pred, points_per_side=2)
    with pytest.raises(VocabularyError, match=message):
        gen.set_vocabulary(objects, parts)
