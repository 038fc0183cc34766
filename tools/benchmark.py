"""CPU timings of the expensive parts of Semantic-SAM, as a table (and JSON).

Usage::

    python tools/benchmark.py                       # every row, default threads
    python tools/benchmark.py --rows ms_deform_attn --threads 2 --repeat 5 --json bench.json
    python tools/benchmark.py --build-cpu-kernel    # JIT-build the C++ CPU kernel first (~1 min once)

Each row is a function registered with :func:`row`; it returns one or more :class:`Timing` lines
(variants of the same work, e.g. the reference-style algorithm and ours, measured in the same run).
Rows that cannot run here (no model yet, missing dependency) report ``skipped`` with the reason.
To add a row, write ``@row("name", "what it measures") def bench_name(args) -> list[Timing]`` below.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import torch
import torch.nn.functional as F

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclass
class Timing:
    """One line of the table: wall-clock and process CPU seconds of ``repeat`` runs of one variant.

    CPU seconds (summed over threads) are steadier than wall-clock time on a shared machine.
    """

    row: str
    variant: str
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)
    note: str = ""
    skipped: Optional[str] = None

    @property
    def median(self) -> float:
        return statistics.median(self.seconds) if self.seconds else float("nan")

    @property
    def best(self) -> float:
        return min(self.seconds) if self.seconds else float("nan")

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu_seconds) if self.cpu_seconds else float("nan")


@dataclass
class BenchRow:
    name: str
    description: str
    fn: Callable[[argparse.Namespace], list[Timing]]


ROWS: dict[str, BenchRow] = {}


def row(name: str, description: str):
    """Decorator: register a benchmark row ``fn(args) -> list[Timing]`` under ``name``."""

    def deco(fn):
        ROWS[name] = BenchRow(name, description, fn)
        return fn

    return deco


def measure(
    row_name: str, variant: str, fn: Callable[[], object], repeat: int, warmup: int = 1, note: str = ""
) -> Timing:
    """Time ``fn`` ``repeat`` times (after ``warmup`` untimed calls) under ``torch.no_grad``."""
    timing = Timing(row_name, variant, note=note)
    with torch.no_grad():
        for _ in range(warmup):
            fn()
        for _ in range(repeat):
            start, cpu_start = time.perf_counter(), time.process_time()
            fn()
            timing.seconds.append(time.perf_counter() - start)
            timing.cpu_seconds.append(time.process_time() - cpu_start)
    return timing


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict:
    from semantic_sam.ops import cpu_kernel_available, cuda_kernel_available

    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "python": platform.python_version(),
        "msda_cpu_kernel": cpu_kernel_available(),
        "msda_cuda_kernel": cuda_kernel_available(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


# ---------------------------------------------------------------------------------------------------
# Multi-scale deformable attention
# ---------------------------------------------------------------------------------------------------
def reference_style_msda(value, spatial_shapes, sampling_locations, attention_weights):
    """The reference's CPU fallback algorithm: one grid_sample per level, then one big stacked product."""
    b, _, n_heads, head_dim = value.shape
    _, q, _, num_levels, num_points, _ = sampling_locations.shape
    shapes = spatial_shapes.tolist()
    values = value.split([h * w for h, w in shapes], dim=1)
    grids = 2 * sampling_locations - 1
    samples = []
    for level, (h, w) in enumerate(shapes):
        value_l = values[level].flatten(2).transpose(1, 2).reshape(b * n_heads, head_dim, h, w)
        grid_l = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        samples.append(F.grid_sample(value_l, grid_l, mode="bilinear", padding_mode="zeros", align_corners=False))
    weights = attention_weights.transpose(1, 2).reshape(b * n_heads, 1, q, num_levels * num_points)
    out = (torch.stack(samples, dim=-2).flatten(-2) * weights).sum(-1).view(b, n_heads * head_dim, q)
    return out.transpose(1, 2).contiguous()


