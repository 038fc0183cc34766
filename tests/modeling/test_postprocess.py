"""Generic-query post-processing against hand-computed results on a few pixels, and a PQ round trip
through detectron2's COCOPanopticEvaluator on perfect outputs."""

import json
import math
import uuid

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import COCOPanopticEvaluator
from panopticapi.utils import id2rgb
from PIL import Image

from semantic_sam.modeling.postprocess import (
    instance_inference,
    panoptic_inference,
    part_instance_inference,
    semantic_inference,
    to_output_boxes,
)

BIG = 8.0  # sigmoid(8) = 0.99966, sigmoid(-8) = 0.00034


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def logits(rows) -> torch.Tensor:
    """(Q, C) logits whose sigmoids are the given probabilities."""
    return torch.tensor([[logit(p) for p in row] for row in rows])


def row_masks(rows) -> torch.Tensor:
    """(Q, 1, W) mask logits from one row of logits per query."""
    return torch.tensor(rows, dtype=torch.float32)[:, None, :]


# ---------------------------------------------------------------- semantic


def test_semantic_inference_hand_values_with_and_without_transform():
    ln3 = math.log(3.0)
    class_logits = torch.tensor([[0.0, ln3], [ln3, 0.0]])  # sigmoids (0.5, 0.75), (0.75, 0.5)
    mask_logits = row_masks([[0.0, ln3], [ln3, -ln3]])  # sigmoids (0.5, 0.75), (0.75, 0.25)

    plain = semantic_inference(class_logits, mask_logits, transform_eval=False)
    expected_plain = torch.tensor([[[0.5 * 0.5 + 0.75 * 0.75, 0.5 * 0.75 + 0.75 * 0.25]],
                                   [[0.75 * 0.5 + 0.5 * 0.75, 0.75 * 0.75 + 0.5 * 0.25]]])
    torch.testing.assert_close(plain, expected_plain)

    # softmax((0.5, 0.75) / T): class 0 gets a = 1 / (1 + exp(0.25 / T)); query 1 is the mirror image.
    for temperature in (0.06, 1.0):
        a = 1 / (1 + math.exp(0.25 / temperature))
        expected = torch.tensor([[[a * 0.5 + (1 - a) * 0.75, a * 0.75 + (1 - a) * 0.25]],
                                 [[(1 - a) * 0.5 + a * 0.75, (1 - a) * 0.75 + a * 0.25]]])
        out = semantic_inference(class_logits, mask_logits, temperature=temperature)
        torch.testing.assert_close(out, expected)
    assert out.shape == (2, 1, 2) and out.dtype == torch.float32


# ---------------------------------------------------------------- panoptic


def _without_scores(info: list[dict]) -> list[dict]:
    return [{k: v for k, v in s.items() if k != "score"} for s in info]


def test_panoptic_threshold_uses_sigmoid_score_before_transform():
    # q0's best sigmoid is 0.2: dropped at 0.25 even though its transformed score would be ~0.96.
    class_logits = logits([[0.2, 0.01], [0.01, 0.3]])
    mask_logits = row_masks([[-5, -5, 5], [5, 5, -5]])
    seg, info = panoptic_inference(class_logits, mask_logits, [True, True])
    assert seg.dtype == torch.int32 and seg.shape == (1, 3)
    assert seg.tolist() == [[1, 1, 0]]
    assert _without_scores(info) == [{"id": 1, "category_id": 1, "isthing": True}]
    assert info[0]["score"] == pytest.approx(0.3)  # the sigmoid class score, not the transformed one

    seg, info = panoptic_inference(class_logits, mask_logits, [True, True], object_mask_threshold=0.1)
    assert seg.tolist() == [[2, 2, 1]]  # ids follow query order
    assert _without_scores(info) == [
        {"id": 1, "category_id": 0, "isthing": True},
        {"id": 2, "category_id": 1, "isthing": True},
    ]


def test_panoptic_nothing_kept_is_all_void():
    seg, info = panoptic_inference(logits([[0.25, 0.1], [0.2, 0.24]]), torch.full((2, 3, 4), 5.0), [True, False])
    assert seg.shape == (3, 4) and seg.dtype == torch.int32
    assert not seg.any() and info == []


