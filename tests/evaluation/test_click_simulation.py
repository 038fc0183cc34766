"""Click simulation: golden kornia clicks, exact EDT clicks, closed form vs iterative kornia, edge cases."""
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import distance_transform_edt

from semantic_sam.evaluation.click_simulation import (
    click_from_mask,
    clicks_from_masks,
    kornia_distance_transform,
    kornia_distance_transform_fast,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GOLDEN = os.path.join(ROOT, "tests", "fixtures", "parity_tiny", "golden.pt")


@pytest.fixture(scope="module")
def golden():
    g = torch.load(GOLDEN, map_location="cpu", weights_only=True)
    return {k: v for k, v in g.items() if k.startswith("eval_full.")}


def _random_masks(gen, n, h, w, thresh=0.55):
    noise = torch.rand(n, 1, h // 4 + 2, w // 4 + 2, generator=gen)
    return F.interpolate(noise, size=(h, w), mode="bilinear", align_corners=False)[:, 0] > thresh


def _full_image_click(dist):
    """Row-major first argmax of a (H, W) map, brute force."""
    best = dist.max()
    ys, xs = np.nonzero(np.asarray(dist) == np.asarray(best))
    return int(xs[0]), int(ys[0])  # np.nonzero is row-major


def test_kornia_clicks_equal_reference_clicks(golden):
    masks = golden["eval_full.gt_masks"][golden["eval_full.click_gt_index"]]
    clicks = clicks_from_masks(masks, "kornia")
    assert clicks.dtype == torch.int64
    assert torch.equal(clicks, golden["eval_full.clicks_xy"])


def test_exact_clicks_equal_documented_edt_clicks(golden):
    # tests/fixtures/parity_tiny/README.md: exact EDT clicks in GT order.
    clicks = clicks_from_masks(golden["eval_full.gt_masks"], "exact")
    assert clicks.tolist() == [[75, 85], [210, 90], [255, 170]]


def test_iterative_kornia_on_golden_masks_matches_closed_form_and_clicks(golden):
    masks = golden["eval_full.gt_masks"]
    sources = ~F.pad(masks, (1, 1, 1, 1), value=False)
    iterative = kornia_distance_transform(sources.float()[:, None])[:, 0]
    fast = torch.stack([kornia_distance_transform_fast(s) for s in sources])
    assert torch.equal(iterative, fast)
    clicks = [_full_image_click(d[1:-1, 1:-1].numpy()) for d in iterative]
    assert clicks == [tuple(c) for c in clicks_from_masks(masks, "kornia").tolist()]


def test_kornia_hand_computed_row():
    # Sources [1, 0, 0] (a 1x3 image, replicate border): pixel 1 is reached in iteration 0
    # and pixel 2 in iteration 1 (offset 1*3//2 = 1), both with the same three left neighbours.
    h = 0.35
    c = -h * math.log(math.exp(-1 / h) + 2 * math.exp(-math.sqrt(2) / h))
    out = kornia_distance_transform(torch.tensor([[[[1.0, 0.0, 0.0]]]]))[0, 0, 0]
    torch.testing.assert_close(out, torch.tensor([0.0, c, 1.0 + c]), atol=1e-6, rtol=0)
    fast = kornia_distance_transform_fast(torch.tensor([[True, False, False]]))[0]
    assert torch.equal(fast, out)


def test_closed_form_equals_iterative_bitwise_on_random_batches():
    gen = torch.Generator().manual_seed(0)
    for _ in range(25):
        h, w = torch.randint(3, 60, (2,), generator=gen).tolist()
        sources = _random_masks(gen, 2, h, w, thresh=0.6)
        sources[:, 0, 0] = True  # at least one source each
        iterative = kornia_distance_transform(sources.float()[:, None])[:, 0]
        fast = torch.stack([kornia_distance_transform_fast(s) for s in sources])
        assert torch.equal(iterative, fast), (h, w)


@pytest.mark.parametrize("method", ["exact", "kornia"])
def test_bounding_box_crop_gives_full_image_clicks(method):
    gen = torch.Generator().manual_seed(1)
    masks = _random_masks(gen, 12, 37, 53)
    masks = masks[masks.flatten(1).any(1)]
    padded = F.pad(masks, (1, 1, 1, 1), value=False)
    for mask, pad in zip(masks, padded):
        if method == "exact":
            dist = distance_transform_edt(pad.numpy())
        else:
            dist = kornia_distance_transform(torch.stack([~pad, ~pad]).float()[:, None])[0, 0].numpy()
        assert click_from_mask(mask, method) == _full_image_click(dist[1:-1, 1:-1])


@pytest.mark.parametrize("method", ["exact", "kornia"])
def test_hand_checked_shapes(method):
    # A 2x4 block: every pixel is 1 px from the boundary. Exact: a 4-way tie, the first
    # (row-major) wins. Kornia's soft-min sees fewer boundary pixels around the two middle
    # ones (3 instead of 5 neighbours), so they are farther; the first of them wins.
    mask = torch.zeros(6, 8, dtype=torch.bool)
    mask[2:4, 3:7] = True
    assert click_from_mask(mask, method) == {"exact": (3, 2), "kornia": (4, 2)}[method]
    # A 5x5 square in the image corner: the image border counts as boundary.
    mask = torch.zeros(9, 9, dtype=torch.bool)
    mask[:5, :5] = True
    assert click_from_mask(mask, method) == (2, 2)
    # The whole 7x9 image: row 3, x in 3..5 are 4 px from the border. Exact: first of the
    # three; kornia: the middle one, which has 6 (not 7) neighbours at chessboard distance 3.
    assert click_from_mask(torch.ones(7, 9, dtype=torch.bool), method) == {"exact": (3, 3), "kornia": (4, 3)}[method]


def test_exact_click_is_a_maximum_of_the_distance_to_the_boundary():
    gen = torch.Generator().manual_seed(2)
    masks = _random_masks(gen, 6, 40, 30)
    masks = masks[masks.flatten(1).any(1)]
    for mask, (x, y) in zip(masks, clicks_from_masks(masks, "exact").tolist()):
        assert mask[y, x]
        dist = distance_transform_edt(np.pad(mask.numpy(), 1))[1:-1, 1:-1]
        assert dist[y, x] == dist.max()


def test_bad_input_errors():
    with pytest.raises(ValueError, match="empty mask: mask 1"):
        clicks_from_masks(torch.stack([torch.ones(4, 4), torch.zeros(4, 4)]).bool())
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        clicks_from_masks(torch.ones(4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="unknown click method 'edt'"):
        clicks_from_masks(torch.ones(1, 4, 4, dtype=torch.bool), "edt")
    assert clicks_from_masks(torch.zeros(0, 4, 4, dtype=torch.bool)).shape == (0, 2)


def test_default_method_is_kornia_everywhere(golden):
    """The reference's clicks by default: the functions, the config and the COCO mapper; "exact" by name."""
    from datasets.coco_interactive_dataset_mapper import CocoInteractiveDatasetMapper
    from semantic_sam.config import load_config

    gt = golden["eval_full.gt_masks"][golden["eval_full.click_gt_index"]]
    assert torch.equal(clicks_from_masks(gt), golden["eval_full.clicks_xy"])  # the reference's own clicks
    assert not torch.equal(clicks_from_masks(gt, "exact"), golden["eval_full.clicks_xy"])
    assert click_from_mask(torch.ones(7, 9, dtype=torch.bool)) == (4, 3)  # exact: (3, 3)

    assert load_config(None).MODEL.DECODER.TEST.CLICK_METHOD == "kornia"
    assert load_config(None, ["MODEL.DECODER.TEST.CLICK_METHOD=exact"]).MODEL.DECODER.TEST.CLICK_METHOD == "exact"
    assert CocoInteractiveDatasetMapper(augmentations=[]).click_method == "kornia"
