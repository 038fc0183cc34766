"""Point sampling: the uncertainty sampler against detectron2's, mask labels against point_sample."""

import pytest
import torch
from detectron2.projects.point_rend.point_features import get_uncertain_point_coords_with_randomness, point_sample

from semantic_sam.modeling.point_sampling import sample_binary_masks, sample_uncertain_points
from semantic_sam.utils.random_draws import ReplayRandom, TorchRandom


def test_uncertain_points_equal_detectron2_under_the_same_seed():
    logits = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    state = torch.get_rng_state()
    try:
        torch.manual_seed(7)
        expected = get_uncertain_point_coords_with_randomness(logits, lambda x: -x.abs(), 50, 3.0, 0.75)
        torch.manual_seed(7)
        got = sample_uncertain_points(logits, 50, 3.0, 0.75)
    finally:
        torch.set_rng_state(state)
    assert got.shape == (3, 50, 2)
    assert torch.equal(got, expected)


def test_uncertain_points_keep_the_most_uncertain_candidates():
    logits = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    candidates = torch.rand(2, 30, 2, generator=torch.Generator().manual_seed(2))
    fresh = torch.rand(2, 3, 2, generator=torch.Generator().manual_seed(3))
    coords = sample_uncertain_points(logits, 10, 3.0, 0.7, ReplayRandom([candidates, fresh]))
    unc = -point_sample(logits, candidates, align_corners=False)[:, 0].abs()
    for m in range(2):
        top = set(unc[m].topk(7).indices.tolist())
        picked = {int((candidates[m] == c).all(1).nonzero()[0]) for c in coords[m, :7]}
        assert picked == top
    assert torch.equal(coords[:, 7:], fresh)
    with pytest.raises(ValueError, match="oversample_ratio"):
        sample_uncertain_points(logits, 10, 0.5, 0.7, TorchRandom(torch.Generator()))
    with pytest.raises(ValueError, match=r"\(M, 1, h, w\)"):
        sample_uncertain_points(logits[:, 0], 10, 3.0, 0.7)


def test_binary_mask_labels_equal_point_sample_of_float_masks():
    gen = torch.Generator().manual_seed(0)
    masks = torch.rand(4, 13, 9, generator=gen) > 0.5
    inds = torch.tensor([2, 0, 2, 3, 1])
    coords = torch.rand(5, 200, 2, generator=gen)
    coords[0, :4] = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.999, 0.001]])  # borders read zeros outside
    expected = point_sample(masks[inds].float()[:, None], coords, align_corners=False)[:, 0]
    got = sample_binary_masks(masks, inds, coords)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    assert ((got > 0) & (got < 1)).any()  # soft labels at edges
    with pytest.raises(ValueError, match="mask_inds"):
        sample_binary_masks(masks, inds[:3], coords)
