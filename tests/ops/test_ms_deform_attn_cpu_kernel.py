"""The C++ CPU kernel (semantic_sam/ops/csrc/ms_deform_attn_cpu.cpp) against the PyTorch path.

Builds the kernel with torch.utils.cpp_extension (about a minute the first time; torch caches it in
$TORCH_EXTENSIONS_DIR), or uses semantic_sam._C when that was installed with it.
"""
from __future__ import annotations

import importlib
import shutil

import pytest
import torch

from semantic_sam.ops import MSDeformAttn, cpu_kernel_available, ms_deform_attn, ms_deform_attn_pytorch

cpu_module = importlib.import_module("semantic_sam.ops.ms_deform_attn_cpu")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None, reason="no C++ compiler"),
]


@pytest.fixture(scope="module")
def kernel():
    return cpu_module.cpu_kernel() or cpu_module.load_cpu_kernel()


@pytest.fixture
def use_kernel(kernel, monkeypatch):
    """Route ms_deform_attn's CPU dispatch through the kernel for one test only."""
    monkeypatch.setattr(cpu_module, "_kernel", kernel)
    assert cpu_kernel_available()
    return kernel


def _problem(dtype, b=2, q=9, n_heads=3, head_dim=5, shapes=((6, 5), (3, 4), (1, 1)), points=2, seed=0,
             margin=0.3):
    g = torch.Generator().manual_seed(seed)
    spatial_shapes = torch.tensor(shapes)
    starts = torch.cat([spatial_shapes.new_zeros(1), (spatial_shapes[:, 0] * spatial_shapes[:, 1]).cumsum(0)[:-1]])
    s = int((spatial_shapes[:, 0] * spatial_shapes[:, 1]).sum())
    value = torch.randn(b, s, n_heads, head_dim, generator=g, dtype=dtype)
    loc = torch.rand(b, q, n_heads, len(shapes), points, 2, generator=g, dtype=dtype) * (1 + 2 * margin) - margin
    weights = torch.rand(b, q, n_heads, len(shapes), points, generator=g, dtype=dtype)
    return value, spatial_shapes, starts, loc, weights


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_forward_and_backward_match_pytorch_path(use_kernel, dtype, tol):
    value, shapes, starts, loc, weights = _problem(dtype)
    leaves_k = [t.clone().requires_grad_() for t in (value, loc, weights)]
    leaves_p = [t.clone().requires_grad_() for t in (value, loc, weights)]
    out_k = ms_deform_attn(leaves_k[0], shapes, starts, leaves_k[1], leaves_k[2])
    out_p = ms_deform_attn_pytorch(leaves_p[0], shapes, starts, leaves_p[1], leaves_p[2])
    torch.testing.assert_close(out_k, out_p, rtol=tol, atol=tol)
    grad = torch.randn(out_p.shape, dtype=dtype, generator=torch.Generator().manual_seed(1))
    out_k.backward(grad)
    out_p.backward(grad)
    for name, a, b in zip(("value", "locations", "weights"), leaves_k, leaves_p):
        torch.testing.assert_close(a.grad, b.grad, rtol=tol * 10, atol=tol * 10, msg=f"gradient of {name}")


def test_gradcheck(use_kernel):
    value, shapes, starts, loc, weights = _problem(torch.float64, b=1, q=3, n_heads=2, head_dim=2, points=2)
    inputs = tuple(t.requires_grad_() for t in (value, loc, weights))
    assert torch.autograd.gradcheck(lambda v, l, w: ms_deform_attn(v, shapes, starts, l, w), inputs)


def test_module_output_matches_pytorch_path(use_kernel):
    torch.manual_seed(0)
    m = MSDeformAttn(d_model=32, num_feature_levels=2, n_heads=4, n_points=3)
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.2)
    shapes = torch.tensor([[8, 6], [4, 3]])
    starts = torch.tensor([0, 48])
    x = torch.randn(2, 60, 32)
    ref = torch.rand(2, 60, 2, 2)
    from semantic_sam.ops import force_pytorch

    with force_pytorch():
        expected = m(x, ref, x, shapes, starts)
    torch.testing.assert_close(m(x, ref, x, shapes, starts), expected, rtol=1e-5, atol=1e-5)


def test_kernel_reports_bad_input(kernel):
    value, shapes, starts, loc, weights = _problem(torch.float32)
    with pytest.raises(RuntimeError, match="reaches past"):
        kernel.ms_deform_attn_cpu_forward(value, shapes, starts + 100, loc, weights, 64)
    with pytest.raises(RuntimeError, match="share a dtype"):
        kernel.ms_deform_attn_cpu_forward(value, shapes, starts, loc.double(), weights, 64)
    with pytest.raises(RuntimeError, match="attn_weight must be"):
        kernel.ms_deform_attn_cpu_forward(value, shapes, starts, loc, weights[..., :1].contiguous(), 64)


def test_empty_level(use_kernel):
    value, shapes, starts, loc, weights = _problem(torch.float64, shapes=((6, 5), (0, 4), (2, 2)))
    torch.testing.assert_close(
        ms_deform_attn(value, shapes, starts, loc, weights),
        ms_deform_attn_pytorch(value, shapes, starts, loc, weights),
    )
