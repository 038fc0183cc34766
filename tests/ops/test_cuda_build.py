"""Build check of the full extension (semantic_sam/ops/csrc, CUDA + CPU) with torch.utils.cpp_extension.

Needs nvcc (CUDA_HOME or /usr/local/cuda) but no GPU: the module is compiled into a temporary folder and
imported (torch's CUDA wheels carry the runtime libraries), its CPU kernel is compared with the PyTorch
path, and, when a GPU is present, so is its CUDA kernel. About 2-4 minutes on 2 cores.
"""
from __future__ import annotations

import glob
import os
import site
import sys

import pytest
import torch

CSRC = os.path.join(os.path.dirname(__file__), "..", "..", "semantic_sam", "ops", "csrc")


def _cuda_home() -> str | None:
    home = os.environ.get("CUDA_HOME") or "/usr/local/cuda"
    return home if os.path.exists(os.path.join(home, "bin", "nvcc")) else None


def _extra_include_dirs() -> list[str]:
    # pip's CUDA wheels ship headers (cusparse.h, cublas) that a bare toolkit may lack
    dirs = [os.path.abspath(CSRC)]
    for sp in site.getsitepackages():
        dirs += glob.glob(os.path.join(sp, "nvidia", "*", "include"))
    return dirs


@pytest.mark.slow
@pytest.mark.skipif(_cuda_home() is None, reason="nvcc not found (set CUDA_HOME)")
@pytest.mark.skipif(torch.version.cuda is None, reason="this torch build has no CUDA support")
def test_cuda_extension_compiles(tmp_path, monkeypatch):
    from torch.utils import cpp_extension

    cuda_home = _cuda_home()
    monkeypatch.setenv("CUDA_HOME", cuda_home)
    monkeypatch.setattr(cpp_extension, "CUDA_HOME", cuda_home)
    if not os.environ.get("TORCH_CUDA_ARCH_LIST"):
        monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "8.0")
    monkeypatch.setenv("MAX_JOBS", os.environ.get("MAX_JOBS", "2"))
    sources = sorted(glob.glob(os.path.join(CSRC, "*.cpp")) + glob.glob(os.path.join(CSRC, "cuda", "*.cu")))
    assert any(s.endswith(".cu") for s in sources), "no CUDA sources under semantic_sam/ops/csrc/cuda"
    build_dir = tmp_path / "build"
    build_dir.mkdir()
    module = cpp_extension.load(
        name="semantic_sam_C_build_test",
        sources=sources,
        extra_include_paths=_extra_include_dirs(),
        extra_cflags=["-O2", "-DWITH_CUDA"],
        extra_cuda_cflags=[
            "-O2",
            "-DCUDA_HAS_FP16=1",
            "-D__CUDA_NO_HALF_OPERATORS__",
            "-D__CUDA_NO_HALF_CONVERSIONS__",
            "-D__CUDA_NO_HALF2_OPERATORS__",
        ],
        build_directory=str(build_dir),
        with_cuda=True,
        verbose=False,
    )
    assert glob.glob(str(build_dir / "*.so")), "no shared object was produced"
    assert module.with_cuda()
    # the same module serves CPU tensors through its C++ CPU kernel
    _check_against_pytorch(module, torch.device("cpu"))
    if torch.cuda.is_available():
        _check_against_pytorch(module, torch.device("cuda"))


def _check_against_pytorch(module, device: torch.device) -> None:
    from semantic_sam.ops import ms_deform_attn_pytorch

    g = torch.Generator().manual_seed(0)
    shapes = torch.tensor([[6, 5], [3, 4], [1, 1]])
    starts = torch.cat([shapes.new_zeros(1), (shapes[:, 0] * shapes[:, 1]).cumsum(0)[:-1]])
    s = int((shapes[:, 0] * shapes[:, 1]).sum())
    value = torch.randn(2, s, 2, 8, generator=g, dtype=torch.float64)
    loc = torch.rand(2, 7, 2, 3, 2, 2, generator=g, dtype=torch.float64) * 1.4 - 0.2
    weights = torch.rand(2, 7, 2, 3, 2, generator=g, dtype=torch.float64)
    expected = ms_deform_attn_pytorch(value, shapes, starts, loc, weights)
    inputs = [t.to(device) for t in (value, shapes, starts, loc, weights)]
    got = module.ms_deform_attn_forward(*inputs, 64).cpu()
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    grad = torch.randn(expected.shape, generator=g, dtype=torch.float64)
    grads = module.ms_deform_attn_backward(*inputs, grad.to(device), 64)
    leaves = [t.clone().requires_grad_() for t in (value, loc, weights)]
    ms_deform_attn_pytorch(leaves[0], shapes, starts, leaves[1], leaves[2]).backward(grad)
    for name, got_grad, leaf in zip(("value", "locations", "weights"), grads, leaves):
        torch.testing.assert_close(got_grad.cpu(), leaf.grad, rtol=1e-8, atol=1e-8, msg=f"grad of {name}")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v", "-m", "slow"]))
