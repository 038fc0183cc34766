"""tools/bench/harness.py: measuring, memory helpers, size parsing."""
import os

import pytest
import torch

from tools.bench import harness


def test_measure_splits_parts_and_total():
    calls = []

    def once(laps):
        calls.append(torch.is_inference_mode_enabled())
        laps.lap("a")
        laps.lap("b")

    out = harness.measure("r", "c", "after", once, repeat=2, warmup=1)
    assert [t.part for t in out] == ["a", "b", "total"]
    assert calls == [True, True, True]  # warm-up + 2 timed, all under inference_mode
    assert all(len(t.seconds) == 2 for t in out)
    total = out[-1]
    assert all(total.seconds[i] >= out[0].seconds[i] + out[1].seconds[i] - 1e-6 for i in range(2))
    grad = harness.measure("r", "c", "after", lambda laps: calls.append(torch.is_grad_enabled()), 1, 0, grad=True)
    assert calls[-1] is True and grad[-1].part == "total"


def test_parse_size_reads_height_x_width_and_names_bad_input():
    assert harness.parse_size("640x853") == (640, 853)
    with pytest.raises(Exception, match="HEIGHTxWIDTH"):
        harness.parse_size("640by853")
    with pytest.raises(Exception, match="too small"):
        harness.parse_size("16x16")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="Linux /proc")
def test_memory_helpers():
    assert harness.current_rss_mb() > 10
    assert harness.peak_rss_mb() >= harness.current_rss_mb() * 0.5
