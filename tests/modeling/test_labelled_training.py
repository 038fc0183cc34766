"""The training forward with labelled clicks: dataset groups, loss names and weights, gradients, errors.

Labelled inputs carry ``"vocabulary"`` and ``instances.gt_object_classes`` / ``gt_part_classes``; SA-1B
inputs carry neither. A dict ``{dataset: inputs}`` prefixes every loss with its dataset; a list mixing
datasets adds the losses of the same name. Every trainable parameter gets a gradient on every step
(DDP without ``find_unused_parameters``), see also ``tests/modeling/test_gradients.py``.
"""
import os
import random

import numpy as np
import pytest
import torch
from detectron2.structures import BitMasks, Instances

from semantic_sam.build import build_model
from semantic_sam.config import load_config
from semantic_sam.modeling.criterion import LOSS_NAMES

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_TEXT = os.path.join(ROOT, "configs", "semantic_sam_tiny_text.yaml")
TINY = os.path.join(ROOT, "configs", "semantic_sam_tiny_cpu.yaml")
LAYERS = 3  # DEC_LAYERS of the tiny configs
PLAIN_KEYS = {f"{n}_{s}" for n in LOSS_NAMES for s in range(LAYERS)}
OBJECT_KEYS = {f"loss_mask_cls_{s}" for s in range(LAYERS)}
PART_KEYS = {f"loss_mask_part_cls_{s}" for s in range(LAYERS)}
VOCABULARY = {"object": ["cat", "car", "cup"], "part": ["head", "wheel"]}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _seed(seed: int = 0) -> None:
    """Every random source of a training step: prompts (torch, random), templates (numpy)."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def _sa1b(num_masks: int, seed: int, h: int = 64, w: int = 80) -> dict:
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(num_masks, h, w, dtype=torch.bool)
    for i in range(num_masks):
        masks[i, 6 * i : 6 * i + 24, 4 * i : 4 * i + 30] = True
    bm = BitMasks(masks)
    inst = Instances((h, w), gt_masks=bm, gt_boxes=bm.get_bounding_boxes())
    return {"image": torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g), "instances": inst}


def _labelled(num_masks: int, seed: int, parts: bool = True, name: str = "toy_parts") -> dict:
    x = _sa1b(num_masks, seed)
    inst = x["instances"]
    inst.gt_object_classes = torch.arange(num_masks) % 3
    if parts:
        inst.gt_part_classes = torch.tensor([-1, 0, 1, 0, 1][:num_masks], dtype=torch.long)
    vocabulary = VOCABULARY if parts else {"object": VOCABULARY["object"], "part": []}
    return {**x, "dataset_name": name, "vocabulary": vocabulary}


def _model(config: str = TINY_TEXT, overrides=()) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(load_config(config, list(overrides))).train()


def _losses(model, batch, seed: int = 0) -> dict:
    _seed(seed)
    return model(batch)


def _no_grad(model) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]


def test_dict_input_prefixes_every_loss_with_its_dataset():
    model = _model()
    losses = _losses(model, {"sa1b": [_sa1b(3, 0)], "toy_parts": [_labelled(4, 1), _labelled(3, 2)]})
    expected = {f"sa1b.{k}" for k in PLAIN_KEYS} | {f"toy_parts.{k}" for k in PLAIN_KEYS | OBJECT_KEYS | PART_KEYS}
    assert set(losses) == expected
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert _no_grad(model) == []


def test_a_list_mixing_datasets_adds_the_losses_of_each_dataset():
    """Grouped by ``dataset_name`` in order of appearance (SA-1B inputs: the group ""); the same draws
    as the dict form, so each summed loss equals the sum of the dict's prefixed losses."""
    model = _model()
    sa1b, parts = [_sa1b(3, 0), _sa1b(2, 3)], [_labelled(4, 1)]
    by_dataset = _losses(model, {"": sa1b, "toy_parts": parts})
    mixed = _losses(model, [sa1b[0], parts[0], sa1b[1]])
    assert set(mixed) == PLAIN_KEYS | OBJECT_KEYS | PART_KEYS
    for key in PLAIN_KEYS:
        torch.testing.assert_close(mixed[key], by_dataset[f".{key}"] + by_dataset[f"toy_parts.{key}"], msg=key)
    for key in OBJECT_KEYS | PART_KEYS:
        torch.testing.assert_close(mixed[key], by_dataset[f"toy_parts.{key}"], msg=key)
    only_sa1b = _losses(model, sa1b)
    torch.testing.assert_close(only_sa1b["loss_mask_bce_0"], by_dataset[".loss_mask_bce_0"])


