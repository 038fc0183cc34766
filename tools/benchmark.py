"""CPU timings and peak memory of Semantic-SAM, before (reference-style) and after (ours), as tables and JSON.

Usage::

    python tools/benchmark.py                         # every row at full size (10-15 min on 2 cores)
    python tools/benchmark.py --quick                 # every row at small sizes (~3 min)
    python tools/benchmark.py --rows encode,decode --threads 2 --json bench.json

Rows (``--rows``; each has cases, each case a "before" and an "after" variant measured in the same run):

* ``ms_deform_attn``: one pixel-decoder deformable-attention op at 1024 px: the reference's algorithm
  (grid_sample per level) against each of our implementations.
* ``encode``: image encoding (backbone, pixel decoder, total) for the SwinT and SwinL configs at
  1024x1024 and 640x853, random weights; plus "after+bf16" (bfloat16 autocast, pixel decoder included).
* ``decode``: 1 and 64 clicks x all levels on an encoded 640x853 image, masks at image size.
* ``amg``: automatic mask generation with a 32x32 grid on a 640x853 and a 1024x1024 image (resized to
  640 px short side before encoding, as the demo; masks at image size), default thresholds; and
  "filters off" (predicted IoU > -inf, stability >= 0; 16x16 grid) at 640x853 so the post-processing
  cost is visible (random weights pass almost nothing through the default filters).
* ``train``: one training iteration (forward, backward, optimizer step) of the tiny config at its image
  size and of SwinT at 1024, one synthetic image with masks in the SA-1B mapper's output format.

"before" is our model with the reference's choices: deformable attention on the per-level grid_sample
path (``semantic_sam.ops.force_pytorch``), no decoder memory cache, no attention mask between prompts,
every decoder layer's outputs computed, every candidate mask upsampled to full resolution before any
filter (see :class:`ReferenceOrderGenerator`). "after" is our defaults. Inference runs under
``torch.inference_mode``.

Every (row, case, variant) runs in a fresh subprocess of this script (hidden ``--single-job``), so its
peak RSS (``ru_maxrss``) is its own; ``--in-process`` runs them here instead (faster, but peak memory
is then cumulative). Medians of ``--repeat`` timed runs after ``--warmup`` untimed ones; the expensive
jobs (SwinL encoding, AMG, SwinT training) cap the repeats at ``--heavy-repeat`` (1) and warm up on a
small input (``--full-size-warmup`` to warm up at full size). Wall-clock and process CPU seconds are
both reported. Load averages at the start and the end are printed: on a loaded machine compare the
before/after ratios, not absolute times, and pass ``--omp-wait-policy PASSIVE`` (or ``--threads 1``):
spinning OpenMP threads on oversubscribed cores make 2-thread timings 10-50x slower and meaningless.

To add a row: ``@row("name", "what it measures", jobs=fn_listing_jobs) def bench_name(args, job)``
returning a list of :class:`Timing`.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SWINT_CONFIG = "configs/semantic_sam_only_sa-1b_swinT.yaml"
SWINL_CONFIG = "configs/semantic_sam_only_sa-1b_swinL.yaml"
TINY_CONFIG = "configs/semantic_sam_tiny_cpu.yaml"

BEFORE, AFTER, AFTER_BF16 = "before", "after", "after+bf16"


# ---------------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------------
@dataclass
class Timing:
    """One measured quantity: ``repeat`` wall-clock and process-CPU durations of one part of one variant.

    ``part`` is "total" or a stage of it (e.g. "backbone"); ``peak_rss_mb`` is the peak resident memory
    of the process that ran the variant, ``base_rss_mb`` its resident memory just before the timed work
    (model built, inputs ready).
    """

    row: str
    case: str
    variant: str
    part: str = "total"
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)
    peak_rss_mb: Optional[float] = None
    base_rss_mb: Optional[float] = None
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

    def to_json(self) -> dict:
        stats = {"median": self.median, "best": self.best, "cpu_median": self.cpu_median}
        return dict(asdict(self), **{k: _finite(v) for k, v in stats.items()})


def _finite(x: float) -> Optional[float]:
    return None if x is None or math.isnan(x) else x


@dataclass
class Job:
    """One unit run in its own process: a variant of a case of a row, with the row's parameters."""

    row: str
    case: str
    variant: str
    params: dict = field(default_factory=dict)


@dataclass
class BenchRow:
    name: str
    description: str
    jobs: Callable[[argparse.Namespace], list[Job]]
    run: Callable[[argparse.Namespace, Job], list[Timing]]


ROWS: dict[str, BenchRow] = {}


def row(name: str, description: str, jobs: Callable[[argparse.Namespace], list[Job]]):
    """Decorator: register ``run(args, job) -> list[Timing]`` as row ``name`` with its job list ``jobs(args)``."""

    def deco(fn):
        ROWS[name] = BenchRow(name, description, jobs, fn)
        return fn

    return deco


# ---------------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------------
class Laps:
    """Split one run into parts: ``laps.lap("backbone")`` records the time since the previous lap."""

    def __init__(self) -> None:
        self.parts: dict[str, tuple[float, float]] = {}
        self._t, self._c = time.perf_counter(), time.process_time()

    def lap(self, name: str) -> None:
        t, c = time.perf_counter(), time.process_time()
        wall, cpu = self.parts.get(name, (0.0, 0.0))
        self.parts[name] = (wall + t - self._t, cpu + c - self._c)
        self._t, self._c = t, c


