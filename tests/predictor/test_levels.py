"""Levels (user granularities 1-6) vs tokens (the K queries): the public argument names and their
deprecated aliases. Each alias gives exactly what the new name gives, warns, and clashes with it."""
import warnings

import numpy as np
import pytest
import torch

from semantic_sam.ops import MSDeformAttn, ms_deform_attn, ms_deform_attn_pytorch
from semantic_sam.predictor import SemanticSamAutomaticMaskGenerator, SemanticSamPredictor, levels_to_tokens
from tests.predictor.disk_model import DiskModel

IMAGE = np.random.default_rng(1).integers(0, 256, (96, 128, 3), dtype=np.uint8)
FEW = dict(points_per_side=3, short_side=None, output_mode="coco_rle")


def _same_records(a, b):
    assert len(a) == len(b) > 0
    assert a == b  # bit-identical: the same computation


# ------------------------------------------------------------------------------ generator


def test_generator_levels_and_deprecated_level_give_the_same_records(disk_model):
    new = SemanticSamAutomaticMaskGenerator(disk_model, levels=[3, 6], **FEW)
    with pytest.warns(DeprecationWarning, match="'level' is deprecated, use 'levels'"):
        old = SemanticSamAutomaticMaskGenerator(disk_model, level=[3, 6], **FEW)
    assert new.levels == old.levels == [3, 6] and new.tokens == old.tokens == levels_to_tokens([3, 6], 6)
    records = new.generate(IMAGE)
    assert {r["level"] for r in records} == {3, 6}
    _same_records(records, old.generate(IMAGE))
    with pytest.warns(DeprecationWarning, match="use levels"):
        assert new.level == [3, 6]  # the former attribute


def test_generator_level_and_levels_together_is_an_error(disk_model):
    with pytest.raises(TypeError, match="both 'level' .* and 'levels'"):
        SemanticSamAutomaticMaskGenerator(disk_model, level=[3], levels=[3], **FEW)


def test_generator_signature_says_levels():
    import inspect

    params = inspect.signature(SemanticSamAutomaticMaskGenerator).parameters
    assert "levels" in params and "level" not in params


def test_new_names_do_not_warn(disk_model):
    with warnings.catch_warnings():
        warnings.filterwarnings("error", ".* is deprecated", DeprecationWarning)  # ours, not third parties'
        gen = SemanticSamAutomaticMaskGenerator(disk_model, levels=[1], **FEW)
        assert gen.predictor.num_tokens == 6
        gen.generate(IMAGE)


# ------------------------------------------------------------------------------ predictor and models


def test_predictor_num_levels_is_a_deprecated_alias_of_num_tokens(disk_model):
    pred = SemanticSamPredictor(disk_model)
    with pytest.warns(DeprecationWarning, match="use num_tokens"):
        assert pred.num_levels == pred.num_tokens == 6


class _FormerProtocolModel:
    """A PromptableModel written against the former protocol: K is ``num_mask_tokens`` (or missing)."""

    def __init__(self, num_mask_tokens=None):
        self._model = DiskModel()
        if num_mask_tokens is not None:
            self.num_mask_tokens = num_mask_tokens

    def __getattr__(self, name):
        if name == "num_tokens":
            raise AttributeError(name)
        return getattr(self._model, name)

    def eval(self):
        self._model.eval()
        return self


def test_model_that_names_k_num_mask_tokens_still_works():
    with pytest.warns(DeprecationWarning, match="num_mask_tokens is deprecated"):
        pred = SemanticSamPredictor(_FormerProtocolModel(num_mask_tokens=6), short_side=None)
    assert pred.num_tokens == 6
    pred.set_image(IMAGE)
    ref = SemanticSamPredictor(DiskModel().eval(), short_side=None)
    ref.set_image(IMAGE)
    ours = pred.predict(point_coords=[[50, 40]], levels=[2, 5])
    for a, b in zip(ours, ref.predict(point_coords=[[50, 40]], levels=[2, 5])):
        np.testing.assert_array_equal(a, b)


def test_model_without_k_is_refused():
    with pytest.raises(TypeError, match="no num_tokens"):
        SemanticSamPredictor(_FormerProtocolModel())


def test_semantic_sam_inference_tokens_and_deprecated_levels(tiny_model):
    """``SemanticSAM.inference`` takes token indices: ``tokens=``; ``levels=`` is the former name of the
    same token indices (not user levels)."""
    assert tiny_model.num_tokens == 6
    with pytest.warns(DeprecationWarning, match="use num_tokens"):
        assert tiny_model.num_mask_tokens == 6
    image = torch.from_numpy(IMAGE).permute(2, 0, 1).contiguous()
    x = [{"image": image, "points": torch.tensor([[40.0, 30.0]])}]
    new = tiny_model.inference(x, tokens=[3, 0])[0]
    with pytest.warns(DeprecationWarning, match="'levels' is deprecated, use 'tokens'"):
        old = tiny_model.inference(x, levels=[3, 0])[0]
    for key in new:
        torch.testing.assert_close(new[key], old[key], rtol=0, atol=0)
    with pytest.raises(TypeError, match="both"):
        tiny_model.inference(x, levels=[3], tokens=[3])


# ------------------------------------------------------------------------------ deformable attention


def test_ms_deform_attn_keeps_deformable_detr_keywords():
    torch.manual_seed(0)
    with pytest.warns(DeprecationWarning, match="'n_levels' is deprecated, use 'num_feature_levels'"):
        old = MSDeformAttn(d_model=16, n_levels=2, n_heads=2, n_points=2)
    new = MSDeformAttn(d_model=16, num_feature_levels=2, n_heads=2, n_points=2)
    new.load_state_dict(old.state_dict())
    assert old.num_feature_levels == new.num_feature_levels == 2
    with pytest.raises(TypeError, match="both"):
        MSDeformAttn(n_levels=2, num_feature_levels=2)

    shapes = torch.tensor([[4, 6], [2, 3]])
    starts = torch.tensor([0, 24])
    query, flat = torch.randn(1, 5, 16), torch.randn(1, 30, 16)
    ref = torch.rand(1, 5, 2, 2)
    out = new(query, ref, flat, shapes, input_feature_level_start_index=starts)
    with pytest.warns(DeprecationWarning, match="input_level_start_index"):
        torch.testing.assert_close(old(query, ref, flat, shapes, input_level_start_index=starts), out, rtol=0, atol=0)

    value, loc, w = torch.randn(1, 30, 2, 8), torch.rand(1, 5, 2, 2, 2, 2), torch.rand(1, 5, 2, 2, 2)
    for op in (ms_deform_attn, ms_deform_attn_pytorch):
        expected = op(value, shapes, starts, loc, w)
        with pytest.warns(DeprecationWarning, match="'level_start_index' is deprecated"):
            got = op(value, shapes, level_start_index=starts, sampling_locations=loc, attention_weights=w)
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