def test_panoptic_transform_changes_which_query_wins():
    # A: sigmoids (0.9, 0.85): plain score 0.9, transformed 1 / (1 + exp(-0.05 / 0.06)) = 0.70.
    # B: sigmoids (0.01, 0.6): plain score 0.6, transformed 1 / (1 + exp(-0.59 / 0.06)) = 0.99995.
    class_logits = logits([[0.9, 0.85], [0.01, 0.6]])
    mask_logits = torch.full((2, 2, 2), math.log(4.0))  # sigmoid 0.8 everywhere for both
    seg, info = panoptic_inference(class_logits, mask_logits, [True, True], transform_eval=False)
    assert seg.tolist() == [[1, 1], [1, 1]]
    assert _without_scores(info) == [{"id": 1, "category_id": 0, "isthing": True}]  # B has no argmax pixel: dropped
    seg, info = panoptic_inference(class_logits, mask_logits, [True, True])
    assert seg.tolist() == [[1, 1], [1, 1]]
    assert _without_scores(info) == [{"id": 1, "category_id": 1, "isthing": True}]


def test_panoptic_overlap_rule():
    class_logits = logits([[0.9, 0.01], [0.01, 0.9]])
    ln4, ln19 = math.log(4.0), math.log(19.0)  # sigmoids 0.8 and 0.95
    # q0's mask covers pixels 0-4 (score 0.9 * 0.8 = 0.72); q1 wins pixels 3-5 (0.9 * 0.95 = 0.855).
    # q0 keeps 3 of its 5 mask pixels: 0.6 < 0.8, dropped; its argmax pixels become void.
    masks = row_masks([[ln4] * 5 + [-5], [-5, -5, -5, ln19, ln19, ln19]])
    seg, info = panoptic_inference(class_logits, masks, [True, True], transform_eval=False)
    assert seg.tolist() == [[0, 0, 0, 1, 1, 1]]
    assert _without_scores(info) == [{"id": 1, "category_id": 1, "isthing": True}]

    # q1 takes pixels 4-5 only: q0 keeps 4 / 5 = 0.8, not below the threshold, kept.
    masks = row_masks([[ln4] * 5 + [-5], [-5, -5, -5, -5, ln19, ln19]])
    seg, info = panoptic_inference(class_logits, masks, [True, True], transform_eval=False)
    assert seg.tolist() == [[1, 1, 1, 1, 2, 2]]
    assert [s["category_id"] for s in info] == [0, 1]
    seg, info = panoptic_inference(class_logits, masks, [True, True], overlap_threshold=0.85, transform_eval=False)
    assert seg.tolist() == [[0, 0, 0, 0, 1, 1]]
    assert _without_scores(info) == [{"id": 1, "category_id": 1, "isthing": True}]

    # The ratio counts every argmax pixel, also those outside the query's own mask: q0 keeps 3 of its
    # 5 mask pixels but also wins pixels 5-6 (0.9 * sigmoid(-1) = 0.24 > 0.9 * sigmoid(-5)), which are
    # void; 5 / 5 >= 0.8, kept.
    masks = row_masks([[ln4] * 5 + [-1, -1], [-5, -5, -5, ln19, ln19, -5, -5]])
    seg, info = panoptic_inference(class_logits, masks, [True, True], transform_eval=False)
    assert seg.tolist() == [[1, 1, 1, 2, 2, 0, 0]]
    assert [s["category_id"] for s in info] == [0, 1]


def test_panoptic_segment_is_argmax_region_within_own_mask():
    # Pixel 1: q0 wins (0.9 * sigmoid(-1) = 0.24 > 0.9 * sigmoid(-2) = 0.11) but sigmoid(-1) < 0.5: void.
    # q0's argmax area (2) exceeds its mask area (1): a ratio above 1 is kept.
    class_logits = logits([[0.9, 0.01], [0.01, 0.9]])
    seg, info = panoptic_inference(class_logits, row_masks([[5, -1, -5], [-5, -2, 5]]), [True, True])
    assert seg.tolist() == [[1, 0, 2]]
    assert [s["category_id"] for s in info] == [0, 1]


def test_panoptic_stuff_segments_of_one_class_merge_things_do_not():
    # Classes: 0 thing, 1 stuff. Queries: stuff, thing, stuff, thing on one pixel each.
    class_logits = logits([[0.01, 0.9], [0.9, 0.01], [0.01, 0.8], [0.8, 0.01]])
    masks = torch.full((4, 1, 4), -5.0)
    for q in range(4):
        masks[q, 0, q] = 5.0
    seg, info = panoptic_inference(class_logits, masks, torch.tensor([True, False]))
    assert seg.tolist() == [[1, 2, 1, 3]]
    assert _without_scores(info) == [
        {"id": 1, "category_id": 1, "isthing": False},
        {"id": 2, "category_id": 0, "isthing": True},
        {"id": 3, "category_id": 0, "isthing": True},
    ]
    assert all(type(s["id"]) is int and type(s["category_id"]) is int and type(s["isthing"]) is bool for s in info)


