"""The boundary-only binary upsampling equals bilinear x4 + crop + threshold."""
import pytest
import torch
import torch.nn.functional as F

from semantic_sam.predictor.mask_upsampling import _cpu_kernel, upsample_binary_x4

# (max_boundary_fraction, use_kernel): the C++ kernel, the PyTorch boundary path, plain interpolation
PATHS = [
    pytest.param((0.3, True), id="kernel",
                 marks=pytest.mark.skipif(_cpu_kernel() is None, reason="semantic_sam._C not built")),
    pytest.param((1.0, False), id="boundary"),
    pytest.param((0.0, False), id="interpolate"),
]


@pytest.mark.parametrize(
    "n, h, w, out_h, out_w, cells",
    [(6, 10, 12, 40, 48, 4), (6, 10, 12, 37, 45, 4), (3, 1, 1, 4, 4, 1), (4, 7, 3, 25, 9, 3), (5, 40, 56, 157, 221, 9)],
)
@pytest.mark.parametrize("path", PATHS)
def test_equals_bilinear_threshold(n, h, w, out_h, out_w, cells, path):
    max_boundary_fraction, use_kernel = path
    g = torch.Generator().manual_seed(n * 100 + h)
    coarse = torch.randn(n, 1, cells, cells, generator=g)
    low = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)[:, 0] * 3
    low[0, 0, 0] = 0.0  # an exact zero logit is background
    ref = F.interpolate(low[:, None], size=(4 * h, 4 * w), mode="bilinear", align_corners=False)[:, 0, :out_h, :out_w]
    out = upsample_binary_x4(low, (out_h, out_w), max_boundary_fraction, use_kernel=use_kernel)
    assert out.shape == (n, out_h, out_w) and out.dtype == torch.bool
    differ = out != (ref > 0)
    assert not (differ & (ref.abs() > 1e-5)).any()
    assert differ.sum() <= 2


@pytest.mark.parametrize("path", PATHS)
def test_constant_and_empty(path):
    max_boundary_fraction, use_kernel = path
    low = torch.full((2, 3, 4), -2.0)
    low[1] = 5.0
    out = upsample_binary_x4(low, (12, 16), max_boundary_fraction, use_kernel)
    assert not out[0].any() and out[1].all()
    assert upsample_binary_x4(torch.zeros(0, 3, 4), (10, 10), use_kernel=use_kernel).shape == (0, 10, 10)
    with pytest.raises(ValueError):
        upsample_binary_x4(low, (13, 16), use_kernel=use_kernel)


@pytest.mark.skipif(_cpu_kernel() is None, reason="semantic_sam._C not built")
def test_kernel_on_transposed_and_half_inputs():
    g = torch.Generator().manual_seed(3)
    low = F.interpolate(torch.randn(3, 1, 4, 5, generator=g), size=(9, 11), mode="bilinear")[:, 0]
    ref = upsample_binary_x4(low, (36, 44), use_kernel=False)
    lowt = low.transpose(1, 2).contiguous().transpose(1, 2)  # same values, non-contiguous
    assert torch.equal(upsample_binary_x4(lowt, (36, 44), use_kernel=True), ref)
    half = upsample_binary_x4(low.half(), (36, 44), use_kernel=True)
    assert (half != ref).float().mean() < 0.02
