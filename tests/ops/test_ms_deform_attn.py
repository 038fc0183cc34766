"""Multi-scale deformable attention: PyTorch path vs a brute-force loop, gradients, module, dispatch."""
from __future__ import annotations

import importlib
import math

import pytest
import torch

from semantic_sam.ops import MSDeformAttn, force_pytorch, ms_deform_attn, ms_deform_attn_pytorch
from tests.fixture_files import reference_keys

# the package re-exports the function ``ms_deform_attn`` under the submodule's name: fetch the module itself
msda_module = importlib.import_module("semantic_sam.ops.ms_deform_attn")


def _feature_level_start_index(shapes: torch.Tensor) -> torch.Tensor:
    sizes = shapes[:, 0] * shapes[:, 1]
    return torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])


def _random_problem(b=2, q=5, n_heads=2, head_dim=3, shapes=((4, 6), (3, 2), (1, 1)), points=2,
                    dtype=torch.float64, seed=0, margin=0.2):
    g = torch.Generator().manual_seed(seed)
    spatial_shapes = torch.tensor(shapes, dtype=torch.long)
    s = int((spatial_shapes[:, 0] * spatial_shapes[:, 1]).sum())
    num_feature_levels = len(shapes)
    value = torch.randn(b, s, n_heads, head_dim, generator=g, dtype=dtype)
    # some locations fall outside [0, 1] to exercise the zero padding
    locations = torch.rand(b, q, n_heads, num_feature_levels, points, 2, generator=g, dtype=dtype)
    locations = locations * (1 + 2 * margin) - margin
    weights = torch.rand(b, q, n_heads, num_feature_levels, points, generator=g, dtype=dtype)
    return value, spatial_shapes, _feature_level_start_index(spatial_shapes), locations, weights


def _naive(value, spatial_shapes, locations, weights):
    """Per-sample loop: bilinear interpolation of pixel centres, zero outside, align_corners=False."""
    b, _, n_heads, head_dim = value.shape
    _, q, _, num_feature_levels, points, _ = locations.shape
    out = torch.zeros(b, q, n_heads, head_dim, dtype=value.dtype)
    starts = _feature_level_start_index(spatial_shapes).tolist()
    for bi in range(b):
        for qi in range(q):
            for h in range(n_heads):
                for lvl in range(num_feature_levels):
                    height, width = spatial_shapes[lvl].tolist()
                    for p in range(points):
                        # pixel (i, j) covers [j, j+1) x [i, i+1) in units of the level; its centre is j + 0.5
                        x = locations[bi, qi, h, lvl, p, 0].item() * width - 0.5
                        y = locations[bi, qi, h, lvl, p, 1].item() * height - 0.5
                        x0, y0 = math.floor(x), math.floor(y)
                        acc = torch.zeros(head_dim, dtype=value.dtype)
                        for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
                            for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
                                if 0 <= yy < height and 0 <= xx < width:
                                    acc += wy * wx * value[bi, starts[lvl] + yy * width + xx, h]
                        out[bi, qi, h] += weights[bi, qi, h, lvl, p] * acc
    return out.reshape(b, q, n_heads * head_dim)


# ------------------------------------------------------------------------------------------ op
def test_pytorch_path_matches_brute_force():
    value, shapes, starts, locations, weights = _random_problem()
    expected = _naive(value, shapes, locations, weights)
    got = ms_deform_attn_pytorch(value, shapes, starts, locations, weights)
    assert got.shape == (2, 5, 6)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_hand_computed_single_sample():
    # 2x2 level, value = pixel index; sampling the exact centre of the image averages all four pixels,
    # a pixel centre returns that pixel, and a point half a pixel outside the image blends with zero.
    value = torch.arange(4, dtype=torch.float64).view(1, 4, 1, 1)
    shapes = torch.tensor([[2, 2]])
    starts = torch.tensor([0])
    locations = torch.tensor([[0.5, 0.5], [0.75, 0.25], [1.0, 0.25]], dtype=torch.float64).view(1, 3, 1, 1, 1, 2)
    weights = torch.ones(1, 3, 1, 1, 1, dtype=torch.float64)
    out = ms_deform_attn_pytorch(value, shapes, starts, locations, weights).flatten()
    # (1.0, 0.25) -> pixel coords x = 1.5, y = 0: half of pixel (0, 1) = 1, half of zero padding
    torch.testing.assert_close(out, torch.tensor([1.5, 1.0, 0.5], dtype=torch.float64))


