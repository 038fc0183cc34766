"""tools/bench/rows_generic.py: the COCO thing flags and the stage timing of model.segment (tiny generic config)."""
import os

import pytest
import torch

from semantic_sam.build import build_model
from semantic_sam.config import load_config
from semantic_sam.modeling import postprocess
from tools.bench.harness import ROOT, Laps
from tools.bench.rows_generic import POSTPROCESS_PARTS, coco_is_thing, segment_stage_laps

GENERIC = os.path.join(ROOT, "configs", "semantic_sam_tiny_generic.yaml")


def test_coco_is_thing_has_the_80_things_first():
    flags = coco_is_thing()
    assert len(flags) == 133 and flags[:80] == [True] * 80 and not any(flags[80:])


@pytest.fixture(scope="module")
def generic_model():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    return build_model(load_config(GENERIC, ["MODEL.TEXT.CACHE_DIR="])).eval()


def test_stage_laps_time_every_stage_and_change_nothing(generic_model):
    model = generic_model
    g = torch.Generator().manual_seed(0)
    inputs = [{"image": torch.randint(0, 256, (3, 50, 70), dtype=torch.uint8, generator=g)}]
    emb = {"object": torch.nn.functional.normalize(torch.randn(4, model.text_encoder.dim_proj, generator=g), dim=-1)}
    is_thing = [True, True, False, False]
    with torch.inference_mode():
        plain = model.segment(inputs, emb, is_thing=is_thing)[0]
        with segment_stage_laps(model) as holder:
            laps = Laps()
            holder["laps"] = laps
            timed = model.segment(inputs, emb, is_thing=is_thing)[0]
    assert list(laps.parts) == ["encode", "decoder", "mask upsampling", "semantic", "panoptic", "instance"]
    # the queries the panoptic rules keep: class score (max sigmoid) above the object mask threshold
    with torch.inference_mode():
        features = model.encode_image(model.preprocess_image([inputs[0]["image"]]))
        out = model.sem_seg_head.predictor.forward_generic(
            features["multi_scale_features"], features["mask_features"], emb, return_aux=False
        )
    class_scores = out["pred_logits"][0].sigmoid().max(-1).values
    assert holder["panoptic_queries"] == int((class_scores > model.generic_test["object_mask_threshold"]).sum())
    assert all(wall >= 0 and cpu >= 0 for wall, cpu in laps.parts.values())
    torch.testing.assert_close(timed["sem_seg"], plain["sem_seg"], rtol=0, atol=0)
    assert torch.equal(timed["panoptic_seg"][0], plain["panoptic_seg"][0])
    assert timed["panoptic_seg"][1] == plain["panoptic_seg"][1]
    assert torch.equal(timed["instances"].pred_masks, plain["instances"].pred_masks)
    assert torch.equal(timed["instances"].scores, plain["instances"].scores)
    # the wrappers are gone: the model's own methods and the module's functions again
    assert "encode_image" not in model.__dict__ and "forward_generic" not in model.sem_seg_head.predictor.__dict__
    for name, _ in POSTPROCESS_PARTS:
        assert getattr(postprocess, name).__module__ == "semantic_sam.modeling.postprocess"
        assert getattr(postprocess, name).__name__ == name


def test_stage_laps_are_removed_after_an_error(generic_model):
    originals = {name: getattr(postprocess, name) for name, _ in POSTPROCESS_PARTS}
    with pytest.raises(RuntimeError, match="boom"), segment_stage_laps(generic_model):
        raise RuntimeError("boom")
    assert {name: getattr(postprocess, name) for name, _ in POSTPROCESS_PARTS} == originals
    assert "encode_image" not in generic_model.__dict__
