"""tools/benchmark.py: every row runs at tiny sizes, prints the tables and writes the JSON it documents."""
import json
import math

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
    "--vocabulary-names", "2", "--unicl-context", "8",
    "--generic-config", "configs/semantic_sam_tiny_generic.yaml", "--panoptic-sizes", "64x96",
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
    assert rows == {"ms_deform_attn", "encode", "decode", "amg", "vocabulary", "panoptic", "train"}
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
    # decoding with labels next to decoding without, for every case
    for case in {t["case"] for t in timings if t["row"] == "decode"}:
        labelled = [t for t in timings if t["row"] == "decode" and t["case"] == case and t["variant"] == "after+labels"]
        assert {t["part"] for t in labelled} == {"decoder", "upsampling", "total"}, case
    # the vocabulary row: the first 2 names, tiny and UniCL-size text encoders, "after" only
    vocab = [t for t in timings if t["row"] == "vocabulary"]
    assert [t["case"] for t in vocab] == ["2 + 0 names x 81 templates, tiny text encoder",
                                          "2 + 0 names x 81 templates, UniCL 512x12, context 8"]
    assert all(t["variant"] == "after" and "2 names x 81 templates = 162 texts" in t["note"] for t in vocab)
    assert "width=512:heads=8:layers=12:context=8" in vocab[1]["note"]
    # the panoptic row: float32 and bf16, every stage of model.segment, the counts of its outputs in the note
    panoptic = [t for t in timings if t["row"] == "panoptic"]
    assert {(t["case"], t["variant"]) for t in panoptic} == {
        ("semantic_sam_tiny_generic 64x96, 133 classes", v) for v in ("after", "after+bf16")}
    for v in ("after", "after+bf16"):
        assert [t["part"] for t in panoptic if t["variant"] == v] == [
            "encode", "decoder", "mask upsampling", "semantic", "panoptic", "instance", "total"]
    assert all(t["note"].startswith("20 queries x 133 classes, padded 64x96;") and "instances" in t["note"]
               for t in panoptic)
    assert {s["variant"] for s in payload["summary"] if s["row"] == "panoptic"} == {"after", "after+bf16"}
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


def test_bad_size_is_a_clear_error():
    with pytest.raises(SystemExit):
        benchmark.parse_args(["--encode-sizes", "640by853"])
    assert benchmark.parse_size("640x853") == (640, 853)
