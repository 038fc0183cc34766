"""The boundary-only binary upsampling equals bilinear x4 + crop + threshold."""
import pytest
import torch
import torch.nn.functional as F

from semantic_sam.predictor.mask_upsampling import upsample_binary_x4


@pytest.mark.parametrize(
    "n, h, w, out_h, out_w, cells",
    [(6, 10, 12, 40, 48, 4), (6, 10, 12, 37, 45, 4), (3, 1, 1, 4, 4, 1), (4, 7, 3, 25, 9, 3), (5, 40, 56, 157, 221, 9)],
)
@pytest.mark.parametrize("max_boundary_fraction", [1.0, 0.0])  # boundary path / plain interpolation
def test_equals_bilinear_threshold(n, h, w, out_h, out_w, cells, max_boundary_fraction):
    g = torch.Generator().manual_seed(n * 100 + h)
    coarse = torch.randn(n, 1, cells, cells, generator=g)
    low = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)[:, 0] * 3
    low[0, 0, 0] = 0.0  # an exact zero logit is background
    ref = F.interpolate(low[:, None], size=(4 * h, 4 * w), mode="bilinear", align_corners=False)[:, 0, :out_h, :out_w]
    out = upsample_binary_x4(low, (out_h, out_w), max_boundary_fraction)
    assert out.shape == (n, out_h, out_w) and out.dtype == torch.bool
    differ = out != (ref > 0)
    assert not (differ & (ref.abs() > 1e-5)).any()
    assert differ.sum() <= 2


def test_constant_and_empty():
    low = torch.full((2, 3, 4), -2.0)
    low[1] = 5.0
    out = upsample_binary_x4(low, (12, 16))
    assert not out[0].any() and out[1].all()
    assert upsample_binary_x4(torch.zeros(0, 3, 4), (10, 10)).shape == (0, 10, 10)
    with pytest.raises(ValueError):
        upsample_binary_x4(low, (13, 16))