def _panoptic_brute_force(class_logits, mask_logits, is_thing, threshold=0.25, overlap=0.8, temperature=0.06):
    """The §6 rules pixel by pixel and query by query, with Python loops."""
    probs = class_logits.sigmoid().tolist()
    kept = [q for q, row in enumerate(probs) if max(row) > threshold]
    scores = {}
    for q in kept:
        exps = [math.exp(p / temperature) for p in probs[q]]
        scores[q] = max(exps) / sum(exps)
    sig = mask_logits.sigmoid()
    height, width = mask_logits.shape[1:]
    winner = {}
    for y in range(height):
        for x in range(width):
            values = [scores[q] * float(sig[q, y, x]) for q in kept]
            if values:
                winner[y, x] = kept[values.index(max(values))]
    seg = [[0] * width for _ in range(height)]
    info, stuff_ids, dropped, merged = [], {}, 0, 0
    for q in kept:
        label = probs[q].index(max(probs[q]))
        argmax_pixels = [p for p, w in winner.items() if w == q]
        own = [(y, x) for y in range(height) for x in range(width) if sig[q, y, x] >= 0.5]
        segment = [p for p in argmax_pixels if sig[q][p] >= 0.5]
        if not argmax_pixels or not own or not segment or len(argmax_pixels) / len(own) < overlap:
            dropped += 1
            continue
        if not is_thing[label] and label in stuff_ids:
            segment_id = stuff_ids[label]
            merged += 1
        else:
            segment_id = len(info) + 1
            info.append({"id": segment_id, "category_id": label, "isthing": is_thing[label], "score": max(probs[q])})
            if not is_thing[label]:
                stuff_ids[label] = segment_id
        for y, x in segment:
            seg[y][x] = segment_id
    return seg, info, dropped, merged


def test_panoptic_matches_brute_force_on_random_logits():
    gen = torch.Generator().manual_seed(0)
    is_thing = [True, False, True, False]
    ys, xs = torch.arange(6)[:, None], torch.arange(7)[None, :]
    total_dropped = total_merged = 0
    for _ in range(6):
        class_logits = torch.randn(8, 4, generator=gen) * 2
        # Random rectangles (logit ~ +2 inside, ~ -2 outside) with noise: overlapping blobs.
        corners = torch.randint(0, 7, (8, 4), generator=gen).tolist()
        inside = torch.stack([
            (ys >= min(y0, y1)) & (ys <= max(y0, y1)) & (xs >= min(x0, x1)) & (xs <= max(x0, x1))
            for y0, x0, y1, x1 in corners
        ])
        mask_logits = torch.where(inside, 2.0, -2.0) + torch.randn(8, 6, 7, generator=gen)
        seg, info = panoptic_inference(class_logits, mask_logits, is_thing, overlap_threshold=0.4)
        expected_seg, expected_info, dropped, merged = _panoptic_brute_force(
            class_logits, mask_logits, is_thing, overlap=0.4
        )
        assert seg.tolist() == expected_seg and info == expected_info
        total_dropped += dropped
        total_merged += merged
    assert total_dropped > 0 and total_merged > 0  # the random cases exercise dropping and merging


# ---------------------------------------------------------------- instance


def _instance_case():
    ln3, ln4, ln9 = math.log(3.0), math.log(4.0), math.log(9.0)
    class_logits = logits([[0.9, 0.2, 0.6], [0.7, 0.95, 0.1]])
    # q0: mask = pixels 0, 1 (sigmoid 0.75 each). q1: pixels 0, 3 (0.9, 0.8); pixel 1 has logit 0: not in.
    mask_logits = row_masks([[ln3, ln3, -ln3, -5.0], [ln9, 0.0, -ln3, ln4]])
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [1.0, 0.0, 3.0, 1.0]])
    return class_logits, mask_logits, boxes


