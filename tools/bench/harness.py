"""Benchmark harness: records, measuring, the machine's description and inputs shared by the rows.

A row registers itself with :func:`row`; :mod:`tools.bench.runner` runs its jobs and
:mod:`tools.bench.report` turns the :class:`Timing` records into tables.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SWINT_CONFIG = "configs/semantic_sam_only_sa-1b_swinT.yaml"
SWINL_CONFIG = "configs/semantic_sam_only_sa-1b_swinL.yaml"
TINY_CONFIG = "configs/semantic_sam_tiny_cpu.yaml"
TINY_TEXT_CONFIG = "configs/semantic_sam_tiny_text.yaml"
GENERIC_CONFIG = "configs/semantic_sam_swinT_coco_sa1b.yaml"  # SwinT, 300 generic queries, UniCL 512x12
# The UniCL text encoder at the size of 00_reference.yaml's MODEL.TEXT (the paper's), random weights;
# MODEL.TEXT.CACHE_DIR "" keeps the class-embedding cache in memory.
UNICL_OVERRIDES = (
    "MODEL.TEXT.ARCH=unicl", "MODEL.TEXT.WIDTH=512", "MODEL.TEXT.LAYERS=12", "MODEL.TEXT.HEADS=8",
    "MODEL.TEXT.CACHE_DIR=",
)

BEFORE, AFTER, AFTER_BF16, AFTER_LABELS = "before", "after", "after+bf16", "after+labels"


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


def meminfo_gb(key: str) -> Optional[float]:
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
        "memory_total_gb": meminfo_gb("MemTotal"),
        "memory_available_gb": meminfo_gb("MemAvailable"),
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


def build_random_model(config: str, train: bool = False, overrides: Sequence[str] = ()):
    """(cfg, model) on CPU from ``config`` plus ``KEY=VALUE`` ``overrides`` with random weights (nothing
    downloaded)."""
    from semantic_sam import build_model, load_config

    path = config if os.path.isabs(config) else os.path.join(ROOT, config)
    cfg = load_config(path, ["MODEL.BACKBONE.LOAD_PRETRAINED=False", *overrides])
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


def heavy_repeat(args) -> int:
    """Timed runs of the expensive jobs: ``--repeat`` capped at ``--heavy-repeat``."""
    return max(1, min(args.repeat, args.heavy_repeat))
