"""Learning check: the tiny text model learns to name clicked objects and parts.

A short CPU training of ``configs/semantic_sam_tiny_text.yaml`` (random backbone, decoder and text
encoder) on synthetic labelled scenes made in memory, through ``model(batch)`` and AdamW, as the joint
training loop calls it. Each 64 x 64 scene holds two non-overlapping rectangles; the object class sets
the hue (4 classes), and each object is cut into three horizontal bands, its parts ``head``, ``body``,
``leg``, drawn at 100 %, 70 % and 40 % of that hue. The instances are the objects (part label -1) and
their parts (object label of their object), as the part datasets give them.

After training, on held-out scenes (another seed), every GT mask is clicked at the point the
evaluation's click simulation picks, and the model names the output that best matches the GT
(Oracle) and the output with the highest predicted IoU (Max) with the vocabulary's evaluation
embeddings (the 81-template mean; training uses one random template per class and step). Chance is
1/4 for objects and 1/3 for parts.

The part label of the Max output gets a weaker bound: a click inside a part is also a click inside
its object, and when the Max output is the whole object, its part logits were never trained (object
targets carry no part label).

Measured (200 steps, training seeds 0, 1, 2): object Oracle / Max 0.98-1.0, part Oracle 0.84-1.0,
part Max 0.58-0.83, Oracle mask IoU 0.54-0.65; about 35 s on one CPU thread.
"""
import os
import random
import time

import numpy as np
import pytest
import torch
from detectron2.structures import BitMasks, Instances

from semantic_sam.build import build_model
from semantic_sam.config import load_config
from semantic_sam.evaluation.click_simulation import clicks_from_masks

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_TEXT = os.path.join(ROOT, "configs", "semantic_sam_tiny_text.yaml")
OBJECTS = ["cat", "car", "bird", "cup"]
PARTS = ["head", "body", "leg"]
# Red, green, blue, white. With yellow for white, 2 of 3 training seeds still merged red with yellow and
# green with blue after 200 steps (object accuracy 0.41-0.6): too close for the tiny random backbone.
HUES = torch.tensor([[220, 20, 20], [20, 200, 20], [20, 40, 230], [210, 210, 210]], dtype=torch.float)
SHADES = (1.0, 0.7, 0.4)
SIZE = 64
STEPS = 200
EVAL_SCENES = 16


