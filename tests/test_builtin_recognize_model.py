"""The built-in model's stage 2 (models/builtin/semantic_sam_builtin_recognize.pth, issue 17): it loads strictly
and names what it segments on held-out synthetic scenes (typical colours, another seed than the training and
validation splits of tools/make_builtin_data.py).

The thresholds record what the shipped checkpoint reaches, with a margin (see models/builtin/MODEL_CARD.md):
on these scenes the label of the clicked object or stuff region (the output with the highest predicted IoU) is
right for 69 of 78 clicks (88 %; the first stage-2 cycle alone: 53, 68 %), and the panoptic segmentation (the
config's OBJECT_MASK_THRESHOLD 0.1) names 83 % of the pixels right (82 % at the reference's 0.25, which leaves 17 %
of them unlabelled). Always answering the most frequent class would give 13 % of the clicks and 32 % of the pixels;
the tests also check that the thresholds stay above those.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from datasets.builtin_labels import OBJECT_CLASSES, STUFF_CLASSES
from semantic_sam import build_model
from semantic_sam.checkpoint import load_checkpoint
from semantic_sam.config import load_config
from semantic_sam.predictor import SemanticSamPredictor
from tests.utils.masks import interior_point
from tools.make_synthetic_sa1b import render_scene
from utils.demo_outputs import panoptic_segments

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "semantic_sam_builtin_recognize.yaml")
CHECKPOINT = os.path.join(ROOT, "models", "builtin", "semantic_sam_builtin_recognize.pth")
SCENE_SEED = 2024  # training: seed 0, validation: seed 1
NUM_SCENES = 10
IMAGE_LONG_SIDE = 224
NAMES = list(OBJECT_CLASSES) + list(STUFF_CLASSES)  # the built-in panoptic vocabulary, objects then stuff
MIN_CLICK_ACC = 0.80  # the shipped checkpoint: 69 of 78 clicks (88 %)
MIN_PIXEL_ACC = 0.75  # the shipped checkpoint: 83 % of the pixels

pytestmark = pytest.mark.skipif(not os.path.isfile(CHECKPOINT), reason="stage-2 built-in checkpoint not present")


@pytest.fixture(scope="module")
def predictor() -> SemanticSamPredictor:
    torch.set_num_threads(1)
    cfg = load_config(CONFIG)
    net = build_model(cfg, device="cpu")
    report = load_checkpoint(net, CHECKPOINT, strict=True)
    assert report.ok, str(report)
    pred = SemanticSamPredictor(
        net.eval(), short_side=IMAGE_LONG_SIDE, max_size=IMAGE_LONG_SIDE,
        point_convention=cfg.MODEL.DECODER.TEST.POINT_CONVENTION,
    )
    pred.set_vocabulary(NAMES)
    return pred


@pytest.fixture(scope="module")
def scenes() -> list[tuple[np.ndarray, list[dict]]]:
    out = []
    for index in range(NUM_SCENES):
        rng = np.random.default_rng(np.random.SeedSequence([SCENE_SEED, index]))
        out.append(render_scene(rng, IMAGE_LONG_SIDE * 3 // 4, IMAGE_LONG_SIDE, "typical"))
    return out


def test_checkpoint_is_small_and_loads_strictly(predictor: SemanticSamPredictor) -> None:
    assert os.path.getsize(CHECKPOINT) < 30 * 2**20
    assert all(torch.isfinite(p).all() for p in predictor.model.parameters())


def _named_regions(regions: list[dict]) -> list[tuple[np.ndarray, str]]:
    """(mask, name) of every stuff region and top-level object (a group's members, not the group)."""
    return [(r["mask"], r["name"]) for r in regions if r["level"] == "stuff" or r["level"] == "object"]


def _finest_names(regions: list[dict], shape: tuple[int, int]) -> np.ndarray:
    """(H, W) index into NAMES of the innermost stuff region or object covering each pixel (-1: none)."""
    out = np.full(shape, -1, np.int64)
    for mask, name in _named_regions(regions):  # pre-order: objects come after the stuff they stand on
        out[mask] = NAMES.index(name)
    return out


def test_a_click_names_the_object_or_stuff_it_lies_in(predictor, scenes) -> None:
    right = total = 0
    majority = {}
    for image, regions in scenes:
        targets = []
        for mask, name in _named_regions(regions):
            x, y, depth = interior_point(mask)
            if depth >= 3:
                targets.append(((x, y), name))
        if not targets:
            continue
        predictor.set_image(image)
        with torch.no_grad():
            _, scores, _, labels = predictor.predict(point_coords=[p for p, _ in targets], return_labels=True)
        best = scores.argmax(1)
        for k, (_, name) in enumerate(targets):
            right += NAMES[int(labels.object_ids[k, best[k]])] == name
            total += 1
            majority[name] = majority.get(name, 0) + 1
    assert total >= 40, f"only {total} clicks in {NUM_SCENES} scenes"
    chance = max(majority.values()) / total
    assert right / total >= MIN_CLICK_ACC > chance, (right, total, chance)


def test_panoptic_segmentation_names_the_pixels(predictor, scenes) -> None:
    things = [name in OBJECT_CLASSES for name in NAMES]
    right = total = 0
    counts = np.zeros(len(NAMES), np.int64)
    for image, regions in scenes:
        gt = _finest_names(regions, image.shape[:2])
        pred = np.full(gt.shape, -2, np.int64)
        for seg in panoptic_segments(predictor, image, things):
            pred[seg["mask"]] = seg["category_id"]
        valid = gt >= 0
        right += int((pred[valid] == gt[valid]).sum())
        total += int(valid.sum())
        counts += np.bincount(gt[valid], minlength=len(NAMES))
    chance = counts.max() / total
    assert right / total >= MIN_PIXEL_ACC > chance, (right / total, chance)
