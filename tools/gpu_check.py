"""The GPU check of issue 18: the CUDA path run for real, measured, written to one JSON and one markdown table.

    python -m tools.gpu_check --output DIR [--quick] [--device cuda|cpu] [--stages kernel,parity,...]
    python -m tools.gpu_check --list-missing      # distributions this Python lacks (tools/gpu_check.sh)
    python -m tools.gpu_check --wheel-spec        # name==version of each needed distribution (tools/gpu_wheels.sh)

(from the repository root). ``tools/gpu_check.sh`` installs what the GPU machine lacks from ``gpu_wheels/``,
builds ``semantic_sam._C`` with CUDA for the machine's GPU and runs this check; ``tools/gpu_wheels.sh``
fills ``gpu_wheels/`` here.

Stages (``--stages``, all by default), each timed, each under a time budget (seconds on an H100, full mode;
an in-process stage that overruns is stopped with a "timeout" error, a subprocess is killed):

* ``kernel`` (40 s): multi-scale deformable attention, the CUDA kernel and the C++ CPU kernel against the
  PyTorch path, forward and backward (output and the three input gradients), each against a float64
  CPU PyTorch-path reference: float64, float32 and float16 inputs, bfloat16 inputs (informational: the CUDA
  kernel dispatches float, double and half only), the ``MSDeformAttn`` module under float16 and bfloat16
  autocast (as training and evaluation give the op its inputs: half values, float32 locations), on the
  released configs' shape (1024 px, 4 feature levels, 8 heads, 4 points, 32 channels per head), decoder
  cross-attention, odd sizes, random shapes, batch chunking (``im2col_step``) and empty inputs (no query,
  no image, an empty feature level); float64 ``gradcheck`` on a small case. A case passes when every
  compared tensor has ``max|ours - ref| <= atol + rtol * max|ref|`` (:data:`TOLERANCES`); under autocast
  the module's output is compared with float64 (:data:`AUTOCAST_TOLERANCES`) and its output and gradients
  with the PyTorch path under the same autocast (the autocast dtype's tolerance).
* ``parity`` (30 s): ``tools.check_parity`` on ``tests/fixtures/parity_tiny`` with the model on the device,
  float32, TF32 off, at check_parity's own tolerance (1e-4 + 1e-4 |golden|, as on CPU); then once more with
  TF32 on (informational).
* ``pytest_cuda`` (60 s): the tests the suite skips without CUDA (a ``skipif`` whose reason names CUDA or a
  GPU), ``slow`` ones excluded (``tests/ops/test_cuda_build.py`` rebuilds the extension that
  gpu_check.sh has just built), through pytest with a JUnit report.
* ``train_amp`` (120 s): ``train_net.py`` with the SwinT SA-1B config at 1024 px, AMP on, on a one-image
  synthetic SA-1B TSV made on the spot (``tools.make_builtin_data``): 30 iterations, checkpoint at the end;
  the total loss of ``metrics.json`` must be finite and lower at the last write than at the first; then
  ``--resume`` with 4 more iterations must start at iteration 30 and end at 33.
* ``eval`` (45 s): ``train_net.py --eval_only`` on the synthetic COCO-panoptic copy of 2 held-out scenes
  (interactive 1-IoU, ``TEST.PRECISION`` auto = float16 autocast on CUDA), with the weights ``train_amp``
  wrote (random weights when there are none).
* ``timings`` (120 s): SwinT and SwinL image encoding at 1024x1024 (float32, bfloat16 and float16 autocast),
  decoding 64 clicks x 6 levels on an encoded 1024x1024 image, automatic mask generation with a 32x32 grid on
  a 1024x1024 image (generator defaults), SwinT training iterations per second (AMP float16) at batch 1 and at
  the largest batch that fits (doubling up to 32), with the peak GPU memory of each
  (``torch.cuda.max_memory_allocated``); random weights; medians after warm-up runs.

About 6 minutes in all on an H100 (the sum of the budgets is 415 s). ``--quick`` shrinks every stage (the
tiny config, 64-160 px images, 2 training iterations, a 4x4 grid, batches up to 2) so that
``--quick --device cpu`` runs everything on a CPU in a few minutes; comparisons that need CUDA are then
recorded as "skipped: no CUDA". A failing stage is recorded (status, one-line error; the traceback goes to
``DIR/gpu_check.log``) and the next stage runs. ``DIR/gpu_check.json`` and ``DIR/gpu_check.md`` are rewritten
after every stage. Exit status: 0 when no stage failed, 1 otherwise, 2 for a usage error.

The later session's command (the ``run`` tool; ``gpu_wheels/`` made beforehand by
``tools/gpu_wheels.sh``, 33 wheels, about 18 MiB)::

    command: bash tools/gpu_check.sh 2>&1 | tail -c 20000
    carry:   ["gpu_wheels"]
    timeout_s: 560

``tools/gpu_check.sh`` writes into ``$OUT``: ``gpu_check.json``, ``gpu_check.md``, ``gpu_check.log``,
``install.log`` and ``build.log``; data and checkpoints go to a temporary folder (``--work``), not to
``$OUT``, so that what comes back stays small. The GPU machine's Python must accept the wheels: the pure-Python ones
work on any Python >= 3.10; ``gpu_wheels.sh`` fetches the compiled ones (pycocotools, regex, ninja,
safetensors) for CPython 3.10-3.13.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import json
import math
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ElementTree
from typing import Any, Callable, Iterator, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGES = ("kernel", "parity", "pytest_cuda", "train_amp", "eval", "timings")
# Seconds per stage on an H100 without --quick (about 6 minutes in all); --quick allows 10x for slow CPUs.
BUDGET_S = {"kernel": 40, "parity": 30, "pytest_cuda": 60, "train_amp": 120, "eval": 45, "timings": 120}
QUICK_BUDGET_FACTOR = 10

# What the check imports beyond torch: (import name, distribution, compiled). tools/gpu_check.sh installs the
# distributions whose module does not import; tools/gpu_wheels.sh downloads them. torch, torchvision, numpy,
# Pillow, scipy, OpenCV, PyYAML and matplotlib are expected on the GPU machine (large, compiled).
PACKAGES: tuple[tuple[str, str, bool], ...] = (
    ("detectron2", "sal-detectron2", False),
    ("panopticapi", "panopticapi-lite", False),
    ("pycocotools", "pycocotools", True),
    ("fvcore", "fvcore", False),
    ("iopath", "iopath", False),
    ("portalocker", "portalocker", False),
    ("yacs", "yacs", False),
    ("termcolor", "termcolor", False),
    ("tabulate", "tabulate", False),
    ("cloudpickle", "cloudpickle", False),
    ("omegaconf", "omegaconf", False),
    ("antlr4", "antlr4-python3-runtime", False),
    ("hydra", "hydra-core", False),
    ("timm", "timm", False),
    ("huggingface_hub", "huggingface_hub", False),
    ("safetensors", "safetensors", True),
    ("open_clip", "open_clip_torch", False),
    ("ftfy", "ftfy", False),
    ("wcwidth", "wcwidth", False),
    ("regex", "regex", True),
    ("tqdm", "tqdm", False),
    ("filelock", "filelock", False),
    ("fsspec", "fsspec", False),
    ("typing_extensions", "typing_extensions", False),
    ("packaging", "packaging", False),
    ("pytest", "pytest", False),
    ("pluggy", "pluggy", False),
    ("iniconfig", "iniconfig", False),
    ("ninja", "ninja", True),
)

# (atol, rtol) of one compared tensor, relative to the reference's largest magnitude (see the docstring).
TOLERANCES = {"float64": (1e-10, 1e-10), "float32": (1e-5, 1e-4), "float16": (2e-3, 2e-2), "bfloat16": (1e-2, 5e-2)}
# MSDeformAttn under autocast against the float64 reference: the value projection runs in the autocast dtype.
AUTOCAST_TOLERANCES = {"float16": (1e-3, 1e-2), "bfloat16": (1e-2, 5e-2)}
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "parity_tiny")
SWINT_CONFIG = os.path.join("configs", "semantic_sam_only_sa-1b_swinT.yaml")
SWINL_CONFIG = os.path.join("configs", "semantic_sam_only_sa-1b_swinL.yaml")
TINY_CONFIG = os.path.join("configs", "semantic_sam_tiny_cpu.yaml")
COCO_INTERACTIVE = "coco_2017_val_panoptic_with_sem_seg_interactive_jointboxpoint"
_CUDA_REASON = re.compile(r"\b(cuda|gpu)\b", re.IGNORECASE)
_CUDA_SKIP_SOURCE = re.compile(r"reason\s*=\s*[\"'][^\"']*\b(cuda|gpu)\b", re.IGNORECASE)


class UsageError(Exception):
    """A bad command line: printed as one ``error:`` line, exit status 2."""


class StageTimeout(Exception):
    """An in-process stage ran past its budget."""


# ---------------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class StageResult:
    """One stage's outcome. ``status``: "pass", "fail", "error" (it raised), "skipped: <why>".
    ``rows``: one dict per case (``case``, ``status`` and numbers), ``info``: stage-level numbers."""

    name: str
    status: str = "pass"
    seconds: float = 0.0
    budget_s: float = 0.0
    summary: str = ""
    error: Optional[str] = None
    rows: list[dict] = dataclasses.field(default_factory=list)
    info: dict = dataclasses.field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.status in ("fail", "error")


@dataclasses.dataclass
class Check:
    """What every stage gets: the settings and the output folder."""

    output: str
    device: str
    quick: bool
    work: str = ""  # data and training outputs (checkpoints are large); "": a folder under output
    log: Callable[[str], None] = print
    cache: dict = dataclasses.field(default_factory=dict)

    @property
    def cuda(self) -> bool:
        return self.device == "cuda"

    def path(self, *parts: str) -> str:
        return os.path.join(self.output, *parts)

    def work_path(self, *parts: str) -> str:
        return os.path.join(self.work or self.path("work"), *parts)


def _verdict(rows: Sequence[dict]) -> str:
    """"fail" when a required row failed, "skipped: ..." when every row was skipped, else "pass"."""
    required = [r for r in rows if r.get("required", True)]
    if any(r["status"] in ("fail", "error") for r in required):
        return "fail"
    if required and all(str(r["status"]).startswith("skipped") for r in required):
        return str(required[0]["status"])
    return "pass"


def _finite_or_none(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else str(x)
    return x


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return _finite_or_none(obj)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if v != v:
            return "nan"
        return f"{v:.3g}" if (abs(v) < 1e-2 or abs(v) >= 1e4) and v != 0 else f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "x".join(str(x) for x in v) if all(isinstance(x, int) for x in v) else ", ".join(map(str, v))
    return str(v).replace("|", "/").replace("\n", " ")


def markdown_report(environment: dict, results: Sequence[StageResult]) -> str:
    """The markdown of ``gpu_check.md``: the environment, one summary row per stage, then each stage's rows."""
    env = ", ".join(f"{k} {_fmt(v)}" for k, v in environment.items() if v not in (None, ""))
    lines = ["# GPU check", "", env, "", "| stage | status | seconds (budget) | summary |", "|---|---|---|---|"]
    for r in results:
        summary = r.summary + (f" ({r.error})" if r.error else "")
        lines.append(f"| {r.name} | {r.status} | {r.seconds:.1f} ({r.budget_s:.0f}) | {_fmt(summary)} |")
    for r in results:
        if not r.rows:
            continue
        keys = ["case", "status"]
        for row in r.rows:
            keys += [k for k in row if k not in keys and k != "required"]
        lines += ["", f"## {r.name}", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        for row in r.rows:
            lines.append("| " + " | ".join(_fmt(row.get(k, "")) for k in keys) + " |")
    return "\n".join(lines) + "\n"


def write_reports(check: Check, environment: dict, settings: dict, results: Sequence[StageResult]) -> None:
    """(Re)write ``gpu_check.json`` and ``gpu_check.md`` under the output folder."""
    payload = {
        "environment": environment,
        "settings": settings,
        "passed": not any(r.failed for r in results),
        "stages": [dataclasses.asdict(r) for r in results],
    }
    with open(check.path("gpu_check.json"), "w", encoding="utf-8") as f:
        json.dump(_jsonable(payload), f, indent=2)
    with open(check.path("gpu_check.md"), "w", encoding="utf-8") as f:
        f.write(markdown_report(environment, results))


# ---------------------------------------------------------------------------------------------------
# Running stages
# ---------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`StageTimeout` in the main thread after ``seconds`` (SIGALRM; a no-op elsewhere)."""
    usable = hasattr(signal, "setitimer") and _in_main_thread()
    if not usable or seconds <= 0:
        yield
        return

    def on_alarm(signum, frame):
        raise StageTimeout(f"ran past its budget of {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def run_stages(
    check: Check, names: Sequence[str], environment: dict, settings: dict,
    stages: Optional[dict[str, Callable[[Check, float], StageResult]]] = None,
) -> list[StageResult]:
    """Run the stages ``names`` in order, each under its budget; an exception is recorded as the stage's
    "error" (traceback in ``gpu_check.log``) and the next stage runs. Reports are rewritten after each."""
    stages = STAGE_FUNCTIONS if stages is None else stages
    results: list[StageResult] = []
    log_path = check.path("gpu_check.log")
    for name in names:
        budget = BUDGET_S[name] * (QUICK_BUDGET_FACTOR if check.quick else 1)
        check.log(f"[gpu_check] {name}: running (budget {budget:.0f} s)")
        start = time.perf_counter()
        try:
            with time_limit(budget * 1.5):
                result = stages[name](check, budget)
        except Exception as e:  # noqa: BLE001  (a failed stage is a result; the next stage still runs)
            message = str(e).strip().splitlines()[0] if str(e).strip() else ""
            result = StageResult(name, status="error", error=f"{type(e).__name__}: {message}"[:500])
            with open(log_path, "a", encoding="utf-8") as f:
                f.write(f"=== stage {name} ===\n{traceback.format_exc()}\n")
        result.name, result.seconds, result.budget_s = name, time.perf_counter() - start, budget
        results.append(result)
        write_reports(check, environment, settings, results)
        extra = f" ({result.error})" if result.error else ""
        check.log(f"[gpu_check] {name}: {result.status} in {result.seconds:.1f} s: {result.summary}{extra}")
    return results


# ---------------------------------------------------------------------------------------------------
# Stage: kernel
# ---------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class KernelCase:
    """One deformable-attention problem: ``shapes`` (H, W) per feature level, B images, Q queries."""

    name: str
    shapes: tuple[tuple[int, int], ...]
    b: int
    q: int
    heads: int
    head_dim: int
    points: int
    seed: int = 0
    im2col_step: int = 64
    released: int = 0  # > 0: the pixel decoder's own problem at this image size (tools.bench)


def kernel_cases(quick: bool) -> list[KernelCase]:
    """The problems of the ``kernel`` stage (smaller with ``quick``)."""
    import random

    size = 128 if quick else 1024
    feature_shapes = tuple((size // s, size // s) for s in (8, 16, 32, 64))
    cases = [
        KernelCase(f"released encoder {size} px", feature_shapes, 1, 0, 8, 32, 4, released=size),
        KernelCase("released decoder cross-attn", feature_shapes, 2, 60 if quick else 360, 8, 32, 4, seed=1),
        KernelCase("odd sizes", ((7, 5), (3, 9), (1, 1)), 3, 17, 3, 5, 3, seed=2),
        KernelCase("im2col chunks", ((6, 4), (3, 2)), 5, 9, 2, 8, 2, seed=3, im2col_step=2),
        KernelCase("no query", ((4, 4), (2, 2)), 2, 0, 2, 4, 2, seed=4),
        KernelCase("no image", ((4, 4), (2, 2)), 0, 3, 2, 4, 2, seed=5),
        KernelCase("empty feature level", ((4, 6), (0, 3), (3, 2)), 2, 5, 2, 4, 2, seed=6),
    ]
    rng = random.Random(18)
    for i in range(2 if quick else 4):
        num_feature_levels = rng.randint(1, 4)
        shapes = tuple((rng.randint(1, 24), rng.randint(1, 24)) for _ in range(num_feature_levels))
        cases.append(KernelCase(
            f"random {i}", shapes, rng.randint(1, 3), rng.randint(1, 64), rng.choice((1, 2, 4, 8)),
            rng.choice((2, 8, 16, 32)), rng.randint(1, 4), seed=10 + i,
        ))
    return cases


def kernel_problem(case: KernelCase) -> tuple:
    """(value (B, S, nH, Dh), spatial_shapes (L, 2), start index (L,), locations (B, Q, nH, L, P, 2),
    weights (B, Q, nH, L, P)) in float64 on the CPU; locations reach 20% outside [0, 1] (zero padding)."""
    import torch

    if case.released:
        from tools.bench.rows_model import pixel_decoder_problem

        problem = pixel_decoder_problem(case.released, case.heads, case.head_dim, case.points, case.seed)
        return tuple(t.double() if t.is_floating_point() else t for t in problem)
    g = torch.Generator().manual_seed(case.seed)
    shapes = torch.tensor(case.shapes, dtype=torch.long).view(-1, 2)
    sizes = shapes[:, 0] * shapes[:, 1]
    starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    s, num_feature_levels = int(sizes.sum()), len(case.shapes)
    value = torch.randn(case.b, s, case.heads, case.head_dim, generator=g, dtype=torch.float64)
    loc_shape = (case.b, case.q, case.heads, num_feature_levels, case.points)
    locations = torch.rand(*loc_shape, 2, generator=g, dtype=torch.float64) * 1.4 - 0.2
    weights = torch.rand(*loc_shape, generator=g, dtype=torch.float64)
    return value, shapes, starts, locations, weights


def compare_tensors(ours: Sequence, refs: Sequence, tolerance: tuple[float, float]) -> dict:
    """Errors of ``ours`` against ``refs`` (pairs of tensors of equal shapes): ``max_abs`` the largest
    ``|ours - ref|``, ``max_rel`` the largest ``max|ours - ref| / max|ref|`` over the pairs, ``ok`` when
    every pair has ``max|ours - ref| <= atol + rtol * max|ref|`` and is finite."""
    max_abs = max_rel = 0.0
    ok = True
    for a, r in zip(ours, refs):
        if tuple(a.shape) != tuple(r.shape):
            return {"max_abs": float("nan"), "max_rel": float("nan"), "ok": False,
                    "note": f"shape {tuple(a.shape)} != {tuple(r.shape)}"}
        if r.numel() == 0:
            continue
        a64, r64 = a.detach().double().cpu(), r.detach().double().cpu()
        diff = float((a64 - r64).abs().max())
        scale = float(r64.abs().max())
        finite = bool(a64.isfinite().all())
        max_abs = max(max_abs, diff) if finite else float("inf")
        max_rel = max(max_rel, diff / scale if scale > 0 else diff)
        ok = ok and finite and diff <= tolerance[0] + tolerance[1] * scale
    return {"max_abs": max_abs, "max_rel": max_rel, "ok": ok}


def _forward_backward(fn: Callable, problem: tuple, device: str, dtype, grad_output) -> list:
    """``fn(value, shapes, starts, locations, weights)`` on ``device`` in ``dtype``, then its backward with
    ``grad_output``: [output, grad value, grad locations, grad weights]."""
    value, shapes, starts, locations, weights = problem
    leaves = [t.detach().to(device, dtype).requires_grad_() for t in (value, locations, weights)]
    out = fn(leaves[0], shapes.to(device), starts.to(device), leaves[1], leaves[2])
    if out.numel():
        out.backward(grad_output.to(device, out.dtype))
    return [out, *(leaf.grad if leaf.grad is not None else leaf.detach() * 0 for leaf in leaves)]


def _kernel_implementations(check: Check) -> list[tuple[str, str, str, str, Optional[str], bool]]:
    """(implementation, op, device, dtype, why skipped or None, required) of every compared run."""
    from semantic_sam.ops import cpu_kernel_available, cuda_kernel_available

    cpu_why = None if cpu_kernel_available() else "skipped: C++ CPU kernel not built"
    if not check.cuda:
        cuda_why: Optional[str] = "skipped: no CUDA"
    elif not cuda_kernel_available():
        cuda_why = "fail: semantic_sam._C has no CUDA kernel (build it: tools/gpu_check.sh)"
    else:
        cuda_why = None
    gpu_why = None if check.cuda else "skipped: no CUDA"
    return [
        ("C++ CPU kernel", "dispatch", "cpu", "float64", cpu_why, True),
        ("C++ CPU kernel", "dispatch", "cpu", "float32", cpu_why, True),
        ("PyTorch path", "pytorch", "cpu", "float32", None, True),
        ("CUDA kernel", "dispatch", "cuda", "float64", cuda_why, True),
        ("CUDA kernel", "dispatch", "cuda", "float32", cuda_why, True),
        ("CUDA kernel", "dispatch", "cuda", "float16", cuda_why, True),
        ("CUDA kernel", "dispatch", "cuda", "bfloat16", cuda_why, False),
        ("PyTorch path", "pytorch", "cuda", "float32", gpu_why, True),
        ("PyTorch path", "pytorch", "cuda", "float16", gpu_why, False),
    ]


def _op_rows(check: Check, case: KernelCase) -> list[dict]:
    """Every implementation against the float64 CPU PyTorch path on ``case``, forward and backward."""
    import torch

    from semantic_sam.ops import ms_deform_attn, ms_deform_attn_pytorch

    problem = kernel_problem(case)
    g = torch.Generator().manual_seed(case.seed + 100)
    b, q = problem[3].shape[:2]
    grad_output = torch.randn(b, q, case.heads * case.head_dim, generator=g, dtype=torch.float64)
    reference = _forward_backward(ms_deform_attn_pytorch, problem, "cpu", torch.float64, grad_output)
    rows = []
    for impl, op, device, dtype_name, why, required in _kernel_implementations(check):
        row = {"case": case.name, "implementation": impl, "device": device, "dtype": dtype_name,
               "required": required}
        if why is not None:
            failed = why.startswith("fail")
            rows.append(dict(row, status="fail" if failed else why, note=why.partition(": ")[2] if failed else ""))
            continue
        dtype = getattr(torch, dtype_name)
        fn = ms_deform_attn_pytorch if op == "pytorch" else (
            lambda v, s, i, loc, w: ms_deform_attn(v, s, i, loc, w, im2col_step=case.im2col_step))
        try:
            got = _forward_backward(fn, problem, device, dtype, grad_output)
        except Exception as e:  # noqa: BLE001  (recorded per implementation; the other rows still run)
            rows.append(dict(row, status="fail" if required else "error", note=f"{type(e).__name__}: "
                             + str(e).strip().splitlines()[0][:200]))
            continue
        errors = compare_tensors(got, reference, TOLERANCES[dtype_name])
        status = "pass" if errors.pop("ok") else "fail"
        note = errors.pop("note", "")
        rows.append(dict(row, status=status, **errors, note=note))
    return rows


def _autocast_rows(check: Check) -> list[dict]:
    """``MSDeformAttn`` (256 channels, 4 feature levels, 8 heads, 4 points) under float16 / bfloat16
    autocast, forward and backward: the dispatched kernel against the float64 module without autocast and
    against the PyTorch path under the same autocast (the op gets float32 inputs either way; only the
    output projection's rounding to the autocast dtype separates them)."""
    import torch

    from semantic_sam.ops import MSDeformAttn, force_pytorch

    size = 128 if check.quick else 512
    shapes = torch.tensor([[size // s, size // s] for s in (8, 16, 32, 64)])
    sizes = shapes[:, 0] * shapes[:, 1]
    starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    s = int(sizes.sum())
    g = torch.Generator().manual_seed(7)
    module = MSDeformAttn(256, 4, 8, 4)
    for p in module.parameters():
        with torch.no_grad():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    query = torch.randn(2, 300, 256, generator=g)
    flat = torch.randn(2, s, 256, generator=g)
    ref_points = torch.rand(2, 300, 4, 2, generator=g)
    grad_output = torch.randn(2, 300, 256, generator=g)

    def run(device: str, dtype, autocast, pytorch: bool) -> list:
        m = module.to(device, dtype)
        m.zero_grad()
        q = query.detach().to(device, dtype).requires_grad_()
        x = flat.detach().to(device, dtype).requires_grad_()
        ctx = torch.autocast(device, dtype=autocast) if autocast else contextlib.nullcontext()
        with ctx, force_pytorch(pytorch):
            out = m(q, ref_points.to(device, dtype), x, shapes.to(device), starts.to(device))
        out.backward(grad_output.to(device, out.dtype))
        return [out, q.grad, x.grad]

    reference = run("cpu", torch.float64, None, True)
    rows = []
    for autocast_name in ("float16", "bfloat16"):
        autocast = getattr(torch, autocast_name)
        impl = "CUDA kernel" if check.cuda else "C++ CPU kernel"
        row = {"case": f"MSDeformAttn {size} px, autocast", "implementation": impl, "device": check.device,
               "dtype": autocast_name}
        try:
            ours = run(check.device, torch.float32, autocast, False)
            same_autocast = run(check.device, torch.float32, autocast, True)
        except Exception as e:  # noqa: BLE001
            rows.append(dict(row, status="fail", note=f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200]}"))
            continue
        vs_ref = compare_tensors(ours[:1], reference[:1], AUTOCAST_TOLERANCES[autocast_name])
        grads_vs_ref = compare_tensors(ours[1:], reference[1:], AUTOCAST_TOLERANCES[autocast_name])
        vs_pytorch = compare_tensors(ours, same_autocast, TOLERANCES[autocast_name])
        ok = vs_ref["ok"] and vs_pytorch["ok"]
        rows.append(dict(row, status="pass" if ok else "fail", max_abs=vs_ref["max_abs"], max_rel=vs_ref["max_rel"],
                         note=f"output vs float64; forward+backward vs the PyTorch path under the same autocast: "
                              f"max_rel {vs_pytorch['max_rel']:.2e}; gradients vs float64 (informational: the "
                              f"rounded offsets move samples across pixels): max_rel {grads_vs_ref['max_rel']:.2e}"))
    module.to("cpu", torch.float32)
    return rows


def _gradcheck_rows(check: Check) -> list[dict]:
    """float64 ``torch.autograd.gradcheck`` of the dispatched op (a small case) on each usable kernel."""
    import torch

    from semantic_sam.ops import cpu_kernel_available, cuda_kernel_available, ms_deform_attn

    value, shapes, starts, locations, weights = kernel_problem(
        KernelCase("gradcheck", ((3, 4), (2, 2)), 1, 3, 2, 2, 2, seed=8))
    rows = []
    targets = [("C++ CPU kernel", "cpu", cpu_kernel_available(), "skipped: C++ CPU kernel not built"),
               ("CUDA kernel", "cuda", check.cuda and cuda_kernel_available(),
                "skipped: no CUDA" if not check.cuda else "fail")]
    for impl, device, usable, why in targets:
        row = {"case": "float64 gradcheck", "implementation": impl, "device": device, "dtype": "float64"}
        if not usable:
            rows.append(dict(row, status=why))
            continue
        inputs = tuple(t.to(device).requires_grad_() for t in (value, locations, weights))
        s, i = shapes.to(device), starts.to(device)
        ok = torch.autograd.gradcheck(lambda v, l, w: ms_deform_attn(v, s, i, l, w), inputs, raise_exception=False)
        rows.append(dict(row, status="pass" if ok else "fail"))
    return rows


def stage_kernel(check: Check, budget: float) -> StageResult:
    """The ``kernel`` stage (see the module docstring)."""
    from semantic_sam.ops import cpu_kernel_available, cuda_kernel_available

    rows: list[dict] = []
    for case in kernel_cases(check.quick):
        rows += _op_rows(check, case)
    rows += _autocast_rows(check)
    rows += _gradcheck_rows(check)
    compared = [r for r in rows if "max_rel" in r]
    worst = {}
    for r in compared:
        key = f"{r['implementation']} {r['dtype']}"
        worst[key] = max(worst.get(key, 0.0), r["max_rel"])
    counts = {s: sum(1 for r in rows if str(r["status"]).startswith(s)) for s in ("pass", "fail", "skipped")}
    summary = f"{counts['pass']} passed, {counts['fail']} failed, {counts['skipped']} skipped; worst max_rel: " + \
        ", ".join(f"{k} {v:.1e}" for k, v in worst.items())
    info = {"cuda_kernel": cuda_kernel_available(), "cpu_kernel": cpu_kernel_available(),
            "tolerances": TOLERANCES, "autocast_tolerances": AUTOCAST_TOLERANCES, "worst_max_rel": worst}
    return StageResult("kernel", _verdict(rows), summary=summary, rows=rows, info=info)


# ---------------------------------------------------------------------------------------------------
# Stage: parity
# ---------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def models_on(target: str) -> Iterator[None]:
    """Inside it, ``semantic_sam.build.build_model`` builds on ``target`` (whatever device it is given),
    the model's ``decode_prompts`` moves its prompts there and its ``inference`` returns CPU tensors, so
    that ``tools.check_parity.run_parity`` (which builds a CPU model and mixes its outputs with CPU
    tensors) runs the model on ``target`` unchanged."""
    import torch

    import semantic_sam.build as build_module

    original = build_module.build_model

    def build_on_device(cfg, device="cpu"):
        model = original(cfg, device=target)
        decode, infer = model.decode_prompts, model.inference

        def decode_prompts(features, boxes, pb, *args, **kwargs):
            return decode(features, boxes.to(model.device), pb.to(model.device), *args, **kwargs)

        def inference(*args, **kwargs):
            to_cpu = lambda v: v.cpu() if torch.is_tensor(v) else v  # noqa: E731
            return [{k: to_cpu(v) for k, v in r.items()} for r in infer(*args, **kwargs)]

        model.decode_prompts, model.inference = decode_prompts, inference
        return model

    build_module.build_model = build_on_device
    try:
        yield
    finally:
        build_module.build_model = original


@contextlib.contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """TF32 matrix products and convolutions on or off (CUDA), restored afterwards."""
    import torch

    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def stage_parity(check: Check, budget: float) -> StageResult:
    """The ``parity`` stage (see the module docstring)."""
    import io

    from tools.check_parity import ATOL, RTOL, run_parity

    rows = []
    variants = [("float32, TF32 off", False, True)] + ([("float32, TF32 on", True, False)] if check.cuda else [])
    for label, allow_tf32, required in variants:
        with models_on(check.device), tf32(allow_tf32), contextlib.redirect_stdout(io.StringIO()):
            chk = run_parity(FIXTURE)
            failed = [r.name for r in chk.results.values() if r.status == "FAIL"]
            not_compared = [k for k in chk.golden if k not in chk.results]
        floats = [r for r in chk.results.values() if r.max_abs == r.max_abs and r.max_rel == r.max_rel]
        worst = max(floats, key=lambda r: r.max_abs) if floats else None
        ok = not failed and not not_compared
        rows.append({
            "case": label, "device": check.device, "required": required,
            "status": "pass" if ok else "fail", "tensors": len(chk.golden), "failed": len(failed),
            "max_abs": worst.max_abs if worst else float("nan"), "worst": worst.name if worst else "",
            "note": (", ".join(failed[:5]) + (" ..." if len(failed) > 5 else "")) if failed else
            (f"not compared: {', '.join(not_compared[:5])}" if not_compared else ""),
        })
    summary = "; ".join(f"{r['case']}: {r['tensors'] - r['failed']}/{r['tensors']} within {ATOL:g} + {RTOL:g}|golden|"
                        f", max abs {r['max_abs']:.2e}" for r in rows)
    return StageResult("parity", _verdict(rows), summary=summary, rows=rows, info={"atol": ATOL, "rtol": RTOL})


# ---------------------------------------------------------------------------------------------------
# Stage: pytest_cuda (and the pytest plugin it loads: ``-p tools.gpu_check``)
# ---------------------------------------------------------------------------------------------------
def _cuda_skip_reason(item) -> Optional[str]:
    for mark in item.iter_markers("skipif"):
        reason = str(mark.kwargs.get("reason", ""))
        if _CUDA_REASON.search(reason):
            return reason
    return None


def pytest_collection_modifyitems(session, config, items) -> None:
    """pytest hook (this module as a plugin, under ``SEMANTIC_SAM_GPU_CHECK_SELECT=1``): keep only the
    tests skipped without CUDA, i.e. with a ``skipif`` whose reason names CUDA or a GPU."""
    if os.environ.get("SEMANTIC_SAM_GPU_CHECK_SELECT") != "1":
        return
    selected = [item for item in items if _cuda_skip_reason(item) is not None]
    deselected = [item for item in items if _cuda_skip_reason(item) is None]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
    items[:] = selected


def cuda_test_files(tests_dir: str = os.path.join(ROOT, "tests")) -> list[str]:
    """Test files with a CUDA ``skipif`` (the files to collect; the plugin selects the tests)."""
    found = []
    for folder, _, files in os.walk(tests_dir):
        for name in sorted(files):
            if name.startswith("test_") and name.endswith(".py"):
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8") as f:
                    text = f.read()
                if "skipif" in text and _CUDA_SKIP_SOURCE.search(text):
                    found.append(os.path.relpath(path, ROOT))
    return sorted(found)


def junit_rows(path: str) -> list[dict]:
    """One row per test case of a JUnit XML report: ``case``, ``status`` (pass/fail/skipped: reason), seconds."""
    rows = []
    for case in ElementTree.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        status, note = "pass", ""
        for child in case:
            if child.tag in ("failure", "error"):
                status, note = "fail", (child.get("message") or "").strip().splitlines()[0][:200] if (
                    child.get("message") or "").strip() else child.tag
            elif child.tag == "skipped":
                status = f"skipped: {(child.get('message') or '').strip()[:120]}"
        rows.append({"case": name, "status": status, "seconds": float(case.get("time", 0.0)), "note": note})
    return rows


def stage_pytest_cuda(check: Check, budget: float) -> StageResult:
    """The ``pytest_cuda`` stage (see the module docstring)."""
    files = cuda_test_files()
    report = check.path("pytest_cuda.xml")
    env = dict(os.environ, SEMANTIC_SAM_GPU_CHECK_SELECT="1",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if not check.cuda:
        env["CUDA_VISIBLE_DEVICES"] = ""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "tools.gpu_check", "-m", "not slow", "-o", "addopts=",
           f"--junitxml={report}", *files]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=budget)
    except subprocess.TimeoutExpired as e:
        raise StageTimeout(f"pytest ran past its budget of {budget:.0f} s") from e
    with open(check.path("pytest_cuda.log"), "w", encoding="utf-8") as f:
        f.write(proc.stdout + proc.stderr)
    if not os.path.isfile(report):
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or [""]
        raise RuntimeError(f"pytest wrote no report (exit {proc.returncode}): {tail[0]}")
    rows = junit_rows(report)
    counts = {s: sum(1 for r in rows if r["status"].startswith(s)) for s in ("pass", "fail", "skipped")}
    summary = f"{len(rows)} CUDA tests in {len(files)} files: {counts['pass']} passed, {counts['fail']} failed, " \
              f"{counts['skipped']} skipped (exit {proc.returncode})"
    status = _verdict(rows) if rows else "fail"
    if rows and not check.cuda and status.startswith("skipped"):
        status = "skipped: no CUDA"
    if proc.returncode not in (0, 5) and status == "pass":
        status = "fail"
    return StageResult("pytest_cuda", status, summary=summary, rows=rows, info={"files": files})


# ---------------------------------------------------------------------------------------------------
# Stages: train_amp and eval (train_net.py on synthetic data)
# ---------------------------------------------------------------------------------------------------
def _data(check: Check) -> tuple[str, dict]:
    """The synthetic data both stages use (made once): one training scene (SA-1B TSV) and 2 held-out
    scenes (COCO panoptic); returns (root, environment variables pointing train_net.py at it)."""
    if "data" not in check.cache:
        from tools.make_builtin_data import make_builtin_data

        root = check.work_path("data")
        size = 160 if check.quick else 1024
        env = make_builtin_data(root, num_train=1, num_val=2, size=size, min_area=16)
        check.cache["data"] = (root, env)
    return check.cache["data"]


def train_settings(check: Check) -> tuple[str, list[str], int]:
    """(config, overrides, image size) of the training and evaluation runs."""
    config = TINY_CONFIG if check.quick else SWINT_CONFIG
    size = 96 if check.quick else 1024
    overrides = [
        "MODEL.BACKBONE.LOAD_PRETRAINED=False", f"MODEL.DEVICE={check.device}", "SEED=0",
        f"SAM.INPUT.IMAGE_SIZE={size}", "SAM.TRAIN.BATCH_SIZE_TOTAL=1",
        f"SAM.DATALOADER.NUM_WORKERS={0 if check.quick else 2}", f"DATALOADER.NUM_WORKERS={0 if check.quick else 2}",
        f"COCO.INPUT.MIN_SIZE_TEST={size}", f"COCO.INPUT.MAX_SIZE_TEST={size}", "COCO.TEST.BATCH_SIZE_TOTAL=1",
        f"COCO.DATALOADER.NUM_WORKERS={0 if check.quick else 2}",
    ]
    return config, overrides, size


def run_train_net(check: Check, args: Sequence[str], env: dict, timeout: float, log_name: str) -> str:
    """``train_net.py ARGS`` in a subprocess with ``env`` added; its output goes to ``DIR/<log_name>``.
    Returns the output; raises RuntimeError (the last line) when it fails, StageTimeout past ``timeout``."""
    full_env = dict(os.environ, **env, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, os.path.join(ROOT, "train_net.py"), *args]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise StageTimeout(f"train_net.py ran past {timeout:.0f} s") from e
    output = proc.stdout + proc.stderr
    with open(check.path(log_name), "w", encoding="utf-8") as f:
        f.write(" ".join(cmd) + "\n" + output)
    if proc.returncode != 0:
        lines = [line for line in output.strip().splitlines() if line.strip()]
        raise RuntimeError(f"train_net.py exit {proc.returncode} (see {log_name}): {lines[-1] if lines else ''}")
    return output


def training_losses(output_dir: str) -> list[tuple[int, float]]:
    """(iteration, total_loss) of every write in ``OUTPUT_DIR/metrics.json``."""
    path = os.path.join(output_dir, "metrics.json")
    losses = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                record = json.loads(line)
                if "total_loss" in record:
                    losses.append((int(record["iteration"]), float(record["total_loss"])))
    return losses


def judge_losses(losses: Sequence[tuple[int, float]]) -> tuple[str, str]:
    """("pass" / "fail", note): every loss finite and, with two writes or more, the last below the first."""
    if not losses:
        return "fail", "no total_loss in metrics.json"
    values = [v for _, v in losses]
    if not all(math.isfinite(v) for v in values):
        return "fail", f"non-finite loss: {values}"
    if len(values) < 2:
        return "pass", f"finite; falling not judged (1 write, loss {values[0]:.3f})"
    if values[-1] < values[0]:
        return "pass", f"finite and falling: {values[0]:.3f} -> {values[-1]:.3f}"
    return "fail", f"not falling: {values[0]:.3f} -> {values[-1]:.3f}"


def stage_train_amp(check: Check, budget: float) -> StageResult:
    """The ``train_amp`` stage (see the module docstring)."""
    import torch

    _, env = _data(check)
    config, overrides, size = train_settings(check)
    iters, more = (2, 2) if check.quick else (30, 4)
    out = check.work_path("train")
    opts = ["--config-file", os.path.join(ROOT, config), *overrides, f"OUTPUT_DIR={out}", "SOLVER.AMP.ENABLED=True",
            "DATASETS.TEST=[]", "TEST.EVAL_PERIOD=0", "SOLVER.BASE_LR=0.0003", f"SOLVER.CHECKPOINT_PERIOD={iters}",
            f"SOLVER.STEPS=[{10 * (iters + more)}]"]
    rows = []
    start = time.perf_counter()
    run_train_net(check, [*opts, f"SOLVER.MAX_ITER={iters}"], env, budget * 0.65, "train.log")
    first_seconds = time.perf_counter() - start
    losses = training_losses(out)
    status, note = judge_losses(losses)
    import yaml

    with open(os.path.join(out, "config.yaml"), encoding="utf-8") as f:
        amp_on = bool(yaml.safe_load(f)["SOLVER"]["AMP"]["ENABLED"])
    if check.cuda and not amp_on:
        status, note = "fail", "AMP was off: " + note
    rows.append({"case": f"train {iters} iterations, 1 image", "status": status, "config": config, "size": size,
                 "amp": amp_on, "first_loss": losses[0][1] if losses else float("nan"),
                 "last_loss": losses[-1][1] if losses else float("nan"), "seconds": first_seconds, "note": note})
    final = torch.load(os.path.join(out, "model_final.pth"), map_location="cpu", weights_only=False)
    saved_iter = int(final["iteration"])
    rows.append({"case": "checkpoint", "status": "pass" if saved_iter == iters - 1 else "fail",
                 "note": f"model_final.pth at iteration {saved_iter} (expected {iters - 1})"})
    check.cache["weights"] = os.path.join(out, "model_final.pth")
    start = time.perf_counter()
    output = run_train_net(check, ["--resume", *opts, f"SOLVER.MAX_ITER={iters + more}"], env,
                           budget * 0.35, "train_resume.log")
    match = re.search(r"Starting training from iteration (\d+)", output)
    started = int(match.group(1)) if match else None
    resumed = torch.load(os.path.join(out, "model_final.pth"), map_location="cpu", weights_only=False)
    ok = started == iters and int(resumed["iteration"]) == iters + more - 1
    rows.append({"case": f"resume, {more} more iterations", "status": "pass" if ok else "fail",
                 "seconds": time.perf_counter() - start,
                 "note": f"started at iteration {started} (expected {iters}), ended at {int(resumed['iteration'])} "
                         f"(expected {iters + more - 1})"})
    seconds_per_iter = first_seconds / iters
    summary = f"{config} at {size} px, AMP {'on' if amp_on else 'off'}: {note}; resume " + \
        ("ok" if ok else "FAILED") + f"; {first_seconds:.0f} s for {iters} iterations incl. start-up"
    return StageResult("train_amp", _verdict(rows), summary=summary, rows=rows,
                       info={"losses": losses, "seconds_per_iteration_incl_startup": seconds_per_iter})


EVAL_COLUMNS = ("1-IoU@Max", "1-IoU@Oracle", "noc@0.85@Max", "noc@0.9@Max", "num_segments", "num_images")


def copypaste_metrics(output: str) -> dict[str, dict[str, float]]:
    """``{task: {metric: value}}`` from detectron2's ``print_csv_format`` lines (``copypaste: ...``), plus
    the ``1-IoU@...`` rows of the interactive evaluator's table (print_csv_format drops names with "-")."""
    lines = [line.split("copypaste: ", 1)[1].strip() for line in output.splitlines() if "copypaste: " in line]
    metrics: dict[str, dict[str, float]] = {}
    for name, value in re.findall(r"\|\s*(1-IoU@\w+)\s*\|\s*(-?[\d.]+)\s*\|", output):
        metrics.setdefault("interactive", {})[name] = float(value)
    for i in range(len(lines) - 2):
        if lines[i].startswith("Task: "):
            names, values = lines[i + 1].split(","), lines[i + 2].split(",")
            metrics.setdefault(lines[i][len("Task: "):], {}).update({n: float(v) for n, v in zip(names, values)})
    return metrics


def stage_eval(check: Check, budget: float) -> StageResult:
    """The ``eval`` stage (see the module docstring)."""
    import torch

    _, env = _data(check)
    config, overrides, size = train_settings(check)
    weights = check.cache.get("weights", "")
    source = "train_amp's model_final.pth"
    if not weights or not os.path.isfile(weights):
        from tools.bench.harness import build_random_model

        _, model = build_random_model(config, overrides=["MODEL.BACKBONE.LOAD_PRETRAINED=False"])
        weights, source = check.work_path("random_weights.pth"), "random weights"
        torch.save({"model": model.state_dict()}, weights)
        del model
    out = check.work_path("eval")
    args = ["--eval_only", "--config-file", os.path.join(ROOT, config), *overrides, f"OUTPUT_DIR={out}",
            f"MODEL.WEIGHTS={weights}", f"DATASETS.TEST=['{COCO_INTERACTIVE}']"]
    output = run_train_net(check, args, env, budget, "eval.log")
    metrics = copypaste_metrics(output)
    rows = [{"case": f"{COCO_INTERACTIVE} ({task})", "status": "pass",
             **{k: values[k] for k in EVAL_COLUMNS if k in values}} for task, values in metrics.items()]
    if not rows:
        rows = [{"case": COCO_INTERACTIVE, "status": "fail", "note": "no metrics in the output (see eval.log)"}]
    shown = "; ".join(f"{task}: " + ", ".join(f"{k} {vals[k]:.2f}" for k in EVAL_COLUMNS[:3] if k in vals)
                      for task, vals in metrics.items())
    summary = f"{config} at {size} px, weights: {source}; {shown}"
    return StageResult("eval", _verdict(rows), summary=summary, rows=rows, info={"metrics": metrics,
                                                                                 "weights": source})


# ---------------------------------------------------------------------------------------------------
# Stage: timings
# ---------------------------------------------------------------------------------------------------
def _synchronize(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


@contextlib.contextmanager
def peak_memory(device: str, into: dict) -> Iterator[None]:
    """Record the peak memory of the block in ``into``: ``peak_gpu_mib`` (CUDA, max_memory_allocated) or
    ``peak_rss_mib`` (CPU: the process's peak so far)."""
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    yield
    if device == "cuda":
        torch.cuda.synchronize()
        into["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        from tools.bench.harness import peak_rss_mb

        into["peak_rss_mib"] = peak_rss_mb()


def _timed(check: Check, row: dict, fn: Callable[[], Any], repeat: int, warmup: int, grad: bool = False) -> dict:
    """Median seconds of ``fn`` (``tools.bench.harness.measure``, synchronized on CUDA) and its peak memory."""
    from tools.bench.harness import measure

    def once(laps) -> None:
        fn()
        _synchronize(check.device)

    with peak_memory(check.device, row):
        (total,) = [t for t in measure("gpu", row["case"], "", once, repeat, warmup, grad=grad) if t.part == "total"]
    row["seconds"] = total.median
    return row


def _random_model(config: str, device: str, train: bool = False):
    from tools.bench.harness import build_random_model

    cfg, model = build_random_model(config, train=train)
    return cfg, model.to(device)


def _encode_rows(check: Check, size: int, repeat: int) -> list[dict]:
    import torch

    from semantic_sam.utils.precision import inference_autocast

    rows = []
    for name, config in (("SwinT", SWINT_CONFIG), ("SwinL", SWINL_CONFIG)):
        config = TINY_CONFIG if check.quick else config
        _, model = _random_model(config, check.device)
        model.eval()
        image = torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            x = model.preprocess_image([image]).tensor
        for precision in ("fp32", "bf16", "fp16"):
            row = {"case": f"encode {name} {size}x{size}", "config": config, "precision": precision}

            def encode() -> None:
                with inference_autocast(check.device, precision):
                    model.encode_image(x)

            rows.append(dict(_timed(check, row, encode, repeat, 2 if not check.quick else 1), status="pass"))
            rows[-1]["images_per_s"] = 1.0 / rows[-1]["seconds"]
        del model
        _free(check.device)
    return rows


def _free(device: str) -> None:
    import gc

    import torch

    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def _prompt_rows(check: Check, size: int, repeat: int) -> list[dict]:
    """Decoding clicks (all levels, binary masks at image size) and automatic mask generation, SwinT."""
    from semantic_sam.predictor import SemanticSamAutomaticMaskGenerator, SemanticSamPredictor
    from tools.bench.harness import click_points, synthetic_image

    config = TINY_CONFIG if check.quick else SWINT_CONFIG
    _, model = _random_model(config, check.device)
    model.eval()
    image, _ = synthetic_image((size, size))
    clicks = 4 if check.quick else 64
    predictor = SemanticSamPredictor(model, short_side=None)
    predictor.set_image(image)
    tokens = list(range(predictor.num_tokens))  # every granularity
    points = predictor.transform.apply_coords(click_points(clicks, (size, size)), predictor.original_size)

    def decode() -> None:
        low_res, _ = predictor.predict_low_res(points, None, tokens)
        predictor.upscale_binary(low_res)

    row = {"case": f"decode {clicks} clicks x {len(tokens)} tokens, {size}x{size}", "config": config,
           "precision": "fp32"}
    rows = [dict(_timed(check, row, decode, repeat, 2), status="pass")]
    grid = 4 if check.quick else 32
    generator = SemanticSamAutomaticMaskGenerator(model, points_per_side=grid)
    counts = []
    row = {"case": f"AMG {grid}x{grid} grid, {size}x{size}", "config": config, "precision": "fp32"}
    rows.append(dict(_timed(check, row, lambda: counts.append(len(generator.generate(image))), 1, 1),
                     status="pass", note=f"{counts[-1]} masks (random weights), generator defaults"))
    del model, predictor, generator
    _free(check.device)
    return rows


def _is_oom(e: BaseException) -> bool:
    import torch

    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


def _train_rows(check: Check, size: int, repeat: int, deadline: float) -> list[dict]:
    """SwinT training iterations (AMP float16 on CUDA) at batch 1, then doubling until out of memory, the
    largest batch, or ``deadline`` (perf_counter seconds)."""
    import torch

    from semantic_sam.solver import build_optimizer
    from tools.bench.rows_train import training_batch

    config = TINY_CONFIG if check.quick else SWINT_CONFIG
    cfg, model = _random_model(config, check.device, train=True)
    optimizer = build_optimizer(cfg, model)
    scaler = torch.amp.GradScaler(check.device, enabled=check.cuda)
    amp = torch.autocast(check.device, dtype=torch.float16, enabled=check.cuda)

    def step(batch: list[dict]) -> None:
        with amp:
            loss = sum(model(batch).values())
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    rows: list[dict] = []
    largest = 2 if check.quick else 32
    images = [training_batch(size, seed=i)[0] for i in range(min(4, largest))]  # rendering 1024 px takes ~1 s
    batch_size = 1
    while batch_size <= largest and time.perf_counter() < deadline:
        batch = [images[i % len(images)] for i in range(batch_size)]
        row = {"case": f"train SwinT batch {batch_size}, {size}x{size}", "config": config,
               "precision": "AMP fp16" if check.cuda else "fp32", "batch": batch_size}
        try:
            _timed(check, row, lambda: step(batch), repeat, 1, grad=True)
        except Exception as e:  # noqa: BLE001  (out of memory ends the search; anything else is a failure)
            optimizer.zero_grad(set_to_none=True)
            del batch
            _free(check.device)
            if not _is_oom(e):
                raise
            rows.append(dict(row, status="skipped: out of memory"))
            break
        row["iterations_per_s"] = 1.0 / row["seconds"]
        row["images_per_s"] = batch_size / row["seconds"]
        rows.append(dict(row, status="pass"))
        batch_size *= 2
    fitted = [r for r in rows if r["status"] == "pass"]
    if fitted:
        fitted[-1]["note"] = "largest batch measured" + (" (time budget)" if time.perf_counter() >= deadline else "")
    del model, optimizer
    _free(check.device)
    return rows


def stage_timings(check: Check, budget: float) -> StageResult:
    """The ``timings`` stage (see the module docstring)."""
    size = 64 if check.quick else 1024
    repeat = 1 if check.quick else 5
    start = time.perf_counter()
    rows = _encode_rows(check, size, repeat)
    rows += _prompt_rows(check, size, repeat)
    rows += _train_rows(check, size, 1 if check.quick else 3, deadline=start + budget * 0.9)
    memory_key = "peak_gpu_mib" if check.cuda else "peak_rss_mib"
    shown = [r for r in rows if "seconds" in r and r["case"].startswith(("encode SwinT", "train"))]
    summary = "; ".join(f"{r['case']} {r['precision']}: {r['seconds'] * 1000:.0f} ms, {r.get(memory_key, 0):.0f} MiB"
                        for r in shown[:3] + shown[-1:])
    return StageResult("timings", _verdict(rows), summary=summary, rows=rows)


STAGE_FUNCTIONS: dict[str, Callable[[Check, float], StageResult]] = {
    "kernel": stage_kernel,
    "parity": stage_parity,
    "pytest_cuda": stage_pytest_cuda,
    "train_amp": stage_train_amp,
    "eval": stage_eval,
    "timings": stage_timings,
}


# ---------------------------------------------------------------------------------------------------
# Packages (tools/gpu_check.sh, tools/gpu_wheels.sh)
# ---------------------------------------------------------------------------------------------------
def missing_distributions(importable: Optional[Callable[[str], bool]] = None) -> list[str]:
    """The distributions of :data:`PACKAGES` whose module this Python cannot import (``importable(name)``,
    default: ``importlib.util.find_spec``), in install order."""
    if importable is None:
        importable = _module_found
    return [dist for module, dist, _ in PACKAGES if not importable(module)]


def _module_found(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def wheel_spec() -> list[str]:
    """``name==version compiled`` of each distribution of :data:`PACKAGES`, at the version installed here
    ("compiled" 1 or 0: whether gpu_wheels.sh must fetch it per Python version)."""
    from importlib.metadata import PackageNotFoundError, version

    lines = []
    for _, dist, compiled in PACKAGES:
        try:
            lines.append(f"{dist}=={version(dist)} {int(compiled)}")
        except PackageNotFoundError as e:
            raise UsageError(f"{dist} is not installed here: run tools/setup.sh first") from e
    return lines


# ---------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # type: ignore[override]
        raise UsageError(message)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command line; raises :class:`UsageError` (one line) for a bad one."""
    p = _Parser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", metavar="DIR", help="folder for gpu_check.json, gpu_check.md and the logs")
    p.add_argument("--work", metavar="DIR", default="",
                   help="folder for the synthetic data, checkpoints and training outputs (default: a new temporary "
                        "folder, kept out of --output so that the results stay small)")
    p.add_argument("--quick", action="store_true", help="tiny sizes everywhere (a CPU run in a few minutes)")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, from: {', '.join(STAGES)}")
    p.add_argument("--list-missing", action="store_true", help="print the distributions this Python lacks, exit")
    p.add_argument("--wheel-spec", action="store_true", help="print name==version of the needed distributions, exit")
    args = p.parse_args(argv)
    if args.list_missing or args.wheel_spec:
        return args
    if not args.output:
        raise UsageError("--output DIR is required")
    if args.device not in ("cuda", "cpu"):
        raise UsageError(f"--device must be cuda or cpu, got {args.device!r}")
    names = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in names if s not in STAGES]
    if unknown or not names:
        raise UsageError(f"unknown stage {unknown[0] if unknown else '(none given)'!r} in --stages; "
                         f"known: {', '.join(STAGES)}")
    args.stages = names
    if os.path.exists(args.output) and not os.path.isdir(args.output):
        raise UsageError(f"--output {args.output} exists and is not a folder")
    return args


def environment(device: str) -> dict:
    """Versions, the device and the kernels available (``tools.bench.harness.environment`` plus the GPU)."""
    import torch

    from tools.bench.harness import environment as cpu_environment

    env = {"device": device, "python": platform.python_version(), "torch": torch.__version__,
           "cuda": torch.version.cuda, "TORCH_CUDA_ARCH_LIST": os.environ.get("TORCH_CUDA_ARCH_LIST")}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=props.name, capability=f"{props.major}.{props.minor}",
                   gpu_memory_gib=round(props.total_memory / 2**30, 1), cudnn=torch.backends.cudnn.version())
    full = cpu_environment()
    for key in ("msda_cuda_kernel", "msda_cpu_kernel", "cpu", "cpu_count", "threads", "git_commit"):
        env[key] = full.get(key)
    return env


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        args = parse_args(argv)
        if args.list_missing:
            print(" ".join(missing_distributions()))
            return 0
        if args.wheel_spec:
            print("\n".join(wheel_spec()))
            return 0
        import torch

        if args.device == "cuda" and not torch.cuda.is_available():
            raise UsageError("--device cuda but torch.cuda.is_available() is False (use --device cpu)")
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    os.makedirs(args.output, exist_ok=True)
    work = os.path.abspath(args.work) if args.work else tempfile.mkdtemp(prefix="semantic_sam_gpu_check_")
    check = Check(output=os.path.abspath(args.output), device=args.device, quick=args.quick,
                  log=lambda line: print(line, flush=True), work=work)
    env = environment(args.device)
    settings = {"quick": args.quick, "device": args.device, "stages": args.stages, "budget_s": BUDGET_S}
    check.log("[gpu_check] " + ", ".join(f"{k} {v}" for k, v in env.items() if v not in (None, "")))
    results = run_stages(check, args.stages, env, settings)
    failed = [r.name for r in results if r.failed]
    check.log(f"[gpu_check] done: {len(results) - len(failed)}/{len(results)} stages without failure"
              + (f"; failed: {', '.join(failed)}" if failed else "") + f"; report in {check.path('gpu_check.md')}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