def labelled_scene(g: torch.Generator, num_objects: int = 2) -> dict:
    """One training input: a (3, SIZE, SIZE) uint8 image and its 4 * num_objects labelled masks."""
    image = torch.randint(0, 60, (3, SIZE, SIZE), generator=g).float()
    free = torch.ones(SIZE, SIZE, dtype=torch.bool)
    masks, objects, parts = [], [], []
    while len(objects) < 4 * num_objects:
        h, w = (int(v) for v in torch.randint(SIZE // 4, SIZE // 2, (2,), generator=g))
        h -= h % 3
        y, x = int(torch.randint(0, SIZE - h, (1,), generator=g)), int(torch.randint(0, SIZE - w, (1,), generator=g))
        if not free[max(y - 2, 0) : y + h + 2, max(x - 2, 0) : x + w + 2].all():
            continue
        free[y : y + h, x : x + w] = False
        c = int(torch.randint(0, len(OBJECTS), (1,), generator=g))
        whole = torch.zeros(SIZE, SIZE, dtype=torch.bool)
        whole[y : y + h, x : x + w] = True
        masks.append(whole)
        objects.append(c)
        parts.append(-1)
        for p, shade in enumerate(SHADES):
            band = torch.zeros(SIZE, SIZE, dtype=torch.bool)
            band[y + p * h // 3 : y + (p + 1) * h // 3, x : x + w] = True
            image[:, band] = (HUES[c] * shade)[:, None]
            masks.append(band)
            objects.append(c)
            parts.append(p)
    bm = BitMasks(torch.stack(masks))
    instances = Instances(
        (SIZE, SIZE),
        gt_masks=bm,
        gt_boxes=bm.get_bounding_boxes(),
        gt_object_classes=torch.tensor(objects),
        gt_part_classes=torch.tensor(parts),
    )
    return {
        "image": image.round().to(torch.uint8),
        "instances": instances,
        "dataset_name": "toy_parts",
        "vocabulary": {"object": OBJECTS, "part": PARTS},
    }


def click_accuracy(model, seed: int) -> dict[str, float]:
    """Top-1 object and part accuracy of the Oracle and Max outputs of one click per GT mask."""
    was_training = model.training
    model.eval()
    g = torch.Generator().manual_seed(seed)
    embeddings = model.class_embeddings(OBJECTS, PARTS)
    hits: dict[str, list[bool]] = {k: [] for k in ("object_oracle", "object_max", "part_oracle", "part_max")}
    ious = []
    for _ in range(EVAL_SCENES):
        x = labelled_scene(g)
        masks = x["instances"].gt_masks.tensor
        points = clicks_from_masks(masks).float()
        (out,) = model.inference([{"image": x["image"], "points": points}], class_embeddings=embeddings)
        pred = out["pred_masks"] > 0  # (M, K, H, W)
        inter = (pred & masks[:, None]).flatten(2).sum(-1)
        union = (pred | masks[:, None]).flatten(2).sum(-1)
        iou = inter / union.clamp(min=1)
        rows = torch.arange(len(masks))
        picks = {"oracle": iou.argmax(1), "max": out["pred_ious"].argmax(1)}
        objects, parts = x["instances"].gt_object_classes, x["instances"].gt_part_classes
        for name, pick in picks.items():
            hits[f"object_{name}"] += (out["pred_logits"][rows, pick].argmax(-1) == objects).tolist()
            is_part = parts >= 0
            hits[f"part_{name}"] += (out["pred_logits_part"][rows, pick].argmax(-1) == parts)[is_part].tolist()
        ious += iou[rows, picks["oracle"]].tolist()
    model.train(was_training)
    return {**{k: float(np.mean(v)) for k, v in hits.items()}, "oracle_iou": float(np.mean(ious))}


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # also makes the run reproducible
    yield
    torch.set_num_threads(threads)


def test_tiny_text_model_learns_object_and_part_labels(one_thread):
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)  # the training prompt templates
    cfg = load_config(
        TINY_TEXT, ["MODEL.DECODER.MAX_NUM_INSTANCE=16", "MODEL.DECODER.TRAIN_NUM_POINTS=256"]
    )
    model = build_model(cfg).train()
    before = click_accuracy(model, seed=1000)
    embeddings_before = model.class_embeddings(OBJECTS, PARTS)["object"].clone()

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    g = torch.Generator().manual_seed(1)
    class_losses = []
    start = time.perf_counter()
    for _ in range(STEPS):
        losses = model([labelled_scene(g), labelled_scene(g)])
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
        class_losses.append((losses["loss_mask_cls_0"] + losses["loss_mask_part_cls_0"]).item())
    seconds = time.perf_counter() - start

    after = click_accuracy(model, seed=1000)
    print(f"\n{STEPS} steps in {seconds:.0f} s; before: {before}\nafter: {after}")
    # the evaluation embeddings follow the trained text encoder (the cache sees the new weights)
    assert not torch.allclose(model.class_embeddings(OBJECTS, PARTS)["object"], embeddings_before)
    assert np.mean(class_losses[-20:]) < 0.5 * np.mean(class_losses[:20])
    assert after["oracle_iou"] > 0.4
    assert after["object_oracle"] >= 2 / len(OBJECTS)
    assert after["object_max"] >= 2 / len(OBJECTS)
    assert after["part_oracle"] >= 2 / len(PARTS)
    assert after["part_max"] >= 1.35 / len(PARTS)
