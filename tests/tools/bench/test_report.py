"""tools/bench/report.py: the summary pairs before/after and attaches the reference figures and targets."""
import math

from tools.bench.harness import Timing
from tools.bench.report import format_summary, summary_rows


def test_targets_are_attached_to_the_full_size_cases():
    timings = [
        Timing("decode", "1 click x all levels, 640x853", "before", seconds=[0.2], peak_rss_mb=900.0),
        Timing("decode", "1 click x all levels, 640x853", "after", seconds=[0.04], peak_rss_mb=800.0),
        Timing("amg", "32x32 grid, 640x853, default thresholds", "before", seconds=[30.0]),
        Timing("amg", "32x32 grid, 640x853, default thresholds", "after", skipped="no memory"),
    ]
    rows = summary_rows(timings)
    assert len(rows) == 2
    decode, amg = rows
    assert decode["target_s"] == 0.05 and decode["reference_s"] == 0.127
    assert math.isclose(decode["speedup"], 5.0) and math.isclose(decode["needed_speedup"], 0.127 / 0.05)
    assert decode["before_peak_mb"] == 900.0 and decode["after_peak_mb"] == 800.0
    assert amg["target_peak_gb"] == 2.5 and amg["skipped"] == "no memory" and amg["after_s"] is None
    assert "skipped: no memory" in format_summary(rows)


def test_a_row_without_before_lists_every_variant():
    timings = [
        Timing("panoptic", "SwinT 640x853, 133 classes", "after", seconds=[10.0], peak_rss_mb=5000.0),
        Timing("panoptic", "SwinT 640x853, 133 classes", "after+bf16", seconds=[8.0], peak_rss_mb=4900.0),
    ]
    rows = summary_rows(timings)
    assert [(r["variant"], r["after_s"], r["before_s"], r["speedup"]) for r in rows] == [
        ("after", 10.0, None, None), ("after+bf16", 8.0, None, None)]
    assert rows[1]["after_peak_mb"] == 4900.0