def test_instance_topk_order_and_score_formula():
    class_logits, mask_logits, boxes = _instance_case()
    out = instance_inference(class_logits, mask_logits, boxes, topk=4)
    # Flattened sigmoids (query-major): 0.9 0.2 0.6 | 0.7 0.95 0.1 -> top 4: 0.95, 0.9, 0.7, 0.6.
    assert out.image_size == (1, 4) and len(out) == 4
    assert out.pred_classes.tolist() == [1, 0, 0, 2]
    q1_mean, q0_mean = (0.9 + 0.8) / (2 + 1e-6), (0.75 + 0.75) / (2 + 1e-6)
    torch.testing.assert_close(out.scores, torch.tensor([0.95 * q1_mean, 0.9 * q0_mean, 0.7 * q1_mean, 0.6 * q0_mean]))
    assert out.pred_masks.dtype == torch.bool
    q0_mask, q1_mask = [True, True, False, False], [True, False, False, True]
    assert out.pred_masks[:, 0].tolist() == [q1_mask, q0_mask, q1_mask, q0_mask]
    assert out.pred_boxes.tensor.tolist() == [boxes[i].tolist() for i in (1, 0, 1, 0)]


def test_instance_keep_classes_filters_after_topk_and_topk_caps_at_q_times_c():
    class_logits, mask_logits, boxes = _instance_case()
    out = instance_inference(class_logits, mask_logits, boxes, topk=4, keep_classes=[True, False, True])
    assert out.pred_classes.tolist() == [0, 0, 2]  # (q1, class 1) removed; no refill from below the top 4
    assert out.pred_boxes.tensor.tolist() == [boxes[i].tolist() for i in (0, 1, 0)]
    out = instance_inference(class_logits, mask_logits, boxes, topk=100)
    assert len(out) == 6 and out.pred_classes.tolist() == [1, 0, 0, 2, 1, 2]


def test_instance_empty_mask_scores_zero():
    out = instance_inference(logits([[0.9]]), torch.full((1, 2, 2), -3.0), torch.zeros(1, 4))
    assert not out.pred_masks.any()
    assert out.scores.tolist() == [0.0]


def test_part_instance_fusion_rule():
    # K = 3 classes: (object 0, part 1), (object 1, part 2), (object 1, whole object: -1).
    object_logits = logits([[0.8, 0.5], [0.4, 0.9]])
    part_logits = logits([[0.1, 0.5, 0.25], [0.9, 0.2, 0.6]])
    # q0: 0.8 * 0.5 = 0.4, 0.5 * 0.25 = 0.125, 0.5;  q1: 0.4 * 0.2 = 0.08, 0.9 * 0.6 = 0.54, 0.9.
    mask_logits = torch.full((2, 2, 3), 20.0)  # sigmoid rounds to 1: mask mean 6 / (6 + 1e-6)
    boxes = torch.tensor([[0.0, 0.0, 2.0, 1.0], [1.0, 1.0, 3.0, 2.0]])
    out = part_instance_inference(object_logits, part_logits, mask_logits, boxes, [0, 1, 1], [1, 2, -1], topk=6)
    assert out.pred_classes.tolist() == [2, 1, 2, 0, 1, 0]
    mean = 6 / (6 + 1e-6)
    torch.testing.assert_close(out.scores, torch.tensor([0.9, 0.54, 0.5, 0.4, 0.125, 0.08]) * mean)
    assert out.pred_boxes.tensor.tolist() == [boxes[i].tolist() for i in (1, 1, 0, 0, 0, 1)]
    out = part_instance_inference(object_logits, part_logits, mask_logits, boxes, [0, 1, 1], [1, 2, -1], topk=2)
    assert out.pred_classes.tolist() == [2, 1]


def test_part_instance_rejects_bad_maps():
    args = (logits([[0.5, 0.5]]), logits([[0.5, 0.5, 0.5]]), torch.zeros(1, 2, 2), torch.zeros(1, 4))
    with pytest.raises(ValueError, match="class_to_part has index 3"):
        part_instance_inference(*args, [0, 1], [0, 3])
    with pytest.raises(ValueError, match="class_to_object has index -1"):
        part_instance_inference(*args, [-1, 1], [0, 1])
    with pytest.raises(ValueError, match="equal length"):
        part_instance_inference(*args, [0, 1], [0])
    with pytest.raises(ValueError, match="part_logits must be"):
        part_instance_inference(args[0], logits([[0.5], [0.5]]), *args[2:], [0], [0])


# ---------------------------------------------------------------- boxes and errors


