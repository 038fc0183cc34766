"""tools/benchmark.py: every row runs at tiny sizes, prints the tables and writes the JSON it documents."""
import json
import math
import os

import numpy as np
import pytest
import torch

from tools import benchmark

TINY = "configs/semantic_sam_tiny_cpu.yaml"
TINY_ARGS = [
    "--quick", "--threads", "1", "--repeat", "1", "--warmup", "0",
    "--swint-config", TINY, "--swinl-config", TINY,
    "--image-size", "64", "--encode-sizes", "64x96", "--decode-size", "64x96", "--decode-prompts", "1,3",
    "--amg-sizes", "64x96", "--amg-points-per-side", "2", "--amg-off-points-per-side", "2",
    "--train-size", "64", "--tiny-train-size", "64",
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    import io
    from contextlib import redirect_stdout

    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = benchmark.main(TINY_ARGS + ["--in-process", "--json", str(out)])
    torch.set_num_threads(1)
    with open(out) as f:
        payload = json.load(f)
    return rc, buf.getvalue(), payload


def test_every_row_runs_and_writes_json(tiny_run):
    rc, table, payload = tiny_run
    assert rc == 0
    env = payload["environment"]
    for key in ("torch", "threads", "cpu", "cpu_count", "msda_cpu_kernel", "load_average_start", "load_average_end",
                "native_bf16", "memory_mode"):
        assert key in env, key
    assert env["torch"] == torch.__version__ and env["threads"] == 1
    timings = payload["timings"]
    skipped = [(t["row"], t["case"], t["variant"], t["skipped"]) for t in timings if t["skipped"]]
    assert not skipped, skipped
    rows = {t["row"] for t in timings}
    assert rows == {"ms_deform_attn", "encode", "decode", "amg", "train"}
    for t in timings:
        for key in ("row", "case", "variant", "part", "seconds", "cpu_seconds", "median", "peak_rss_mb", "note"):
            assert key in t, key
        assert len(t["seconds"]) == 1 and t["seconds"][0] >= 0 and t["median"] == t["seconds"][0]
        assert t["peak_rss_mb"] > 0
    # every model row has a before and an after for each case; encode and decode have their stages
    for r in ("encode", "decode", "amg", "train"):
        cases = {t["case"] for t in timings if t["row"] == r}
        for case in cases:
            variants = {t["variant"] for t in timings if t["row"] == r and t["case"] == case}
            assert {"before", "after"} <= variants, (r, case, variants)
    parts = {(t["row"], t["part"]) for t in timings}
    assert {("encode", "backbone"), ("encode", "pixel decoder"), ("decode", "decoder"), ("decode", "upsampling"),
            ("train", "forward"), ("train", "backward"), ("train", "optimizer step")} <= parts
    assert any(t["variant"] == "after+bf16" for t in timings if t["row"] == "encode")
    # the AMG "filters off" case keeps at least one mask
    off = [t for t in timings if t["row"] == "amg" and "filters off" in t["case"]]
    assert off and all(not t["note"].startswith("0 masks") for t in off)


def test_summary_pairs_before_and_after(tiny_run):
    _, table, payload = tiny_run
    summary = payload["summary"]
    assert summary
    for s in summary:
        for key in ("row", "case", "part", "variant", "before_s", "after_s", "speedup", "target_s",
                    "before_peak_mb", "after_peak_mb"):
            assert key in s, key
        if s["before_s"] and s["after_s"]:
            assert math.isclose(s["speedup"], s["before_s"] / s["after_s"], rel_tol=1e-9)
    # the printed table: environment line, summary header, details header, one line per timing
    lines = table.splitlines()
    assert lines[0].startswith(f"torch {torch.__version__} | threads 1")
    assert "load avg" in lines[0]
    assert any(line.startswith("row") and "before s" in line and "speedup" in line for line in lines)
    assert any(line.startswith("row") and "median s" in line and "peak MB" in line for line in lines)
    assert sum(line.startswith("encode ") for line in lines) >= 2 * len([s for s in summary if s["row"] == "encode"])


def test_targets_are_attached_to_the_full_size_cases():
    timings = [
        benchmark.Timing("decode", "1 click x all levels, 640x853", "before", seconds=[0.2], peak_rss_mb=900.0),
        benchmark.Timing("decode", "1 click x all levels, 640x853", "after", seconds=[0.04], peak_rss_mb=800.0),
        benchmark.Timing("amg", "32x32 grid, 640x853, default thresholds", "before", seconds=[30.0]),
        benchmark.Timing("amg", "32x32 grid, 640x853, default thresholds", "after", skipped="no memory"),
    ]
    rows = benchmark.summary_rows(timings)
    assert len(rows) == 2
    decode, amg = rows
    assert decode["target_s"] == 0.05 and decode["reference_s"] == 0.127
    assert math.isclose(decode["speedup"], 5.0) and math.isclose(decode["needed_speedup"], 0.127 / 0.05)
    assert decode["before_peak_mb"] == 900.0 and decode["after_peak_mb"] == 800.0
    assert amg["target_peak_gb"] == 2.5 and amg["skipped"] == "no memory" and amg["after_s"] is None
    assert "skipped: no memory" in benchmark.format_summary(rows)


def test_subprocess_job_reports_its_own_peak_memory():
    args = benchmark.parse_args(TINY_ARGS + ["--rows", "ms_deform_attn"])
    (job,) = benchmark.ROWS["ms_deform_attn"].jobs(args)
    timings = benchmark.run_job_subprocess(args, job)
    assert timings and not any(t.skipped for t in timings), [t.skipped for t in timings]
    assert {t.variant for t in timings} >= {"before", "after", "grid_sample path", "sparse CSR path"}
    assert all(t.peak_rss_mb and t.peak_rss_mb > 50 for t in timings)


def test_measure_splits_parts_and_total():
    calls = []

    def once(laps):
        calls.append(torch.is_inference_mode_enabled())
        laps.lap("a")
        laps.lap("b")

    out = benchmark.measure("r", "c", "after", once, repeat=2, warmup=1)
    assert [t.part for t in out] == ["a", "b", "total"]
    assert calls == [True, True, True]  # warm-up + 2 timed, all under inference_mode
    assert all(len(t.seconds) == 2 for t in out)
    total = out[-1]
    assert all(total.seconds[i] >= out[0].seconds[i] + out[1].seconds[i] - 1e-6 for i in range(2))
    grad = benchmark.measure("r", "c", "after", lambda laps: calls.append(torch.is_grad_enabled()), 1, 0, grad=True)
    assert calls[-1] is True and grad[-1].part == "total"


def test_uncompressed_rle_matches_pycocotools():
    from semantic_sam.predictor.amg_utils import coco_rle_to_mask

    g = torch.Generator().manual_seed(0)
    masks = torch.rand(4, 7, 5, generator=g) > 0.5
    masks[1] = False
    masks[2] = True
    masks[3, 0, 0] = True
    rles = benchmark.masks_to_uncompressed_rle(masks)
    for m, rle in zip(masks, rles):
        assert rle["size"] == [7, 5] and sum(rle["counts"]) == 35
        np.testing.assert_array_equal(coco_rle_to_mask(rle), m.numpy())


def test_bad_size_is_a_clear_error():
    with pytest.raises(SystemExit):
        benchmark.parse_args(["--encode-sizes", "640by853"])
    assert benchmark.parse_size("640x853") == (640, 853)


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="Linux /proc")
def test_memory_helpers():
    assert benchmark.current_rss_mb() > 10
    assert benchmark.peak_rss_mb() >= benchmark.current_rss_mb() * 0.5
