"""Run a benchmark job in this process or in a fresh one (its own peak memory)."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import traceback
from dataclasses import asdict

import torch

from tools.bench.harness import ROOT, ROWS, Job, Timing, peak_rss_mb, variant_context

# the CLI that runs one job with --single-job, as a module from the repository root
CLI = ["-m", "tools.benchmark"]


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
        cmd = [sys.executable, *CLI, "--single-job", spec_path]
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
    apply_threads(args)
    job = Job(**spec["job"])
    timings = run_job_here(args, job)
    with open(spec["out"], "w") as f:
        json.dump({"timings": [asdict(t) for t in timings]}, f)
    return 0


def apply_threads(args) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
