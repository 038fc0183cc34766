"""The pieces of ``tools/benchmark.py``: harness, rows, runner and report."""
