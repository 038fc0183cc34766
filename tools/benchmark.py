"""CPU timings and peak memory of Semantic-SAM, before (reference-style) and after (ours), as tables and JSON.

Usage::

    python -m tools.benchmark                         # every row at full size (10-15 min on 2 cores)
    python -m tools.benchmark --quick                 # every row at small sizes (~3 min)
    python -m tools.benchmark --rows encode,decode --threads 2 --json bench.json

(from the repository root: it imports the ``tools.bench`` package).

Rows (``--rows``; each has cases, each case a "before" and an "after" variant measured in the same run):

* ``ms_deform_attn``: one pixel-decoder deformable-attention op at 1024 px: the reference's algorithm
  (grid_sample per feature level) against each of our implementations.
* ``encode``: image encoding (backbone, pixel decoder, total) for the SwinT and SwinL configs at
  1024x1024 and 640x853, random weights; plus "after+bf16" (bfloat16 autocast, pixel decoder included).
* ``decode``: 1 and 64 clicks x all levels on an encoded 640x853 image, masks at image size; "after+labels"
  also names every mask (133 COCO panoptic object + 30 Pascal-Part part logits, argmax), with a UniCL-size
  text encoder and random class embeddings.
* ``amg``: automatic mask generation with a 32x32 grid on a 640x853 and a 1024x1024 image (resized to
  640 px short side before encoding, as the demo; masks at image size), default thresholds; and
  "filters off" (predicted IoU > -inf, stability >= 0; 16x16 grid) at 640x853 so the post-processing
  cost is visible (random weights pass almost nothing through the default filters).
* ``vocabulary``: evaluation class embeddings (81 templates per name, averaged) of COCO panoptic's 133 objects
  and Pascal-Part's 30 parts through ``model.class_embeddings`` on a fresh in-memory cache, with the tiny text
  encoder and with UniCL at the reference's size (512 wide, 12 layers, 8 heads; ``--unicl-context``), random
  weights; ``--vocabulary-names`` times the first N names instead (the note scales the time to all 163).
  "after" only: the reference never ran its text path.
* ``panoptic``: generic segmentation of one image through ``model.segment`` (panoptic + instance + semantic
  outputs, the 133 COCO panoptic classes, class embeddings computed beforehand and not timed) with the SwinT
  COCO + SA-1B config's 300 generic queries (``--generic-config``), random weights, at 640x853 and 1024x1024
  (``--panoptic-sizes``); parts encode / decoder / mask upsampling / semantic / panoptic / instance;
  "after" (float32) and "after+bf16" only: the reference has no CPU path for it.
* ``train``: one training iteration (forward, backward, optimizer step) of the tiny config at its image
  size and of SwinT at 1024, one synthetic image with masks in the SA-1B mapper's output format.

"before" is our model with the reference's choices: deformable attention on the per-feature-level grid_sample
path (``semantic_sam.ops.force_pytorch``), no decoder memory cache, no attention mask between prompts,
every decoder layer's outputs computed, every candidate mask upsampled to full resolution before any
filter (see :class:`ReferenceOrderGenerator`). "after" is our defaults. Inference runs under
``torch.inference_mode``.

Every (row, case, variant) runs in a fresh subprocess of this script (hidden ``--single-job``), so its
peak RSS (``ru_maxrss``) is its own; ``--in-process`` runs them here instead (faster, but peak memory
is then cumulative). Medians of ``--repeat`` timed runs after ``--warmup`` untimed ones; the expensive
jobs (SwinL encoding, AMG, panoptic segmentation, SwinT training) cap the repeats at ``--heavy-repeat`` (1)
and warm up on a small input (``--full-size-warmup`` to warm up at full size). Wall-clock and process CPU seconds are
both reported. Load averages at the start and the end are printed: on a loaded machine compare the
before/after ratios, not absolute times, and pass ``--omp-wait-policy PASSIVE`` (or ``--threads 1``):
spinning OpenMP threads on oversubscribed cores make 2-thread timings 10-50x slower and meaningless.

Code: ``tools/bench/`` holds the pieces: ``harness`` (records, measuring, environment, shared inputs),
``rows_model`` (ms_deform_attn, encode, decode), ``rows_amg``, ``rows_text`` (vocabulary),
``rows_generic`` (panoptic), ``rows_train``,
``runner`` (a job here or in a subprocess) and ``report`` (targets and tables); this file is the command line.
To add a row: in a ``tools/bench/rows_*.py`` module, ``@row("name", "what it measures", jobs=fn_listing_jobs)
def bench_name(args, job)`` returning a list of :class:`~tools.bench.harness.Timing`, and import the module here.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

if __name__ == "__main__" and not __package__:
    raise SystemExit("run it from the repository root as a module: python -m tools.benchmark [options]")

# importing the row modules registers the rows, in this order
import tools.bench.rows_model  # noqa: E402,F401
import tools.bench.rows_amg  # noqa: E402,F401
import tools.bench.rows_text  # noqa: E402,F401
import tools.bench.rows_generic  # noqa: E402,F401
import tools.bench.rows_train  # noqa: E402,F401
from tools.bench.harness import (  # noqa: E402
    GENERIC_CONFIG,
    ROWS,
    SWINL_CONFIG,
    SWINT_CONFIG,
    TINY_CONFIG,
    TINY_TEXT_CONFIG,
    Timing,
    environment,
    load_average,
    parse_size,
    parse_sizes,
)
from tools.bench.report import environment_line, format_details, format_summary, summary_rows  # noqa: E402
from tools.bench.runner import apply_threads, run_job_here, run_job_subprocess, single_job_main  # noqa: E402


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
    "vocabulary_names": 16,
    "panoptic_sizes": "160x213",
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
    "vocabulary_names": 0,
    "panoptic_sizes": "640x853,1024x1024",
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
                   help="cap on timed runs for SwinL encoding, AMG, panoptic segmentation and SwinT training "
                        "(default 1)")
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
    p.add_argument("--vocabulary-names", type=int, default=None,
                   help="vocabulary row: encode the first N of the 163 names (0 = all; quick: 16)")
    p.add_argument("--unicl-context", type=int, default=77,
                   help="vocabulary row: context length of the UniCL-size encoder (77; 00_reference.yaml has 18)")
    p.add_argument("--panoptic-sizes", default=None, help="panoptic row: image HxW list (640x853,1024x1024)")
    p.add_argument("--full-size-warmup", action="store_true",
                   help="warm SwinL encoding, panoptic segmentation and SwinT training up at full size "
                        "(default: at 256 px)")
    p.add_argument("--no-bf16", dest="bf16", action="store_false",
                   help="skip the bfloat16 encode and panoptic variants")
    p.add_argument("--swint-config", default=SWINT_CONFIG)
    p.add_argument("--swinl-config", default=SWINL_CONFIG)
    p.add_argument("--generic-config", default=GENERIC_CONFIG,
                   help="panoptic row: a config with generic queries and a text encoder")
    p.add_argument("--tiny-config", default=TINY_CONFIG)
    p.add_argument("--tiny-text-config", default=TINY_TEXT_CONFIG,
                   help="vocabulary row: config with the tiny text encoder")
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
        args.panoptic_sizes = parse_sizes(args.panoptic_sizes)
        args.decode_prompts = [int(n) for n in str(args.decode_prompts).split(",") if n.strip()]
    except (argparse.ArgumentTypeError, ValueError) as e:
        p.error(str(e))
    if args.amg_short_side == 0:
        args.amg_short_side = None
    if args.repeat < 1 or args.warmup < 0:
        p.error("--repeat must be >= 1 and --warmup >= 0")
    if args.vocabulary_names < 0 or args.unicl_context < 2:
        p.error("--vocabulary-names must be >= 0 and --unicl-context >= 2")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.single_job:
        return single_job_main(args.single_job)
    apply_threads(args)
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
