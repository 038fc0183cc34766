"""Test helpers shared by the interactive evaluation tests (tests/evaluation): hand-made masks, prompts, model
outputs and the metrics expected of them."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from detectron2.structures import BitMasks, Instances


def _m(h, w, *rects):
    """(H, W) bool mask, True inside the (y0, y1, x0, x1) rectangles."""
    m = torch.zeros(h, w, dtype=torch.bool)
    for y0, y1, x0, x1 in rects:
        m[y0:y1, x0:x1] = True
    return m


def _logits(*masks):
    """(L, H, W) logits: +1 inside each mask, -1 outside."""
    return torch.stack(masks).float() * 2 - 1


def _input(image_id, gt, points, boxes=None):
    inst = Instances(gt.shape[-2:])
    inst.gt_masks = BitMasks(gt)
    d = {"image_id": image_id, "instances": inst, "points": torch.tensor(points, dtype=torch.float32)}
    if boxes is not None:
        d["boxes"] = torch.tensor(boxes, dtype=torch.float32)
    return d


def _image_a():
    """4x4 image, GT0 = top-left 2x2, GT1 = right half; point and box prompts.

    Points, segment 0: outputs [GT0 (IoU 1), top row (2/6), empty (0)], predicted IoU picks 1.
    Points, segment 1: outputs [all (8/16), last column (4/8), GT1 (1)], tie 0.7/0.7 -> first (0).
    Boxes: segment 0 outputs [GT0, GT0, empty], picks 1 (IoU 1); segment 1 all empty (IoU 0).
    """
    gt0, gt1 = _m(4, 4, (0, 2, 0, 2)), _m(4, 4, (0, 4, 2, 4))
    empty = _m(4, 4)
    masks = torch.stack(
        [
            _logits(gt0, _m(4, 4, (0, 1, 0, 4)), empty),
            _logits(_m(4, 4, (0, 4, 0, 4)), _m(4, 4, (0, 4, 3, 4)), gt1),
            _logits(gt0, gt0, empty),
            _logits(empty, empty, empty),
        ]
    )
    ious = torch.tensor([[0.1, 0.9, 0.5], [0.7, 0.2, 0.7], [0.0, 1.0, 0.0], [0.3, 0.2, 0.1]])
    inp = _input(11, torch.stack([gt0, gt1]), [[0, 0], [3, 1]], boxes=[[0, 0, 2, 2], [2, 0, 4, 4]])
    inp["segment_ids"] = torch.tensor([5, 6])
    return inp, {"pred_masks": masks, "pred_ious": ious}


def _image_b():
    """No GT segment (only crowd): no prompts, empty output."""
    inp = _input(12, torch.zeros(0, 5, 5, dtype=torch.bool), [])
    inp["points"] = torch.zeros(0, 2)
    inp["num_dropped_segments"] = 1
    return inp, {}


def _image_c():
    """3x3 image, GT = everything; outputs 3/9, 6/9, 9/9 px; picks 2."""
    gt = _m(3, 3, (0, 3, 0, 3))
    masks = _logits(_m(3, 3, (0, 1, 0, 3)), _m(3, 3, (0, 2, 0, 3)), gt)[None]
    return _input(13, gt[None], [[1, 1]]), {"pred_masks": masks, "pred_ious": torch.tensor([[0.0, 0.0, 1.0]])}


# Per point segment: IoUs of the 3 outputs and the Max pick.
POINT_IOUS = [[1, 1 / 3, 0], [0.5, 0.5, 1], [1 / 3, 2 / 3, 1]]
POINT_PICKS = [1, 0, 2]


def _expected_point_metrics():
    iou_max = [1 / 3, 0.5, 1.0]
    return {
        "num_segments": 3,
        "1-IoU@Max": 100 * np.mean(iou_max),
        "1-IoU@Oracle": 100.0,
        "noc@0.5@Max": (20 + 1 + 1) / 3,
        "noc@0.8@Max": (20 + 20 + 1) / 3,
        "noc@0.85@Max": (20 + 20 + 1) / 3,
        "noc@0.9@Max": (20 + 20 + 1) / 3,
        "noc@0.5@Oracle": 1.0,
        "noc@0.9@Oracle": 1.0,
        "mIoU_token_0": 100 * np.mean([1, 0.5, 1 / 3]),
        "mIoU_token_1": 100 * np.mean([1 / 3, 0.5, 2 / 3]),
        "mIoU_token_2": 100 * np.mean([0, 1, 1]),
        "token_pick_0": 100 / 3,
        "token_pick_1": 100 / 3,
        "token_pick_2": 100 / 3,
        "num_images": 3,
        "num_images_without_segments": 1,
        "num_dropped_segments": 1,
    }


def _check(res, expected):
    for k, v in expected.items():
        assert res[k] == pytest.approx(v, abs=1e-9), k


# ------------------------------------------------------------------------------------------ object labels
def _label_logits(*rows):
    """(rows, L, 3) logits: each entry a class index (logit 1 there, -1 elsewhere) or a list of 3 logits."""
    out = torch.full((len(rows), len(rows[0]), 3), -1.0)
    for r, row in enumerate(rows):
        for k, v in enumerate(row):
            if isinstance(v, int):
                out[r, k, v] = 1.0
            else:
                out[r, k] = torch.tensor(v)
    return out


def _labelled(image, gt_object_classes, *logit_rows):
    inp, out = image
    inp["instances"].gt_object_classes = torch.tensor(gt_object_classes)
    inp["vocabulary"] = {"object": ("a", "b", "c"), "part": ()}
    return inp, dict(out, pred_logits=_label_logits(*logit_rows))


def _labelled_images():
    """Images A and C of the IoU tests, with object logits (3 classes) and GT classes.

    A, points: segment 0 (class 2): Max = output 1 (label 0, wrong), Oracle = output 0 (label 2, right).
    Segment 1 (class 1): Max = output 0, whose logits tie classes 0 and 1 -> first = 0 (wrong);
    Oracle = output 2 (label 1, right).
    A, boxes: segment 0: IoUs [1, 1, 0] tie -> Oracle = output 0 (label 2, right), Max = output 1
    (label 1, wrong). Segment 1: all IoUs 0 -> Oracle = output 0 = Max (label 1, right).
    C (class 0): Max = Oracle = output 2 (label 0, right).
    """
    a = _labelled(_image_a(), [2, 1], [2, 0, 1], [[0.5, 0.5, -1.0], 2, 1], [2, 1, 0], [1, 0, 0])
    c = _labelled(_image_c(), [0], [2, 1, 0])
    return a, c