def test_dispatch_matches_pytorch_path_float32():
    value, shapes, starts, locations, weights = _random_problem(dtype=torch.float32, q=7, seed=3)
    expected = ms_deform_attn_pytorch(value, shapes, starts, locations, weights)
    torch.testing.assert_close(ms_deform_attn(value, shapes, starts, locations, weights), expected,
                               rtol=1e-5, atol=1e-5)


def test_gradcheck_float64():
    value, shapes, starts, locations, weights = _random_problem(b=1, q=2, n_heads=2, head_dim=2,
                                                                shapes=((3, 4), (2, 2)), points=2, seed=1)
    value.requires_grad_()
    locations.requires_grad_()
    weights.requires_grad_()

    def fn(v, loc, w):
        return ms_deform_attn_pytorch(v, shapes, starts, loc, w)

    assert torch.autograd.gradcheck(fn, (value, locations, weights), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda v, s, i, l, w: (v[0], s, i, l, w), "value must be"),
        (lambda v, s, i, l, w: (v, s[:, :1], i, l, w), "spatial_shapes must be"),
        (lambda v, s, i, l, w: (v, s.float(), i, l, w), "integer"),
        (lambda v, s, i, l, w: (v, s, i[:1], l, w), "level_start_index"),
        (lambda v, s, i, l, w: (v, s, i, l[..., :1], w), "sampling_locations must be"),
        (lambda v, s, i, l, w: (v, s, i, l[:, :, :1], w[:, :, :1]), "does not match"),
        (lambda v, s, i, l, w: (v, s, i, l, w[..., :1]), "attention_weights must be"),
        (lambda v, s, i, l, w: (v[:, 1:], s, i, l, w), "positions"),
    ],
)
def test_op_rejects_bad_shapes(mutate, message):
    args = mutate(*_random_problem(dtype=torch.float32))
    with pytest.raises((ValueError, TypeError), match=message):
        ms_deform_attn(*args)


# ------------------------------------------------------------------------------------------ dispatch
class _Boom:
    """Stands in for a compiled module; any call means the dispatcher used it."""

    def __getattr__(self, name):
        def fail(*args, **kwargs):
            raise RuntimeError(f"kernel entry point {name} was called")

        return fail


def test_cpu_tensors_never_call_the_cuda_extension(monkeypatch):
    monkeypatch.setattr(msda_module, "_extension", lambda: _Boom())
    monkeypatch.setattr(msda_module, "_cpu_binding", lambda: None)
    value, shapes, starts, locations, weights = _random_problem(dtype=torch.float32)
    out = ms_deform_attn(value, shapes, starts, locations, weights)
    torch.testing.assert_close(out, ms_deform_attn_pytorch(value, shapes, starts, locations, weights))


def test_kernel_errors_propagate(monkeypatch):
    boom = _Boom()
    monkeypatch.setattr(msda_module, "_cpu_binding",
                        lambda: msda_module._KernelBinding(boom.forward, boom.backward))
    problem = _random_problem(dtype=torch.float32)
    with pytest.raises(RuntimeError, match="was called"):
        ms_deform_attn(*problem)
    with force_pytorch():  # the escape hatch bypasses every kernel
        ms_deform_attn(*problem)


def test_package_imports_without_extension():
    try:
        importlib.import_module("semantic_sam._C")
    except ImportError:
        pass  # expected here; the import above of semantic_sam.ops already succeeded
    assert isinstance(msda_module.cuda_kernel_available(), bool)


