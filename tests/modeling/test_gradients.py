"""Every trainable parameter takes part in every training step.

This is what lets ``train_net.py`` wrap the model in DistributedDataParallel with
``find_unused_parameters=False`` (no extra graph traversal per step): a parameter left out of the
loss graph on any step would stall or break DDP's gradient reduction. The decoder keeps its
projections that no training output uses in the graph with a ``0 *`` term
(``SemanticSAM._forward_train`` adds 0 x one element of every parameter), so their gradients are zero, not None.
"""
import os

import pytest
import torch
from detectron2.structures import BitMasks, Instances

from semantic_sam.build import build_model
from semantic_sam.config import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(ROOT, "configs", "semantic_sam_tiny_cpu.yaml")
# Decoder parameters that no training output depends on: only the 0 * trick reaches them.
KEPT_BY_ZERO_TERM = ("lang_mapper", "class_embed", "class_embed_part")


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _sample(h: int, w: int, num_masks: int, seed: int) -> dict:
    """A random RGB image with ``num_masks`` rectangular masks."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(num_masks, h, w, dtype=torch.bool)
    for i in range(num_masks):
        masks[i, 4 * i : 4 * i + 24, 3 * i : 3 * i + 30] = True
    bm = BitMasks(masks)
    inst = Instances((h, w), gt_masks=bm, gt_boxes=bm.get_bounding_boxes(), gt_classes=torch.zeros(num_masks).long())
    return {"image": torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g), "instances": inst}


def _missing_gradients(overrides: list[str], batch: list[dict]) -> tuple[list[str], torch.nn.Module]:
    torch.manual_seed(0)
    model = build_model(load_config(TINY, overrides)).train()
    sum(model(batch).values()).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    return missing, model


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["MODEL.DECODER.MANY_TO_ONE=True"],
        ["MODEL.DECODER.IOU_TARGET=prompt"],
        ["MODEL.DECODER.DEEP_SUPERVISION=False"],
        ["MODEL.DECODER.TRAIN_BOX_PROMPTS=True", "MODEL.DECODER.MATCH_EACH_LAYER=True"],
    ],
    ids=["many_to_many", "many_to_one", "prompt_iou", "last_layer_only", "box_prompts"],
)
def test_every_trainable_parameter_gets_a_gradient(overrides):
    """Two images of different sizes, one of them without any mask."""
    missing, model = _missing_gradients(overrides, [_sample(64, 96, 3, 0), _sample(80, 50, 0, 1)])
    assert missing == []
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) > 0


def test_a_batch_without_any_mask_still_reaches_every_parameter():
    missing, _ = _missing_gradients([], [_sample(64, 64, 0, 2)])
    assert missing == []


def test_unused_projections_get_zero_gradients():
    """The 0 * term keeps them in the graph without changing any loss."""
    _, model = _missing_gradients([], [_sample(64, 64, 2, 3)])
    decoder = model.sem_seg_head.predictor
    for name in KEPT_BY_ZERO_TERM:
        grad = getattr(decoder, name).grad
        assert grad is not None and not grad.any(), name
