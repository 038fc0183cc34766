"""Mask, RLE, grid and crop utilities against hand-computed values and brute force."""
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from semantic_sam.predictor.amg_utils import (
    MaskData,
    area_from_rle,
    batch_iterator,
    batched_mask_to_box,
    box_xyxy_to_xywh,
    build_all_layer_point_grids,
    build_point_grid,
    calculate_stability_score,
    coco_rle_to_mask,
    generate_crop_boxes,
    is_box_near_crop_edge,
    masks_to_coco_rle,
    remove_small_regions,
    rle_to_uncompressed,
    uncompressed_rle_to_coco,
    uncrop_masks,
)


def test_point_grid_cell_centres():
    np.testing.assert_allclose(build_point_grid(2), [[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]])
    grids = build_all_layer_point_grids(8, 2, 2)
    assert [len(g) for g in grids] == [64, 16, 4]


def test_crop_boxes_hand_computed():
    boxes, layers = generate_crop_boxes((100, 200), 1, 512 / 1500)
    # overlap = int(0.3413 * 100) = 34, crop 117 x 67, starts x {0, 83}, y {0, 33}
    assert boxes == [[0, 0, 200, 100], [0, 0, 117, 67], [0, 33, 117, 100], [83, 0, 200, 67], [83, 33, 200, 100]]
    assert layers == [0, 1, 1, 1, 1]
    boxes, layers = generate_crop_boxes((64, 64), 2, 0.25)
    assert layers.count(2) == 16 and len(boxes) == 21
    assert all(0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64 for x0, y0, x1, y1 in boxes)


def test_stability_score_hand():
    logits = torch.tensor([[2.0, 0.5, -0.5, -2.0], [3.0, 3.0, 3.0, 3.0], [-5.0, -5.0, -5.0, -5.0]])
    s = calculate_stability_score(logits, 0.0, 1.0)
    torch.testing.assert_close(s, torch.tensor([1 / 3, 1.0, 0.0]))


def test_batched_mask_to_box_brute_force():
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(5, 2, 13, 17, generator=g) > 0.93
    masks[0, 0] = False
    boxes = batched_mask_to_box(masks)
    assert boxes.shape == (5, 2, 4)
    for i in range(5):
        for j in range(2):
            ys, xs = np.nonzero(masks[i, j].numpy())
            want = [0, 0, 0, 0] if len(xs) == 0 else [xs.min(), ys.min(), xs.max(), ys.max()]
            assert boxes[i, j].tolist() == want
    assert box_xyxy_to_xywh(torch.tensor([2, 3, 10, 7])).tolist() == [2, 3, 8, 4]


def test_rle_round_trips():
    g = np.random.default_rng(0)
    masks = g.random((4, 23, 31)) > 0.6
    masks[1] = False
    masks[2] = True
    rles = masks_to_coco_rle(masks)
    for m, r in zip(masks, rles):
        assert isinstance(r["counts"], str) and r["size"] == [23, 31]
        direct = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        assert r["counts"].encode() == direct["counts"]
        np.testing.assert_array_equal(coco_rle_to_mask(r), m)
        np.testing.assert_array_equal(mask_utils.decode({"size": r["size"], "counts": r["counts"]}).astype(bool), m)
        assert area_from_rle(r) == m.sum()
        unc = rle_to_uncompressed(r)
        assert sum(unc["counts"]) == m.size and area_from_rle(unc) == m.sum()
        np.testing.assert_array_equal(coco_rle_to_mask(uncompressed_rle_to_coco(unc)), m)
    assert rle_to_uncompressed(rles[2])["counts"][0] == 0  # starts with an empty run of zeros
    assert masks_to_coco_rle(np.zeros((0, 5, 5), bool)) == []