# ------------------------------------------------------------------------------------------ module
def _module_inputs(b=2, q=6, d=32, shapes=((6, 8), (3, 4)), ref_dim=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    spatial_shapes = torch.tensor(shapes)
    s = int((spatial_shapes[:, 0] * spatial_shapes[:, 1]).sum())
    query = torch.randn(b, q, d, generator=g)
    ref = torch.rand(b, q, len(shapes), ref_dim, generator=g)
    flat = torch.randn(b, s, d, generator=g)
    return query, ref, flat, spatial_shapes, _feature_level_start_index(spatial_shapes)


def test_module_parameter_names_and_shapes_match_reference():
    m = MSDeformAttn(256, 4, 8, 4)
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes == {
        "sampling_offsets.weight": (256, 256), "sampling_offsets.bias": (256,),
        "attention_weights.weight": (128, 256), "attention_weights.bias": (128,),
        "value_proj.weight": (256, 256), "value_proj.bias": (256,),
        "output_proj.weight": (256, 256), "output_proj.bias": (256,),
    }
    # the golden key list names the same four sub-layers under each self_attn / cross_attn
    prefix = "model.sem_seg_head.pixel_decoder.transformer.encoder.layers.0.self_attn."
    assert reference_keys("T", prefix) == shapes


def test_module_init():
    m = MSDeformAttn(d_model=64, num_feature_levels=2, n_heads=4, n_points=3)
    assert torch.all(m.sampling_offsets.weight == 0)
    assert torch.all(m.attention_weights.weight == 0) and torch.all(m.attention_weights.bias == 0)
    assert torch.all(m.value_proj.bias == 0) and torch.all(m.output_proj.bias == 0)
    bias = m.sampling_offsets.bias.view(4, 2, 3, 2)
    # heads at 0, 90, 180, 270 degrees; point i is (i + 1) unit steps away, on every level
    directions = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    for h in range(4):
        for lvl in range(2):
            for p in range(3):
                torch.testing.assert_close(bias[h, lvl, p], directions[h] * (p + 1), atol=1e-6, rtol=0)
    # 8 heads: diagonal directions are normalized by their max-abs component -> (1, 1)
    bias8 = MSDeformAttn(64, 1, 8, 1).sampling_offsets.bias.view(8, 2)
    torch.testing.assert_close(bias8[1], torch.tensor([1.0, 1.0]))
    # xavier-uniform bound for a square 64x64 weight
    bound = math.sqrt(6.0 / 128)
    assert m.value_proj.weight.abs().max() <= bound and m.value_proj.weight.std() > bound / 3


def test_module_forward_matches_manual_composition():
    torch.manual_seed(0)
    m = MSDeformAttn(d_model=32, num_feature_levels=2, n_heads=4, n_points=3)
    for p in m.parameters():  # break the symmetric init so every path carries signal
        torch.nn.init.normal_(p, std=0.1)
    query, ref, flat, shapes, starts = _module_inputs()
    out = m(query, ref, flat, shapes, starts)
    assert out.shape == (2, 6, 32)

    value = m.value_proj(flat).view(2, -1, 4, 8)
    offsets = m.sampling_offsets(query).view(2, 6, 4, 2, 3, 2)
    weights = m.attention_weights(query).view(2, 6, 4, 6).softmax(-1).view(2, 6, 4, 2, 3)
    normalizer = torch.tensor([[8.0, 6.0], [4.0, 3.0]])  # (W, H) per feature level
    locations = ref[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
    expected = m.output_proj(_naive(value.double(), shapes, locations.double(), weights.double()).float())
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


def test_module_box_reference_points():
    torch.manual_seed(1)
    m = MSDeformAttn(d_model=16, num_feature_levels=2, n_heads=2, n_points=2)
    query, ref, flat, shapes, starts = _module_inputs(d=16, ref_dim=4)
    captured = {}

    def spy(value, spatial_shapes, feature_level_start_index, locations, weights, im2col_step=128):
        captured["locations"] = locations
        return ms_deform_attn_pytorch(value, spatial_shapes, feature_level_start_index, locations, weights)

    original = msda_module.ms_deform_attn
    msda_module.ms_deform_attn = spy
    try:
        m(query, ref, flat, shapes, starts)
    finally:
        msda_module.ms_deform_attn = original
    offsets = m.sampling_offsets(query).view(2, 6, 2, 2, 2, 2)
    expected = ref[:, :, None, :, None, :2] + offsets / 2 * ref[:, :, None, :, None, 2:] * 0.5
    torch.testing.assert_close(captured["locations"], expected)


def test_module_padding_mask_zeroes_values():
    torch.manual_seed(2)
    m = MSDeformAttn(d_model=16, num_feature_levels=2, n_heads=2, n_points=2)
    query, ref, flat, shapes, starts = _module_inputs(d=16)
    mask = torch.zeros(2, flat.shape[1], dtype=torch.bool)
    mask[:, 48:] = True  # the whole second level is padding
    out_masked = m(query, ref, flat, shapes, starts, mask)
    # equivalent: a value_proj output of exactly zero on those tokens
    flat2 = flat.clone()
    with torch.no_grad():
        w, bias = m.value_proj.weight, m.value_proj.bias
        flat2[:, 48:] = torch.linalg.lstsq(w, -bias[:, None]).solution.T
    out_zero = m(query, ref, flat2, shapes, starts)
    torch.testing.assert_close(out_masked, out_zero, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(out_masked, m(query, ref, flat, shapes, starts))


def test_module_gradients_flow():
    m = MSDeformAttn(d_model=16, num_feature_levels=2, n_heads=2, n_points=2)
    query, ref, flat, shapes, starts = _module_inputs(d=16)
    query.requires_grad_()
    m(query, ref, flat, shapes, starts).sum().backward()
    assert query.grad is not None and torch.isfinite(query.grad).all()
    assert all(p.grad is not None for p in m.parameters())


def test_module_rejects_bad_configuration_and_inputs():
    with pytest.raises(ValueError, match="divisible by n_heads"):
        MSDeformAttn(d_model=30, n_heads=8)
    with pytest.raises(ValueError, match="n_points"):
        MSDeformAttn(d_model=16, n_heads=2, n_points=0)
    m = MSDeformAttn(d_model=16, num_feature_levels=2, n_heads=2, n_points=2)
    query, ref, flat, shapes, starts = _module_inputs(d=16)
    with pytest.raises(ValueError, match="query must be"):
        m(query[..., :8], ref, flat, shapes, starts)
    with pytest.raises(ValueError, match="reference_points must be"):
        m(query, ref[..., :1], flat, shapes, starts)
    with pytest.raises(ValueError, match="input_spatial_shapes must be"):
        m(query, ref, flat, shapes[:1], starts[:1])
    with pytest.raises(ValueError, match="positions"):
        m(query, ref, flat[:, 1:], shapes, starts)
    with pytest.raises(ValueError, match="input_padding_mask"):
        m(query, ref, flat, shapes, starts, torch.zeros(2, 3, dtype=torch.bool))


# ------------------------------------------------------------------------------------------ sparse path
sparse_module = importlib.import_module("semantic_sam.ops.ms_deform_attn_sparse")


@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_sparse_path_matches_brute_force(monkeypatch, index_dtype):
    monkeypatch.setattr(sparse_module, "_index_dtype", lambda *args: index_dtype)
    value, shapes, starts, locations, weights = _random_problem(margin=0.6, seed=4)
    expected = _naive(value, shapes, locations, weights)
    got = sparse_module.ms_deform_attn_sparse(value, shapes, starts, locations, weights)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_sparse_path_chunks_queries(monkeypatch):
    value, shapes, starts, locations, weights = _random_problem(q=11, dtype=torch.float32, seed=5)
    whole = sparse_module.ms_deform_attn_sparse(value, shapes, starts, locations, weights)
    monkeypatch.setattr(sparse_module, "_MAX_NNZ_PER_BLOCK", 2 * 2 * 3 * 2 * 4 * 3)  # 3 queries per block
    chunked = sparse_module.ms_deform_attn_sparse(value, shapes, starts, locations, weights)
    torch.testing.assert_close(chunked, whole)
    torch.testing.assert_close(whole, ms_deform_attn_pytorch(value, shapes, starts, locations, weights),
                               rtol=1e-5, atol=1e-6)


def test_sparse_path_far_and_nan_locations_read_nothing():
    value, shapes, starts, locations, weights = _random_problem(dtype=torch.float32, seed=6)
    locations[0, 0] = float("nan")
    locations[0, 1] = 1e9
    locations[0, 2] = -1e9
    out = sparse_module.ms_deform_attn_sparse(value, shapes, starts, locations, weights)
    assert torch.all(out[0, :3] == 0)
    torch.testing.assert_close(out[0, 3:], ms_deform_attn_pytorch(value, shapes, starts, locations, weights)[0, 3:])


def test_cpu_dispatch_uses_sparse_path_only_without_gradients(monkeypatch):
    calls = []
    real = msda_module.ms_deform_attn_sparse
    monkeypatch.setattr(msda_module, "ms_deform_attn_sparse", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setattr(msda_module, "_cpu_binding", lambda: None)
    value, shapes, starts, locations, weights = _random_problem(dtype=torch.float32)
    ms_deform_attn(value, shapes, starts, locations, weights)
    assert len(calls) == 1
    locations.requires_grad_()
    out = ms_deform_attn(value, shapes, starts, locations, weights)
    assert len(calls) == 1 and out.requires_grad  # the differentiable grid_sample path ran
    with torch.no_grad():
        ms_deform_attn(value, shapes, starts, locations, weights)
    assert len(calls) == 2
    with force_pytorch():
        ms_deform_attn(value.detach(), shapes, starts, locations.detach(), weights)
    assert len(calls) == 2


# ------------------------------------------------------------------------------------------ CUDA
requires_cuda_kernel = pytest.mark.skipif(
    not msda_module.cuda_kernel_available(), reason="needs a GPU and semantic_sam._C built with CUDA"
)


@requires_cuda_kernel
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_cuda_kernel_matches_pytorch_path(dtype, tol):
    problem = _random_problem(dtype=dtype, b=3, q=17, seed=7)
    leaves_cpu = [problem[0], problem[3], problem[4]]
    leaves_cpu = [t.clone().requires_grad_() for t in leaves_cpu]
    leaves_gpu = [t.detach().cuda().requires_grad_() for t in leaves_cpu]
    shapes, starts = problem[1], problem[2]
    expected = ms_deform_attn_pytorch(leaves_cpu[0], shapes, starts, leaves_cpu[1], leaves_cpu[2])
    got = ms_deform_attn(leaves_gpu[0], shapes.cuda(), starts.cuda(), leaves_gpu[1], leaves_gpu[2], im2col_step=2)
    torch.testing.assert_close(got.cpu(), expected.detach(), rtol=tol, atol=tol)
    grad = torch.randn_like(expected)
    expected.backward(grad)
    got.backward(grad.cuda())
    for name, a, b in zip(("value", "locations", "weights"), leaves_gpu, leaves_cpu):
        torch.testing.assert_close(a.grad.cpu(), b.grad, rtol=tol * 10, atol=tol * 10, msg=f"gradient of {name}")


@requires_cuda_kernel
def test_cuda_kernel_gradcheck():
    value, shapes, starts, loc, weights = _random_problem(b=1, q=2, n_heads=2, head_dim=2, shapes=((3, 4), (2, 2)))
    inputs = tuple(t.cuda().requires_grad_() for t in (value, loc, weights))
    shapes, starts = shapes.cuda(), starts.cuda()
    assert torch.autograd.gradcheck(lambda v, l, w: ms_deform_attn(v, shapes, starts, l, w), inputs)


@requires_cuda_kernel
def test_cuda_kernel_half_precision_runs():
    value, shapes, starts, loc, weights = _random_problem(dtype=torch.float32, seed=8)
    expected = ms_deform_attn_pytorch(value, shapes, starts, loc, weights)
    got = ms_deform_attn(value.cuda().half(), shapes.cuda(), starts.cuda(), loc.cuda().half(), weights.cuda().half())
    assert got.dtype == torch.float16
    torch.testing.assert_close(got.float().cpu(), expected, rtol=1e-2, atol=1e-2)


def test_module_attend_on_projected_value_equals_forward():
    torch.manual_seed(3)
    m = MSDeformAttn(d_model=16, num_feature_levels=2, n_heads=2, n_points=2)
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.2)
    query, ref, flat, shapes, starts = _module_inputs(d=16, ref_dim=4)
    mask = torch.rand(2, flat.shape[1]) > 0.7
    value = m.project_value(flat, mask)
    torch.testing.assert_close(m.attend(query, ref, value, shapes, starts), m(query, ref, flat, shapes, starts, mask))


def test_empty_level_contributes_nothing():
    # a zero-sized last level (start == S) must neither crash nor read past the end of value
    value, shapes, starts, locations, weights = _random_problem(shapes=((4, 6), (3, 2), (0, 3)), seed=9)
    expected = _naive(value, shapes, locations, weights)
    got = sparse_module.ms_deform_attn_sparse(value, shapes, starts, locations, weights)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_pytorch_path_skips_empty_level():
    value, shapes, starts, locations, weights = _random_problem(shapes=((4, 6), (0, 2), (3, 2)), seed=10)
    torch.testing.assert_close(ms_deform_attn_pytorch(value, shapes, starts, locations, weights),
                               _naive(value, shapes, locations, weights), rtol=1e-10, atol=1e-10)