def pixel_decoder_problem(
    image_size: int = 1024, n_heads: int = 8, head_dim: int = 32, n_points: int = 4, seed: int = 0
):
    """Inputs of one pixel-decoder self-attention layer: levels at strides 8..64, realistic locations
    (each token's own pixel centre plus offsets of a few pixels), softmax-normalized weights."""
    g = torch.Generator().manual_seed(seed)
    sizes = [image_size // s for s in (8, 16, 32, 64)]
    shapes = torch.tensor([[n, n] for n in sizes])
    starts = torch.cat([shapes.new_zeros(1), (shapes[:, 0] * shapes[:, 1]).cumsum(0)[:-1]])
    s = int((shapes[:, 0] * shapes[:, 1]).sum())
    centres = []
    for n in sizes:
        ys, xs = torch.meshgrid((torch.arange(n) + 0.5) / n, (torch.arange(n) + 0.5) / n, indexing="ij")
        centres.append(torch.stack([xs, ys], -1).view(-1, 2))
    ref = torch.cat(centres).view(1, s, 1, 1, 1, 2)
    level_size = torch.tensor(sizes, dtype=torch.float32).view(1, 1, 1, len(sizes), 1, 1)
    offsets = torch.randn(1, s, n_heads, len(sizes), n_points, 2, generator=g) * 2.0 / level_size
    locations = ref + offsets
    weights = torch.randn(1, s, n_heads, len(sizes) * n_points, generator=g).softmax(-1)
    weights = weights.view(1, s, n_heads, len(sizes), n_points)
    value = torch.randn(1, s, n_heads, head_dim, generator=g)
    return value, shapes, starts, locations, weights


@row("ms_deform_attn", "one pixel-decoder MSDeformAttn op at 1024 px (21,760 tokens, 8 heads, 4 levels, 4 points)")
def bench_ms_deform_attn(args) -> list[Timing]:
    from semantic_sam.ops import ms_deform_attn, ms_deform_attn_pytorch

    sparse = importlib.import_module("semantic_sam.ops.ms_deform_attn_sparse")
    cpu = importlib.import_module("semantic_sam.ops.ms_deform_attn_cpu")
    problem = pixel_decoder_problem(args.image_size)
    value, shapes, starts, locations, weights = problem
    name = "ms_deform_attn"
    expected = reference_style_msda(value, shapes, locations, weights)

    def variant(label, fn, note=""):
        err = (fn() - expected).abs().max().item()
        note = f"max |diff| vs reference {err:.1e}" + (f"; {note}" if note else "")
        return measure(name, label, fn, args.repeat, note=note)

    timings = [
        measure(name, "reference (grid_sample per level + stacked sum)",
                lambda: reference_style_msda(value, shapes, locations, weights), args.repeat),
        variant("ours: grid_sample path (ms_deform_attn_pytorch)",
                lambda: ms_deform_attn_pytorch(value, shapes, starts, locations, weights)),
        variant("ours: sparse CSR path (pure PyTorch)",
                lambda: sparse.ms_deform_attn_sparse(value, shapes, starts, locations, weights)),
    ]
    kernel = cpu.cpu_kernel()
    if kernel is not None:
        timings.append(
            variant(
                "ours: C++ CPU kernel",
                lambda: kernel.ms_deform_attn_cpu_forward(value, shapes, starts, locations, weights, 64),
            )
        )
    else:
        timings.append(Timing(name, "ours: C++ CPU kernel", skipped="not built (pass --build-cpu-kernel)"))
    timings.append(variant("ours: default dispatch (ms_deform_attn)",
                           lambda: ms_deform_attn(value, shapes, starts, locations, weights)))
    return timings


# ---------------------------------------------------------------------------------------------------
# Model rows (need semantic_sam.build_model and the model API of .team/MODEL_API.md)
# ---------------------------------------------------------------------------------------------------
def _build_swin_t_model(args):
    """SwinT Semantic-SAM with random weights on CPU, or a reason string when it cannot be built."""
    config = args.config
    if not os.path.exists(config):
        return None, f"config {config} not found"
    try:
        from semantic_sam import load_config
        from semantic_sam.build import build_model
    except ImportError as e:
        return None, f"model code not importable: {e}"
    try:
        cfg = load_config(config, ["MODEL.BACKBONE.LOAD_PRETRAINED=False"])
        model = build_model(cfg, device="cpu").eval()
    except Exception as e:  # report any build failure as a skipped row
        return None, f"build_model failed: {type(e).__name__}: {e}"
    if not hasattr(model, "encode_image"):
        return None, "model has no encode_image (see .team/MODEL_API.md)"
    return model, None


_MODEL_CACHE: dict = {}


def _model(args):
    if "model" not in _MODEL_CACHE:
        _MODEL_CACHE["model"] = _build_swin_t_model(args)
    return _MODEL_CACHE["model"]


@row("encode", "SwinT image encoding at 1024 px, random weights: backbone, pixel decoder, whole")
def bench_encode(args) -> list[Timing]:
    from semantic_sam.ops import force_pytorch

    model, reason = _model(args)
    if model is None:
        return [Timing("encode", "SwinT 1024 px", skipped=reason)]
    size = args.image_size
    images = torch.randn(1, 3, size, size)
    head = model.sem_seg_head
    timings = [measure("encode", "backbone", lambda: model.backbone(images), args.repeat)]
    with torch.no_grad():
        features = model.backbone(images)

    def pixel_decoder_reference_op():
        with force_pytorch():
            return head.encode(features)

    timings.append(measure("encode", "pixel decoder, MSDA grid_sample path (reference)", pixel_decoder_reference_op,
                           args.repeat))
    timings.append(measure("encode", "pixel decoder, MSDA default dispatch", lambda: head.encode(features),
                           args.repeat))
    timings.append(measure("encode", "encode_image (whole)", lambda: model.encode_image(images), args.repeat))
    return timings


@row("decode", "prompt decoding on cached 1024 px features: 1 and 64 click prompts")
def bench_decode(args) -> list[Timing]:
    model, reason = _model(args)
    if model is None:
        return [Timing("decode", "prompts", skipped=reason)]
    size = args.image_size
    with torch.no_grad():
        features = model.encode_image(torch.randn(1, 3, size, size), cache_decoder_memory=True)
    timings = []
    g = torch.Generator().manual_seed(0)
    for n in (1, 64):
        centres = torch.rand(1, n, 2, generator=g)
        boxes = torch.cat([centres, torch.full((1, n, 2), 0.005)], -1)
        pb = torch.zeros(1, n)
        timings.append(
            measure(
                "decode",
                f"{n} click prompt(s), no aux outputs",
                lambda: model.decode_prompts(features, boxes, pb, attn_mask="none", return_aux=False),
                args.repeat,
            )
        )
    return timings


# ---------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------
def format_table(env: dict, timings: list[Timing]) -> str:
    lines = [
        f"torch {env['torch']} | threads {env['threads']} | {env['cpu']} ({env['cpu_count']} CPUs, "
        f"{env['cpu_capability']}) | MSDA C++ CPU kernel: {env['msda_cpu_kernel']}",
    ]
    if env.get("load_average"):
        lines[0] += " | load avg %.1f" % env["load_average"][0]
    header = f"{'row':<16} {'variant':<52} {'median s':>9} {'best s':>8} {'cpu s':>8} {'vs first':>8}  note"
    lines += [header, "-" * len(header)]
    first: dict[str, float] = {}
    for t in timings:
        if t.skipped:
            lines.append(f"{t.row:<16} {t.variant:<52} {'-':>9} {'-':>8} {'-':>8} {'-':>8}  skipped: {t.skipped}")
            continue
        first.setdefault(t.row, t.median)
        ratio = first[t.row] / t.median if t.median > 0 else float("nan")
        lines.append(
            f"{t.row:<16} {t.variant:<52} {t.median:>9.3f} {t.best:>8.3f} {t.cpu_median:>8.3f} {ratio:>7.2f}x  {t.note}"
        )
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated rows, from: {', '.join(ROWS)}")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per variant (median reported)")
    p.add_argument("--image-size", type=int, default=1024, help="square image side in pixels")
    p.add_argument("--config", default="configs/semantic_sam_only_sa-1b_swinT.yaml", help="model config for model rows")
    p.add_argument("--build-cpu-kernel", action="store_true", help="JIT-build the C++ MSDeformAttn CPU kernel first")
    p.add_argument("--json", metavar="PATH", help="also write the environment and every timing as JSON")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.build_cpu_kernel:
        from semantic_sam.ops.ms_deform_attn_cpu import load_cpu_kernel

        load_cpu_kernel()
    names = [n.strip() for n in args.rows.split(",") if n.strip()]
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        print(f"unknown rows {unknown}; known: {list(ROWS)}", file=sys.stderr)
        return 2
    timings: list[Timing] = []
    for name in names:
        timings += ROWS[name].fn(args)
    env = environment()
    print(format_table(env, timings))
    if args.json:
        payload = {
            "environment": env,
            "timings": [dict(asdict(t), median=t.median, best=t.best, cpu_median=t.cpu_median) for t in timings],
        }
        with open(args.json, "w") as f:
            json.dump(payload, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