def test_sa1b_step_of_a_model_with_a_text_encoder_reaches_every_parameter():
    model = _model()
    losses = _losses(model, [_sa1b(3, 0), _sa1b(0, 1)])
    assert set(losses) == PLAIN_KEYS
    sum(losses.values()).backward()
    assert _no_grad(model) == []
    dec = model.sem_seg_head.predictor
    for name, p in [*model.text_encoder.named_parameters(), ("class_embed", dec.class_embed)]:
        assert not p.grad.any(), name  # in the graph through the 0 * term only


@pytest.mark.parametrize("parts", [True, False], ids=["object_and_part", "object_only"])
def test_labelled_step_trains_the_heads_and_the_text_encoder(parts):
    model = _model()
    losses = _losses(model, [_labelled(4, 1, parts), _labelled(2, 2, parts)])
    assert set(losses) == PLAIN_KEYS | OBJECT_KEYS | (PART_KEYS if parts else set())
    sum(losses.values()).backward()
    assert _no_grad(model) == []
    dec = model.sem_seg_head.predictor
    assert dec.class_embed.grad.any()
    assert bool(dec.class_embed_part.grad.any()) is parts
    assert not dec.lang_mapper.grad.any()  # no generic denoising queries yet
    # the class embeddings are computed with gradients: every tensor of the text encoder learns
    assert [n for n, p in model.text_encoder.named_parameters() if not p.grad.any()] == []


def test_class_weights_scale_only_the_class_losses():
    batch = [_labelled(4, 1)]
    base = _losses(_model(), batch)
    overrides = ["MODEL.DECODER.CLASS_WEIGHT=8.0", "MODEL.DECODER.PART_CLASS_WEIGHT=1.0"]
    heavier = _losses(_model(overrides=overrides), batch)
    for key in base:
        if key in OBJECT_KEYS:
            ratio = 2.0  # 8 / 4
        elif key in PART_KEYS:
            ratio = 0.25  # 1 / 4
        else:
            ratio = 1.0
        torch.testing.assert_close(heavier[key], base[key] * ratio, msg=key)


def test_labelled_images_without_masks():
    model = _model()
    losses = _losses(model, [_labelled(0, 1), _labelled(3, 2)])
    assert set(losses) == PLAIN_KEYS | OBJECT_KEYS | PART_KEYS and losses["loss_mask_cls_0"] > 0
    empty = _losses(model, [_labelled(0, 3)])
    assert all(empty[k].item() == 0.0 for k in OBJECT_KEYS | PART_KEYS)
    sum(empty.values()).backward()
    assert _no_grad(model) == []


def test_labelled_input_errors():
    model = _model()
    with pytest.raises(ValueError, match="labelled training data needs a text encoder"):
        _model(TINY)([_labelled(2, 0)])
    missing = _labelled(2, 0)
    missing["instances"].remove("gt_part_classes")
    with pytest.raises(KeyError, match="gt_part_classes"):
        model([missing])
    other_vocabulary = {**_labelled(2, 1), "vocabulary": {"object": ["dog"], "part": []}}
    with pytest.raises(ValueError, match="mix vocabularies"):
        model([_labelled(2, 0), other_vocabulary])
    with pytest.raises(ValueError, match="non-empty"):
        model({"toy_parts": []})


def test_labelled_images_get_their_own_prompt_count():
    """LABELLED_MAX_NUM_INSTANCE: prompts per labelled image; SA-1B images keep MAX_NUM_INSTANCE (6 here)."""
    model = _model(overrides=["MODEL.DECODER.LABELLED_MAX_NUM_INSTANCE=3"])
    labelled, sa1b = _labelled(5, 0), _sa1b(5, 1)
    images = model.preprocess_image([labelled["image"]])
    _seed()
    assert len(model._sample_prompts([labelled], images)[0].prompt_gt_inds) == 3
    assert len(model._sample_prompts([sa1b], images)[0].prompt_gt_inds) == 6
    losses = _losses(model, {"toy_parts": [labelled], "sa1b": [sa1b]})
    assert all(torch.isfinite(v) for v in losses.values()) and "toy_parts.loss_mask_part_cls_0" in losses
    assert _model().num_clicks_per_labelled_image == 6  # 0: as SA-1B images
