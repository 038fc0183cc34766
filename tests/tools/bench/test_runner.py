"""tools/bench/runner.py: a job in its own process reports its own peak memory."""
from tools import benchmark
from tools.bench.runner import run_job_subprocess

def test_subprocess_job_reports_its_own_peak_memory():
    args = benchmark.parse_args(
        ["--quick", "--threads", "1", "--repeat", "1", "--warmup", "0", "--image-size", "64"]
        + ["--rows", "ms_deform_attn"]
    )
    (job,) = benchmark.ROWS["ms_deform_attn"].jobs(args)
    timings = run_job_subprocess(args, job)
    assert timings and not any(t.skipped for t in timings), [t.skipped for t in timings]
    assert {t.variant for t in timings} >= {"before", "after", "grid_sample path", "sparse CSR path"}
    assert all(t.peak_rss_mb and t.peak_rss_mb > 50 for t in timings)