def current_rss_mb() -> Optional[float]:
    """Resident memory of this process now (Linux /proc), in MB."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (``ru_maxrss`` is KB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def measure(
    row_name: str,
    case: str,
    variant: str,
    run_once: Callable[[Laps], object],
    repeat: int,
    warmup: int = 1,
    grad: bool = False,
    note: str = "",
    warmup_fn: Optional[Callable[[Laps], object]] = None,
) -> list[Timing]:
    """Run ``run_once(laps)`` ``warmup`` times untimed, then ``repeat`` times timed.

    Inference (``grad=False``) runs under ``torch.inference_mode``. ``warmup_fn`` replaces ``run_once``
    for the warm-up runs (e.g. the same work on a smaller input). Returns one :class:`Timing` per part
    recorded with ``laps.lap`` (in order), then the "total".
    """
    base = current_rss_mb()
    ctx = contextlib.nullcontext if grad else torch.inference_mode
    parts: dict[str, Timing] = {}
    total = Timing(row_name, case, variant, "total", note=note, base_rss_mb=base)
    with ctx():
        for _ in range(warmup):
            (warmup_fn or run_once)(Laps())
        for _ in range(repeat):
            laps = Laps()
            start, cpu_start = time.perf_counter(), time.process_time()
            run_once(laps)
            total.seconds.append(time.perf_counter() - start)
            total.cpu_seconds.append(time.process_time() - cpu_start)
            for name, (wall, cpu) in laps.parts.items():
                t = parts.setdefault(name, Timing(row_name, case, variant, name, base_rss_mb=base))
                t.seconds.append(wall)
                t.cpu_seconds.append(cpu)
    return [*parts.values(), total]


def variant_context(variant: str) -> contextlib.ExitStack:
    """The settings of a variant: "before" forces the grid_sample deformable attention, "+bf16"
    enables bfloat16 autocast, pixel decoder included
    (``semantic_sam.utils.precision.inference_autocast(..., pixel_decoder=True)``)."""
    from semantic_sam.ops import force_pytorch
    from semantic_sam.utils.precision import inference_autocast

    stack = contextlib.ExitStack()
    if variant == BEFORE:
        stack.enter_context(force_pytorch())
    if variant.endswith("+bf16"):
        stack.enter_context(inference_autocast("cpu", "bf16", pixel_decoder=True))
    return stack


# ---------------------------------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _meminfo_gb(key: str) -> Optional[float]:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 2**20
    except (OSError, ValueError):
        pass
    return None


def _git_commit() -> Optional[str]:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def load_average() -> Optional[list[float]]:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def environment() -> dict:
    from semantic_sam.ops import cpu_kernel_available, cuda_kernel_available
    from semantic_sam.utils.precision import native_bf16_available

    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": native_bf16_available(),
        "memory_total_gb": _meminfo_gb("MemTotal"),
        "memory_available_gb": _meminfo_gb("MemAvailable"),
        "python": platform.python_version(),
        "msda_cpu_kernel": cpu_kernel_available(),
        "msda_cuda_kernel": cuda_kernel_available(),
        "git_commit": _git_commit(),
        "load_average_start": load_average(),
    }


# ---------------------------------------------------------------------------------------------------
# Helpers shared by the model rows
# ---------------------------------------------------------------------------------------------------
def parse_size(text: str) -> tuple[int, int]:
    """"640x853" -> (640, 853) (height x width)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be HEIGHTxWIDTH, e.g. 640x853, got {text!r}") from None
    if h < 32 or w < 32:
        raise argparse.ArgumentTypeError(f"size {text!r} is too small (at least 32x32)")
    return h, w


def parse_sizes(text: str) -> list[tuple[int, int]]:
    return [parse_size(s) for s in text.split(",") if s.strip()]


