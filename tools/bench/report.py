"""Benchmark tables: the summary (before / after / reference / target) and every measured line."""
from __future__ import annotations

import math
from typing import Optional

from tools.bench.harness import BEFORE, Timing


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
    """One entry per (row, case, part, variant != before): before (None for a row without one) and that
    variant's medians side by side, with the reference's figure and our target where CPU_SPEED.md gives them."""
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
            if name == BEFORE:
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