def test_remove_small_regions_hand():
    m = np.zeros((20, 20), bool)
    m[2:12, 2:12] = True
    m[5:7, 5:7] = False  # 4-pixel hole
    m[16:18, 16:18] = True  # 4-pixel island
    filled, changed = remove_small_regions(m, 5, "holes")
    assert changed and filled[5:7, 5:7].all() and filled.sum() == m.sum() + 4
    cleaned, changed = remove_small_regions(m, 5, "islands")
    assert changed and not cleaned[16:18, 16:18].any() and cleaned.sum() == m.sum() - 4
    same, changed = remove_small_regions(m, 4, "islands")
    assert not changed and (same == m).all()
    # every island small: the largest one stays
    tiny = np.zeros((10, 10), bool)
    tiny[1, 1] = True
    tiny[5:7, 5] = True
    kept, _ = remove_small_regions(tiny, 100, "islands")
    assert kept.sum() == 2 and kept[5:7, 5].all()


def test_crop_edge_and_uncrop():
    boxes = torch.tensor([[0, 0, 10, 10], [80, 40, 99, 60], [30, 30, 40, 40]])
    near = is_box_near_crop_edge(boxes, [0, 0, 100, 100], [0, 0, 200, 100])
    assert near.tolist() == [False, True, False]  # x1 = 99 is near the crop edge 100, not an image edge
    masks = torch.ones(2, 3, 4, dtype=torch.bool)
    out = uncrop_masks(masks, [5, 2, 9, 5], 10, 12)
    assert out.shape == (2, 10, 12) and out.sum() == 24 and out[:, 2:5, 5:9].all()


def test_mask_data_filter_cat():
    d = MaskData(a=torch.arange(4), b=np.arange(4) * 2, c=["w", "x", "y", "z"])
    d.filter(torch.tensor([True, False, True, False]))
    assert d["a"].tolist() == [0, 2] and d["b"].tolist() == [0, 4] and d["c"] == ["w", "y"]
    d.cat(MaskData(a=torch.tensor([9]), b=np.array([9]), c=["q"]))
    assert len(d) == 3 and d["c"] == ["w", "y", "q"]
    d.filter([2])
    assert d["a"].tolist() == [9]
    with pytest.raises(ValueError):
        list(batch_iterator(0, [1, 2]))
    assert [b[0] for b in batch_iterator(2, [1, 2, 3])] == [[1, 2], [3]]


@pytest.mark.parametrize("mode", ["holes", "islands"])
def test_remove_small_regions_box_path_equals_whole_image(mode):
    """The bounding-box shortcut gives exactly the whole-image result (blobs near edges, thin strips)."""
    from scipy import ndimage

    from semantic_sam.predictor.amg_utils import _small_regions_full

    rng = np.random.default_rng(1)
    for trial in range(60):
        h, w = rng.integers(8, 40, 2)
        noise = ndimage.gaussian_filter(rng.random((h, w)), sigma=rng.uniform(0.7, 2.0))
        mask = noise > np.quantile(noise, rng.uniform(0.3, 0.9))
        if trial % 3 == 0:  # a box touching the image border on some sides
            mask[: rng.integers(0, 3)] = False
            mask[:, -1] |= rng.random(h) < 0.5
        for thresh in (1, 3, 8, 30, 200):
            got, changed = remove_small_regions(mask, thresh, mode)
            want, want_changed = _small_regions_full(mask, thresh, mode)
            np.testing.assert_array_equal(got, want, err_msg=f"trial {trial} thresh {thresh}")
            assert changed == want_changed


def test_masks_to_coco_rle_transposed_and_boxes():
    from semantic_sam.predictor.amg_utils import boxes_from_rles

    g = np.random.default_rng(3)
    masks = g.random((3, 9, 14)) > 0.7
    masks[1] = False
    a = masks_to_coco_rle(masks)
    b = masks_to_coco_rle(np.ascontiguousarray(masks.transpose(0, 2, 1)), transposed=True)
    assert a == b
    np.testing.assert_array_equal(boxes_from_rles(a).numpy(), batched_mask_to_box(torch.from_numpy(masks)).numpy())
