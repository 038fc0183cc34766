"""Capturing and restoring the random generators, in a weights-only checkpoint."""
from __future__ import annotations

import random

import numpy as np
import torch

from semantic_sam.engine.rng_state import capture_rng_state, preserved_rng_state, restore_rng_state


def _draws() -> tuple:
    return random.random(), random.gauss(0, 1), float(np.random.rand()), float(np.random.randn()), float(torch.rand(()))


def test_restored_states_repeat_the_draws_after_a_weights_only_round_trip(tmp_path):
    random.seed(7), np.random.seed(7), torch.manual_seed(7)
    random.gauss(0, 1), np.random.randn()  # leave a cached Gaussian in both generators
    state = capture_rng_state()
    torch.save(state, tmp_path / "rng.pth")
    expected = _draws()
    _draws()
    restore_rng_state(torch.load(tmp_path / "rng.pth", weights_only=True))
    assert _draws() == expected


def test_preserved_rng_state_undoes_the_draws_of_a_block():
    torch.manual_seed(3), random.seed(3), np.random.seed(3)
    expected = _draws()
    torch.manual_seed(3), random.seed(3), np.random.seed(3)
    with preserved_rng_state():
        _draws()
    assert _draws() == expected