def size_label(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def build_random_model(config: str, train: bool = False):
    """(cfg, model) on CPU from ``config`` with random weights (nothing downloaded)."""
    from semantic_sam import build_model, load_config

    path = config if os.path.isabs(config) else os.path.join(ROOT, config)
    cfg = load_config(path, ["MODEL.BACKBONE.LOAD_PRETRAINED=False"])
    model = build_model(cfg, device="cpu")
    return cfg, model.train(train)


def synthetic_image(size: tuple[int, int], seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    """A synthetic scene (H, W, 3) uint8 RGB and its region masks ((H, W) bool each)."""
    from tools.make_synthetic_sa1b import render_scene

    image, regions = render_scene(np.random.default_rng(seed), size[0], size[1])
    return image, [r["mask"] for r in regions]


def click_points(n: int, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """(n, 2) pixel (x, y) clicks spread over an (H, W) image, seeded."""
    rng = np.random.default_rng(seed)
    h, w = size
    return np.stack([rng.uniform(0, w - 1, n), rng.uniform(0, h - 1, n)], axis=1)


def _heavy_repeat(args) -> int:
    return max(1, min(args.repeat, args.heavy_repeat))


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
    sizes = [max(1, image_size // s) for s in (8, 16, 32, 64)]
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


def _msda_jobs(args) -> list[Job]:
    s = args.image_size
    n = sum((s // k) ** 2 for k in (8, 16, 32, 64))
    return [Job("ms_deform_attn", f"{s} px, {n} tokens, 8 heads x 4 levels x 4 points", "all")]


@row("ms_deform_attn", "one pixel-decoder MSDeformAttn op: reference algorithm vs our paths", jobs=_msda_jobs)
def bench_ms_deform_attn(args, job: Job) -> list[Timing]:
    from semantic_sam.ops import ms_deform_attn, ms_deform_attn_pytorch

    sparse = importlib.import_module("semantic_sam.ops.ms_deform_attn_sparse")
    cpu = importlib.import_module("semantic_sam.ops.ms_deform_attn_cpu")
    value, shapes, starts, locations, weights = pixel_decoder_problem(args.image_size)
    name, case = job.row, job.case
    expected = reference_style_msda(value, shapes, locations, weights)

    def variant(label, fn):
        err = (fn() - expected).abs().max().item()
        return measure(name, case, label, lambda laps: fn(), args.repeat, args.warmup,
                       note=f"max |diff| vs reference {err:.1e}")

    timings = measure(name, case, BEFORE, lambda laps: reference_style_msda(value, shapes, locations, weights),
                      args.repeat, args.warmup, note="reference: grid_sample per level + stacked sum")
    timings += variant("grid_sample path", lambda: ms_deform_attn_pytorch(value, shapes, starts, locations, weights))
    timings += variant("sparse CSR path",
                       lambda: sparse.ms_deform_attn_sparse(value, shapes, starts, locations, weights))
    kernel = cpu.cpu_kernel()
    if kernel is not None:
        timings += variant(
            "C++ CPU kernel",
            lambda: kernel.ms_deform_attn_cpu_forward(value, shapes, starts, locations, weights, 64),
        )
    else:
        timings.append(Timing(name, case, "C++ CPU kernel", skipped="not built (pass --build-cpu-kernel)"))
    timings += variant(AFTER, lambda: ms_deform_attn(value, shapes, starts, locations, weights))
    return timings


# ---------------------------------------------------------------------------------------------------
# Image encoding
# ---------------------------------------------------------------------------------------------------
def _encode_jobs(args) -> list[Job]:
    jobs = []
    for name, config in (("SwinT", args.swint_config), ("SwinL", args.swinl_config)):
        for size in args.encode_sizes:
            variants = [BEFORE, AFTER] + ([AFTER_BF16] if args.bf16 else [])
            for v in variants:
                jobs.append(Job("encode", f"{name} {size_label(size)}", v, {"config": config, "size": list(size),
                                                                          "heavy": name == "SwinL"}))
    return jobs


@row("encode", "image encoding (backbone, pixel decoder), random weights", jobs=_encode_jobs)
def bench_encode(args, job: Job) -> list[Timing]:
    _, model = build_random_model(job.params["config"])
    model.eval()
    h, w = job.params["size"]
    g = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        x = model.preprocess_image([torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)]).tensor
        x_small = model.preprocess_image([torch.randint(0, 256, (3, 256, 256), dtype=torch.uint8, generator=g)]).tensor
    head = model.sem_seg_head
    cache = job.variant != BEFORE  # the predictor's set_image also precomputes the decoder's memory

    def run(x: torch.Tensor, laps: Laps) -> None:
        # = model.encode_image(x, cache_decoder_memory=cache), split into its stages
        backbone_features = model.backbone(x)
        laps.lap("backbone")
        features = head.encode(backbone_features)
        laps.lap("pixel decoder")
        if cache:
            features["decoder_memory"] = head.predictor.precompute_memory(features["multi_scale_features"])
            laps.lap("decoder memory cache")

    note = "padded " + size_label(tuple(x.shape[-2:]))
    if cache:
        note += "; total includes the decoder memory cache the predictor computes at set_image"
    heavy = job.params.get("heavy")
    warm = x_small if heavy and not args.full_size_warmup else x
    if warm is x_small:
        note += "; warm-up at 256x256"
    return measure(job.row, job.case, job.variant, lambda laps: run(x, laps),
                   _heavy_repeat(args) if heavy else args.repeat, args.warmup, note=note,
                   warmup_fn=lambda laps: run(warm, laps))


# ---------------------------------------------------------------------------------------------------
# Prompt decoding
# ---------------------------------------------------------------------------------------------------
def _decode_jobs(args) -> list[Job]:
    size = args.decode_size
    jobs = []
    for n in args.decode_prompts:
        case = f"{n} click{'s' if n > 1 else ''} x all levels, {size_label(size)}"
        for v in (BEFORE, AFTER):
            jobs.append(Job("decode", case, v, {"prompts": n, "size": list(size), "config": args.swint_config}))
    return jobs


@row("decode", "decoding clicks on an encoded image, masks at image size", jobs=_decode_jobs)
def bench_decode(args, job: Job) -> list[Timing]:
    from semantic_sam.predictor import ALL_LEVELS, SemanticSamPredictor, levels_to_tokens

    _, model = build_random_model(job.params["config"])
    model.eval()
    size = tuple(job.params["size"])
    image, _ = synthetic_image(size)
    points = click_points(job.params["prompts"], size)

    if job.variant == BEFORE:
        # the reference's evaluate_demo on cached features: no decoder memory cache, no attention mask
        # between clicks, every layer's heads, every mask upsampled (bilinear, crop, bicubic) to image size
        with torch.inference_mode():
            images = model.preprocess_image([torch.from_numpy(image).permute(2, 0, 1)])
            features = model.encode_image(images)
            padded = tuple(images.tensor.shape[-2:])
            boxes = model.point_to_box(torch.as_tensor(points, dtype=torch.float), size, padded, "demo")[None]
            pb = boxes.new_zeros(boxes.shape[:2])

        def once(laps: Laps) -> None:
            out = model.decode_prompts(features, boxes, pb, attn_mask="none", return_aux=True)
            laps.lap("decoder")
            masks = model.postprocess_masks(out["pred_masks"][0], padded, size, size) > 0
            laps.lap("upsampling")
            assert masks.shape[-2:] == size

        note = "force_pytorch, attn none, aux outputs, full-res logits then > 0"
    else:
        predictor = SemanticSamPredictor(model, short_side=None)  # the image is encoded at its own size
        predictor.set_image(image)
        tokens = levels_to_tokens(ALL_LEVELS, predictor.num_levels)
        in_points = predictor.transform.apply_coords(points, predictor.original_size)

        def once(laps: Laps) -> None:  # = predictor.predict_torch(in_points), split into its stages
            low_res, _ = predictor.predict_low_res(in_points, None, tokens)
            laps.lap("decoder")
            masks = predictor.upscale_binary(low_res)
            laps.lap("upsampling")
            assert masks.shape[-2:] == size

        note = "SemanticSamPredictor defaults (cached memory, block mask, binary upsampling)"
    return measure(job.row, job.case, job.variant, once, args.repeat, args.warmup, note=note)


# ---------------------------------------------------------------------------------------------------
# Automatic mask generation
# ---------------------------------------------------------------------------------------------------
def masks_to_uncompressed_rle(masks: torch.Tensor) -> list[dict]:
    """(N, H, W) bool -> uncompressed column-major RLEs ``{"size": [H, W], "counts": [...]}`` computed
    with tensor ops on the whole batch, as the reference (SAM's ``mask_to_rle_pytorch``) does."""
    n, h, w = masks.shape
    flat = masks.transpose(1, 2).reshape(n, h * w)
    changes = (flat[:, 1:] != flat[:, :-1]).nonzero()
    rles = []
    for i in range(n):
        idx = changes[changes[:, 0] == i, 1] + 1
        bounds = torch.cat([idx.new_zeros(1), idx, idx.new_full((1,), h * w)])
        counts = (bounds[1:] - bounds[:-1]).tolist()
        if bool(flat[i, 0]):
            counts = [0] + counts
        rles.append({"size": [h, w], "counts": counts})
    return rles


def _reference_order_generator_class():
    from semantic_sam.predictor import SemanticSamAutomaticMaskGenerator
    from semantic_sam.predictor.amg_utils import (
        MaskData,
        batched_mask_to_box,
        calculate_stability_score,
        is_box_near_crop_edge,
        uncrop_masks,
    )

    class ReferenceOrderGenerator(SemanticSamAutomaticMaskGenerator):
        """Our generator with the reference's per-batch order of operations ("before" rows).

        Per batch of clicks: decode with every layer's outputs and no attention mask, upsample every
        candidate (clicks x levels) to full resolution (bilinear to the padded size, crop, bicubic), then
        filter by predicted IoU, compute the stability score at full resolution and filter, binarize,
        take boxes from the full-resolution masks, drop boxes near crop edges and run-length encode with
        tensor ops. The crop-level NMS and the small-region clean-up are shared with ours.
        Build it with ``attn_mask="none"`` and a predictor without decoder memory cache.
        """

        def _process_batch(self, points, crop_size, crop_box, orig_size) -> MaskData:
            pred = self.predictor
            model = pred.model
            in_points = torch.as_tensor(pred.transform.apply_coords(points, crop_size), dtype=torch.float)
            boxes = model.point_to_box(in_points, pred.input_size, pred.padded_size, convention="demo")[None]
            out = model.decode_prompts(
                pred.features, boxes, boxes.new_zeros(boxes.shape[:2]), attn_mask=self.attn_mask, return_aux=True
            )
            p, k, n_lev = len(points), pred.num_levels, len(self.tokens)
            tokens = torch.as_tensor(self.tokens, dtype=torch.long)
            low_res = out["pred_masks"][0].view(p, k, *out["pred_masks"].shape[-2:])[:, tokens].flatten(0, 1)
            ious = out["pred_ious"][0].reshape(p, k)[:, tokens].flatten()
            del out
            logits = model.postprocess_masks(low_res, pred.padded_size, pred.input_size, crop_size)
            data = MaskData(
                masks=logits,
                iou_preds=ious,
                points=torch.as_tensor(points, dtype=torch.float).repeat_interleave(n_lev, dim=0),
                levels=torch.tensor(self.level, dtype=torch.long).repeat(p),
            )
            del logits
            data.filter(data["iou_preds"] > self.pred_iou_thresh)
            data["stability_score"] = calculate_stability_score(data["masks"], 0.0, self.stability_score_offset)
            data.filter(data["stability_score"] >= self.stability_score_thresh)
            data["masks"] = data["masks"] > 0
            data["boxes"] = batched_mask_to_box(data["masks"])
            orig_h, orig_w = orig_size
            keep = ~is_box_near_crop_edge(data["boxes"], crop_box, [0, 0, orig_w, orig_h])
            if not bool(keep.all()):
                data.filter(keep)
            data["rles"] = masks_to_uncompressed_rle(uncrop_masks(data["masks"], crop_box, orig_h, orig_w))
            del data["masks"]
            return data

    return ReferenceOrderGenerator


def _amg_jobs(args) -> list[Job]:
    jobs = []
    for i, size in enumerate(args.amg_sizes):
        modes = ["default"] + (["off"] if i == 0 and args.amg_off_points_per_side else [])
        for mode in modes:
            pps = args.amg_points_per_side if mode == "default" else args.amg_off_points_per_side
            label = "default thresholds" if mode == "default" else "filters off"
            case = f"{pps}x{pps} grid, {size_label(size)}, {label}"
            for v in (BEFORE, AFTER):
                jobs.append(Job("amg", case, v, {"size": list(size), "thresholds": mode, "points_per_side": pps,
                                                 "config": args.swint_config}))
    return jobs


@row("amg", "automatic mask generation, one image (random weights)", jobs=_amg_jobs)
def bench_amg(args, job: Job) -> list[Timing]:
    from semantic_sam.predictor import SemanticSamAutomaticMaskGenerator

    size = tuple(job.params["size"])
    pps = job.params["points_per_side"]
    kwargs: dict = {"points_per_side": pps, "short_side": args.amg_short_side}
    if job.params["thresholds"] == "off":
        kwargs.update(pred_iou_thresh=-math.inf, stability_score_thresh=0.0)
    before = job.variant == BEFORE
    if before:
        short = args.amg_short_side or min(size)
        scale = short / min(size)
        hp, wp = (math.ceil(s * scale / 32) * 32 for s in size)
        per_batch = min(200, pps * pps) * 6  # candidates upsampled at once (6 levels)
        need_gb = per_batch * (hp * wp + 2 * size[0] * size[1]) * 4 / 2**30
        avail = _meminfo_gb("MemAvailable")
        if avail is not None and need_gb > 0.8 * avail:
            return [Timing(job.row, job.case, job.variant,
                           skipped=f"needs ~{need_gb:.1f} GB (full-res logits of a batch), {avail:.1f} GB available")]
    _, model = build_random_model(job.params["config"])
    model.eval()
    image, _ = synthetic_image(size)
    if before:
        cls = _reference_order_generator_class()
        generator = cls(model, attn_mask="none", **kwargs)
        generator.predictor._can_cache_memory = False  # the reference recomputes the decoder memory per batch
        warm = cls(model, attn_mask="none", **dict(kwargs, points_per_side=2))
        warm.predictor._can_cache_memory = False
    else:
        generator = SemanticSamAutomaticMaskGenerator(model, **kwargs)
        warm = SemanticSamAutomaticMaskGenerator(model, **dict(kwargs, points_per_side=2))
    small, _ = synthetic_image((96, 128), seed=1)
    counts = []

    def once(laps: Laps) -> None:
        counts.append(len(generator.generate(image)))

    timings = measure(job.row, job.case, job.variant, once, _heavy_repeat(args), args.warmup,
                      warmup_fn=lambda laps: warm.generate(small))
    desc = ("reference order: all candidates at full res, force_pytorch, attn none, no memory cache"
            if before else "SemanticSamAutomaticMaskGenerator defaults")
    for t in timings:
        t.note = f"{counts[-1] if counts else '?'} masks; {desc}"
    return timings


# ---------------------------------------------------------------------------------------------------
# Training iteration
# ---------------------------------------------------------------------------------------------------
def _train_jobs(args) -> list[Job]:
    jobs = []
    cases = [
        ("tiny", args.tiny_config, args.tiny_train_size, False),
        ("SwinT", args.swint_config, args.train_size, True),
    ]
    for name, config, size, heavy in cases:
        label = f"{name} {size}x{size}" if size else f"{name} (config image size)"
        for v in (BEFORE, AFTER):
            jobs.append(Job("train", label, v, {"config": config, "size": size, "heavy": heavy}))
    return jobs


def training_batch(size: int, seed: int = 0) -> list[dict]:
    """One image in the SA-1B mapper's output format: ``image`` (3, S, S) uint8 and ``instances`` with
    ``gt_masks`` (BitMasks), ``gt_boxes`` (XYXY, exclusive max) and ``gt_classes`` (zeros)."""
    from detectron2.structures import BitMasks, Boxes, Instances

    image, masks = synthetic_image((size, size), seed)
    boxes = []
    for m in masks:
        rows, cols = np.nonzero(m.any(1))[0], np.nonzero(m.any(0))[0]
        boxes.append((cols[0], rows[0], cols[-1] + 1, rows[-1] + 1))
    instances = Instances((size, size))
    instances.gt_masks = BitMasks(torch.from_numpy(np.stack(masks)))
    instances.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    instances.gt_classes = torch.zeros(len(masks), dtype=torch.int64)
    return [{"image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))), "instances": instances,
             "height": size, "width": size}]


@row("train", "one training iteration: forward, backward, optimizer step (1 image)", jobs=_train_jobs)
def bench_train(args, job: Job) -> list[Timing]:
    from semantic_sam.solver import build_optimizer

    cfg, model = build_random_model(job.params["config"], train=True)
    size = job.params["size"] or int(cfg.SAM.INPUT.IMAGE_SIZE)
    optimizer = build_optimizer(cfg, model)
    batch = training_batch(size)
    n_masks = len(batch[0]["instances"])

    def step(inputs, laps: Laps) -> None:
        losses = model(inputs)
        total = sum(losses.values())
        laps.lap("forward")
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        laps.lap("backward")
        optimizer.step()
        laps.lap("optimizer step")

    heavy = job.params.get("heavy")
    warm_batch = training_batch(min(size, 256), seed=1) if heavy and not args.full_size_warmup else batch
    dec = cfg.MODEL.DECODER
    note = (f"{n_masks} GT masks, {dec.MAX_NUM_INSTANCE} clicks x {dec.NUM_INTERACTIVE_TOKENS} tokens, "
            f"{dec.DEC_LAYERS} decoder layers")
    if warm_batch[0]["image"].shape != batch[0]["image"].shape:
        note += f"; warm-up at {warm_batch[0]['image'].shape[-1]} px"
    if job.variant == BEFORE:
        note += "; MSDA grid_sample path with autograd"
    return measure(job.row, job.case, job.variant, lambda laps: step(batch, laps),
                   _heavy_repeat(args) if heavy else args.repeat, args.warmup, grad=True, note=note,
                   warmup_fn=lambda laps: step(warm_batch, laps))


# ---------------------------------------------------------------------------------------------------
# Running jobs (in a subprocess each, or in this process)
# ---------------------------------------------------------------------------------------------------
def run_job_here(args, job: Job) -> list[Timing]:
    """Run one job in this process; a failure becomes a skipped line naming the error."""
    try:
        with variant_context(job.variant):
            timings = ROWS[job.row].run(args, job)
    except Exception as e:  # report any failure of a row as a skipped line, keep the others
        traceback.print_exc()
        timings = [Timing(job.row, job.case, job.variant, skipped=f"{type(e).__name__}: {e}")]
    peak = peak_rss_mb()
    for t in timings:
        if not t.skipped:
            t.peak_rss_mb = peak
    return timings


def run_job_subprocess(args, job: Job) -> list[Timing]:
    """Run one job in a fresh Python process (``--single-job``) and read its timings back."""
    with tempfile.TemporaryDirectory(prefix="semsam_bench_") as tmp:
        spec_path, out_path = os.path.join(tmp, "job.json"), os.path.join(tmp, "result.json")
        with open(spec_path, "w") as f:
            json.dump({"args": vars(args), "job": asdict(job), "out": out_path}, f)
        cmd = [sys.executable, os.path.abspath(__file__), "--single-job", spec_path]
        env = dict(os.environ)
        if args.omp_wait_policy:
            env["OMP_WAIT_POLICY"] = args.omp_wait_policy
        try:
            proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=args.job_timeout)
        except subprocess.TimeoutExpired:
            return [Timing(job.row, job.case, job.variant, skipped=f"timed out after {args.job_timeout} s")]
        if proc.returncode != 0 or not os.path.exists(out_path):
            tail = " | ".join((proc.stderr or "").strip().splitlines()[-3:])
            return [Timing(job.row, job.case, job.variant, skipped=f"subprocess exit {proc.returncode}: {tail}")]
        if args.verbose and proc.stderr.strip():
            print(proc.stderr, file=sys.stderr)
        with open(out_path) as f:
            payload = json.load(f)
    fields = {k for k in Timing.__dataclass_fields__}
    return [Timing(**{k: v for k, v in t.items() if k in fields}) for t in payload["timings"]]


def single_job_main(spec_path: str) -> int:
    """Child side of :func:`run_job_subprocess`."""
    with open(spec_path) as f:
        spec = json.load(f)
    args = argparse.Namespace(**spec["args"])
    _apply_threads(args)
    job = Job(**spec["job"])
    timings = run_job_here(args, job)
    with open(spec["out"], "w") as f:
        json.dump({"timings": [asdict(t) for t in timings]}, f)
    return 0


def _apply_threads(args) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)


# ---------------------------------------------------------------------------------------------------
# Targets (docs: /work/shared/reference/CPU_SPEED.md, measured on the same kind of 2-core machine)
# ---------------------------------------------------------------------------------------------------
# (row, case, part) -> (the reference's seconds, our target seconds or None)
TARGETS: dict[tuple[str, str, str], tuple[float, Optional[float]]] = {
    ("encode", "SwinT 640x853", "total"): (3.79, 1.2),
    ("encode", "SwinT 640x853", "backbone"): (0.68, None),
    ("encode", "SwinT 640x853", "pixel decoder"): (3.10, None),
    ("encode", "SwinT 1024x1024", "total"): (7.16, 2.3),
    ("encode", "SwinT 1024x1024", "backbone"): (1.38, None),
    ("encode", "SwinT 1024x1024", "pixel decoder"): (5.76, None),
    ("encode", "SwinL 640x853", "total"): (8.28, 5.5),
    ("encode", "SwinL 640x853", "backbone"): (5.32, None),
    ("encode", "SwinL 640x853", "pixel decoder"): (3.06, None),
    ("decode", "1 click x all levels, 640x853", "total"): (0.127, 0.05),
    ("decode", "64 clicks x all levels, 640x853", "total"): (1.47, 0.4),
    ("decode", "64 clicks x all levels, 640x853", "decoder"): (0.64, None),
    ("decode", "64 clicks x all levels, 640x853", "upsampling"): (0.8, None),
    ("amg", "32x32 grid, 640x853, default thresholds", "total"): (28.6, 5.0),
}
# (row, case) -> (the reference's peak RSS in GB, our target in GB)
MEMORY_TARGETS: dict[tuple[str, str], tuple[float, float]] = {
    ("amg", "32x32 grid, 640x853, default thresholds"): (7.85, 2.5),
    ("encode", "SwinT 1024x1024"): (2.7, 1.5),
}


# ---------------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------------
def _fmt(x: Optional[float], spec: str = ".3f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def environment_line(env: dict) -> str:
    line = (
        f"torch {env['torch']} | threads {env['threads']} (OMP_NUM_THREADS={env.get('OMP_NUM_THREADS')}, "
        f"OMP_WAIT_POLICY={env.get('OMP_WAIT_POLICY')}) | "
        f"{env['cpu']} ({env['cpu_count']} CPUs, {env['cpu_capability']}, native bf16 {env.get('native_bf16')}) | "
        f"MSDA C++ CPU kernel: {env['msda_cpu_kernel']}"
    )
    la0, la1 = env.get("load_average_start"), env.get("load_average_end")
    if la0:
        line += f" | load avg (1/5/15 min) start {la0}" + (f", end {la1}" if la1 else "")
    if env.get("memory_mode"):
        line += f" | memory: {env['memory_mode']}"
    return line


def format_details(timings: list[Timing]) -> str:
    """Every measured line: median, best, CPU seconds, peak RSS."""
    header = (f"{'row':<14} {'case':<44} {'variant':<16} {'part':<20} {'median s':>9} {'best s':>8} "
              f"{'cpu s':>8} {'peak MB':>8}  note")
    lines = [header, "-" * len(header)]
    for t in timings:
        if t.skipped:
            lines.append(f"{t.row:<14} {t.case:<44} {t.variant:<16} {t.part:<20} {'-':>9} {'-':>8} {'-':>8} "
                         f"{'-':>8}  skipped: {t.skipped}")
            continue
        lines.append(
            f"{t.row:<14} {t.case:<44} {t.variant:<16} {t.part:<20} {t.median:>9.3f} {t.best:>8.3f} "
            f"{t.cpu_median:>8.3f} {_fmt(t.peak_rss_mb, '.0f'):>8}  {t.note}"
        )
    return "\n".join(lines)


def summary_rows(timings: list[Timing]) -> list[dict]:
    """One entry per (row, case, part, variant != before): before and that variant's medians side by side,
    with the reference's figure and our target where CPU_SPEED.md gives them."""
    by_key: dict[tuple, dict[str, Timing]] = {}
    order: list[tuple] = []
    for t in timings:
        key = (t.row, t.case, t.part)
        if key not in by_key:
            by_key[key] = {}
            order.append(key)
        by_key[key][t.variant] = t
    out = []
    for key in order:
        variants = by_key[key]
        before = variants.get(BEFORE)
        for name, t in variants.items():
            if name == BEFORE or (before is None and name != AFTER):
                continue
            ref, target = TARGETS.get(key, (None, None))
            b = before.median if before and not before.skipped else None
            a = t.median if not t.skipped else None
            mem_ref, mem_target = MEMORY_TARGETS.get(key[:2], (None, None)) if key[2] == "total" else (None, None)
            out.append({
                "row": key[0], "case": key[1], "part": key[2], "variant": name,
                "before_s": b, "after_s": a,
                "speedup": (b / a) if b and a else None,
                "reference_s": ref, "target_s": target,
                "needed_speedup": (ref / target) if ref and target else None,
                "before_peak_mb": before.peak_rss_mb if before and key[2] == "total" else None,
                "after_peak_mb": t.peak_rss_mb if key[2] == "total" else None,
                "reference_peak_gb": mem_ref, "target_peak_gb": mem_target,
                "skipped": (before.skipped if before and before.skipped else None) or t.skipped,
            })
    return out


def format_summary(rows: list[dict]) -> str:
    header = (f"{'row':<14} {'case':<44} {'part':<20} {'variant':<11} {'before s':>9} {'after s':>8} {'speedup':>8} "
              f"{'needed':>7} {'ref s':>7} {'target':>7} {'before MB':>10} {'after MB':>9} {'ref/target GB':>14}")
    lines = [header, "-" * len(header)]
    for r in rows:
        mem = f"{r['reference_peak_gb']}/{r['target_peak_gb']}" if r["target_peak_gb"] else "-"
        speed = f"{r['speedup']:.2f}x" if r["speedup"] else "-"
        needed = f"{r['needed_speedup']:.1f}x" if r["needed_speedup"] else "-"
        target = f"<={r['target_s']}" if r["target_s"] else "-"
        lines.append(
            f"{r['row']:<14} {r['case']:<44} {r['part']:<20} {r['variant']:<11} {_fmt(r['before_s']):>9} "
            f"{_fmt(r['after_s']):>8} {speed:>8} {needed:>7} {_fmt(r['reference_s'], 'g'):>7} {target:>7} "
            f"{_fmt(r['before_peak_mb'], '.0f'):>10} {_fmt(r['after_peak_mb'], '.0f'):>9} {mem:>14}"
            + (f"  skipped: {r['skipped']}" if r["skipped"] else "")
        )
    lines.append(
        "speedup = before / after (same run); needed = the reference's time / our target (CPU_SPEED.md), "
        "the ratio to reach on a machine like the reference's; MB = peak RSS of the process that ran the variant."
    )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------
QUICK_DEFAULTS = {
    "image_size": 256,
    "encode_sizes": "256x256,160x213",
    "decode_size": "160x213",
    "amg_sizes": "160x213,256x256",
    "amg_points_per_side": 8,
    "amg_short_side": 0,
    "amg_off_points_per_side": 4,
    "train_size": 256,
    "repeat": 1,
}
FULL_DEFAULTS = {
    "image_size": 1024,
    "encode_sizes": "1024x1024,640x853",
    "decode_size": "640x853",
    "amg_sizes": "640x853,1024x1024",
    "amg_points_per_side": 32,
    "amg_short_side": 640,
    "amg_off_points_per_side": 16,
    "train_size": 1024,
    "repeat": 3,
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated rows, from: {', '.join(ROWS)}")
    p.add_argument("--quick", action="store_true", help="small sizes everywhere (development, CI): "
                   + ", ".join(f"{k}={v}" for k, v in QUICK_DEFAULTS.items()))
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--repeat", type=int, default=None, help="timed runs per variant, median reported (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs before the timed ones")
    p.add_argument("--heavy-repeat", type=int, default=1,
                   help="cap on timed runs for SwinL encoding, AMG and SwinT training (default 1)")
    p.add_argument("--image-size", type=int, default=None, help="ms_deform_attn row: square image side (1024)")
    p.add_argument("--encode-sizes", default=None, help="encode row: HxW list (1024x1024,640x853)")
    p.add_argument("--decode-size", default=None, help="decode row: image HxW (640x853)")
    p.add_argument("--decode-prompts", default="1,64", help="decode row: clicks per call")
    p.add_argument("--amg-sizes", default=None, help="amg row: image HxW list (640x853,1024x1024)")
    p.add_argument("--amg-points-per-side", type=int, default=None, help="amg row: grid side (32)")
    p.add_argument("--amg-short-side", type=int, default=None,
                   help="amg row: images are resized to this short side before encoding (640 as the demo; 0 = none)")
    p.add_argument("--amg-off-points-per-side", type=int, default=None,
                   help="amg row: grid side of the 'filters off' case on the first size (16; 0 = skip it). "
                        "Its 'before' costs ~250 s at 32 on 2 busy cores (the reference's RLE of every candidate)")
    p.add_argument("--train-size", type=int, default=None, help="train row: SwinT image side (1024)")
    p.add_argument("--tiny-train-size", type=int, default=None, help="train row: tiny image side (config's)")
    p.add_argument("--full-size-warmup", action="store_true",
                   help="warm SwinL encoding and SwinT training up at full size (default: at 256 px)")
    p.add_argument("--no-bf16", dest="bf16", action="store_false", help="skip the bfloat16 encode variants")
    p.add_argument("--swint-config", default=SWINT_CONFIG)
    p.add_argument("--swinl-config", default=SWINL_CONFIG)
    p.add_argument("--tiny-config", default=TINY_CONFIG)
    p.add_argument("--omp-wait-policy", choices=("PASSIVE", "ACTIVE"), default=None,
                   help="OMP_WAIT_POLICY for the job subprocesses (default: inherited). PASSIVE avoids the huge "
                        "slow-downs of spinning OpenMP threads when the cores are shared with other work")
    p.add_argument("--in-process", action="store_true",
                   help="run every job in this process (faster start; peak memory is then cumulative)")
    p.add_argument("--job-timeout", type=int, default=1800, help="seconds before a job's subprocess is killed")
    p.add_argument("--build-cpu-kernel", action="store_true", help="JIT-build the C++ MSDeformAttn CPU kernel first")
    p.add_argument("--json", metavar="PATH", help="also write the environment and every timing as JSON")
    p.add_argument("--verbose", action="store_true", help="show the subprocesses' stderr")
    p.add_argument("--single-job", metavar="SPEC", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.single_job:
        return args
    defaults = QUICK_DEFAULTS if args.quick else FULL_DEFAULTS
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    try:
        args.encode_sizes = parse_sizes(args.encode_sizes)
        args.decode_size = parse_size(args.decode_size)
        args.amg_sizes = parse_sizes(args.amg_sizes)
        args.decode_prompts = [int(n) for n in str(args.decode_prompts).split(",") if n.strip()]
    except (argparse.ArgumentTypeError, ValueError) as e:
        p.error(str(e))
    if args.amg_short_side == 0:
        args.amg_short_side = None
    if args.repeat < 1 or args.warmup < 0:
        p.error("--repeat must be >= 1 and --warmup >= 0")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.single_job:
        return single_job_main(args.single_job)
    _apply_threads(args)
    if args.build_cpu_kernel:
        from semantic_sam.ops.ms_deform_attn_cpu import load_cpu_kernel

        load_cpu_kernel()
    names = [n.strip() for n in args.rows.split(",") if n.strip()]
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        print(f"unknown rows {unknown}; known: {list(ROWS)}", file=sys.stderr)
        return 2
    env = environment()
    env["memory_mode"] = "cumulative (--in-process)" if args.in_process else "per job (subprocess)"
    if args.omp_wait_policy:
        if args.in_process:
            print("warning: --omp-wait-policy only applies to job subprocesses; set OMP_WAIT_POLICY in the "
                  "environment for --in-process", file=sys.stderr)
        else:
            env["OMP_WAIT_POLICY"] = args.omp_wait_policy
    print(environment_line(env), file=sys.stderr, flush=True)
    started = time.perf_counter()
    timings: list[Timing] = []
    for name in names:
        for job in ROWS[name].jobs(args):
            t0 = time.perf_counter()
            result = run_job_here(args, job) if args.in_process else run_job_subprocess(args, job)
            timings += result
            total = [t for t in result if t.part == "total" and not t.skipped]
            status = f"{total[-1].median:.3f} s" if total else (result[0].skipped if result else "no result")
            print(f"[{time.perf_counter() - started:6.0f} s] {job.row} | {job.case} | {job.variant}: {status} "
                  f"(job {time.perf_counter() - t0:.0f} s, load {load_average()})", file=sys.stderr, flush=True)
    env["load_average_end"] = load_average()
    env["wall_seconds"] = round(time.perf_counter() - started, 1)
    summary = summary_rows(timings)
    print(environment_line(env))
    print()
    print(format_summary(summary))
    print()
    print(format_details(timings))
    if args.json:
        payload = {
            "environment": env,
            "settings": {k: v for k, v in vars(args).items() if k not in ("single_job",)},
            "summary": summary,
            "timings": [t.to_json() for t in timings],
        }
        with open(args.json, "w") as f:
            json.dump(payload, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