def test_to_output_boxes_by_hand():
    boxes = torch.tensor([[0.5, 0.25, 0.25, 0.5], [0.9, 0.9, 0.1, 0.1]])
    out = to_output_boxes(boxes, padded_size=(64, 96), image_size=(48, 80), output_size=(72, 100))
    # Box 0: xyxy (0.375, 0, 0.625, 0.5) -> padded pixels (36, 0, 60, 32) -> x * 100/80, y * 72/48.
    # Box 1 lies in the padding: (0.85, 0.85, 0.95, 0.95) -> (81.6, 54.4, 91.2, 60.8) -> not clipped.
    expected = torch.tensor([[45.0, 0.0, 75.0, 48.0], [102.0, 81.6, 114.0, 91.2]])
    torch.testing.assert_close(out, expected)
    with pytest.raises(ValueError, match="does not fit in padded_size"):
        to_output_boxes(boxes, (64, 96), (65, 80), (72, 100))
    with pytest.raises(ValueError, match="boxes_cxcywh must be"):
        to_output_boxes(boxes[:, :3], (64, 96), (48, 80), (72, 100))


def test_shape_errors_name_the_problem():
    z, m = torch.zeros(3, 2), torch.zeros(3, 4, 5)
    with pytest.raises(ValueError, match="disagree on the number of queries"):
        semantic_inference(z, m[:2])
    with pytest.raises(ValueError, match=r"mask_logits must be \(Q, H, W\)"):
        panoptic_inference(z, m[:, 0], [True, False])
    with pytest.raises(ValueError, match="is_thing must have one flag per class"):
        panoptic_inference(z, m, [True])
    with pytest.raises(ValueError, match="boxes_xyxy must be"):
        instance_inference(z, m, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="keep_classes must have one flag per class"):
        instance_inference(z, m, torch.zeros(3, 4), keep_classes=[True])
    with pytest.raises(ValueError, match="topk must be a positive int"):
        instance_inference(z, m, torch.zeros(3, 4), topk=0)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        semantic_inference(z, m, temperature=0.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_same_results_on_cuda():
    gen = torch.Generator().manual_seed(0)
    z, m = torch.randn(20, 5, generator=gen) * 3, torch.randn(20, 16, 24, generator=gen) * 4
    boxes = torch.rand(20, 4, generator=gen)
    is_thing = [True, True, False, True, False]
    torch.testing.assert_close(semantic_inference(z.cuda(), m.cuda()).cpu(), semantic_inference(z, m))
    seg_gpu, info_gpu = panoptic_inference(z.cuda(), m.cuda(), is_thing, object_mask_threshold=0.5)
    seg_cpu, info_cpu = panoptic_inference(z, m, is_thing, object_mask_threshold=0.5)
    assert seg_gpu.is_cuda and torch.equal(seg_gpu.cpu(), seg_cpu) and info_gpu == info_cpu
    inst_gpu = instance_inference(z.cuda(), m.cuda(), boxes.cuda(), topk=30, keep_classes=is_thing)
    inst_cpu = instance_inference(z, m, boxes, topk=30, keep_classes=is_thing)
    assert torch.equal(inst_gpu.pred_classes.cpu(), inst_cpu.pred_classes)
    torch.testing.assert_close(inst_gpu.scores.cpu(), inst_cpu.scores)
    out = to_output_boxes(boxes.cuda(), (16, 24), (12, 20), (24, 40))
    assert out.is_cuda


# ---------------------------------------------------------------- COCO panoptic round trip

# Dataset category ids are not contiguous: things 1, 3; stuff 7, 12 -> contiguous 0, 1, 2, 3.
CATEGORIES = [
    {"id": 1, "name": "cat", "isthing": 1, "color": [220, 20, 60]},
    {"id": 3, "name": "dog", "isthing": 1, "color": [119, 11, 32]},
    {"id": 7, "name": "grass", "isthing": 0, "color": [0, 142, 0]},
    {"id": 12, "name": "sky", "isthing": 0, "color": [70, 130, 180]},
]
CONTIGUOUS = {c["id"]: i for i, c in enumerate(CATEGORIES)}
IS_THING = [bool(c["isthing"]) for c in CATEGORIES]


def _synthetic_panoptic_set():
    """Two images as (image_id, file stem, (H, W) GT segment-id map, {segment id: dataset category})."""
    seg1 = np.zeros((6, 8), dtype=np.int64)
    seg1[:2] = 41  # sky
    seg1[2:] = 52  # grass
    seg1[3:5, 1:3] = 63  # cat
    seg1[2, 4] = 64  # a second cat, one pixel
    seg1[3:6, 5:8] = 75  # dog
    seg1[5, 0] = 0  # void
    seg2 = np.full((5, 7), 52, dtype=np.int64)
    seg2[1:4, 2:5] = 75
    seg2[0, 6] = 0
    categories = {41: 12, 52: 7, 63: 1, 64: 1, 75: 3}
    return [(1, "img_one", seg1, categories), (2, "img_two", seg2, categories)]


def _write_coco_panoptic(root, images):
    png_dir = root / "panoptic_gt"
    png_dir.mkdir()
    json_images, annotations = [], []
    for image_id, stem, seg, categories in images:
        Image.fromarray(id2rgb(seg.astype(np.uint32))).save(png_dir / f"{stem}.png")
        segments = []
        for segment_id in np.unique(seg):
            if segment_id == 0:
                continue
            ys, xs = np.nonzero(seg == segment_id)
            bbox = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
            segments.append({"id": int(segment_id), "category_id": categories[int(segment_id)],
                             "iscrowd": 0, "area": int(len(xs)), "bbox": bbox})
        json_images.append({"id": image_id, "file_name": f"{stem}.jpg", "height": seg.shape[0], "width": seg.shape[1]})
        annotations.append({"image_id": image_id, "file_name": f"{stem}.png", "segments_info": segments})
    json_path = root / "panoptic_gt.json"
    json_path.write_text(json.dumps({"images": json_images, "annotations": annotations, "categories": CATEGORIES}))
    return json_path, png_dir


def _perfect_outputs(seg, categories, drop_category=None):
    """Confident class and mask logits, one query per GT segment (grass split over two queries), plus
    a low-score query covering everything and a weaker duplicate of one segment."""
    regions = []
    for segment_id, category in categories.items():
        region = seg == segment_id
        if not region.any() or category == drop_category:
            continue
        if category == 7:  # split stuff: the two halves must merge into one segment
            left = np.zeros_like(region)
            left[:, : seg.shape[1] // 2] = True
            regions += [(region & left, category), (region & ~left, category)]
        else:
            regions.append((region, category))
    class_logits = torch.full((len(regions) + 2, len(CATEGORIES)), -BIG)
    mask_logits = torch.full((len(regions) + 2, *seg.shape), -BIG)
    for q, (region, category) in enumerate(regions):
        class_logits[q, CONTIGUOUS[category]] = BIG
        mask_logits[q][torch.from_numpy(region)] = BIG
    mask_logits[-2] = BIG  # class scores all 0.0003: below the object threshold
    class_logits[-1, CONTIGUOUS[regions[0][1]]] = logit(0.3)  # kept, but loses every pixel
    mask_logits[-1] = mask_logits[0]
    return class_logits, mask_logits


def _evaluate(name, images, drop_category=None):
    evaluator = COCOPanopticEvaluator(name)
    evaluator.reset()
    for image_id, stem, seg, categories in images:
        class_logits, mask_logits = _perfect_outputs(seg, categories, drop_category)
        panoptic = panoptic_inference(class_logits, mask_logits, IS_THING)
        evaluator.process([{"file_name": f"/images/{stem}.jpg", "image_id": image_id}], [{"panoptic_seg": panoptic}])
    return evaluator.evaluate()["panoptic_seg"]


def test_coco_panoptic_evaluator_round_trip_gives_pq_100(tmp_path):
    images = _synthetic_panoptic_set()
    json_path, png_dir = _write_coco_panoptic(tmp_path, images)
    name = f"test_postprocess_panoptic_{uuid.uuid4().hex}"
    DatasetCatalog.register(name, lambda: [])
    MetadataCatalog.get(name).set(
        panoptic_json=str(json_path),
        panoptic_root=str(png_dir),
        thing_dataset_id_to_contiguous_id={c: CONTIGUOUS[c] for c in (1, 3)},
        stuff_dataset_id_to_contiguous_id={c: CONTIGUOUS[c] for c in (7, 12)},
        evaluator_type="coco_panoptic_seg",
    )
    try:
        result = _evaluate(name, images)
        for key in ("PQ", "SQ", "RQ", "PQ_th", "PQ_st"):
            assert result[key] == pytest.approx(100.0), (key, result)
        # Sensitivity: without the dog queries, RQ(dog) = 0 on two images: PQ = 3/4 * 100.
        assert _evaluate(name, images, drop_category=3)["PQ"] == pytest.approx(75.0)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
