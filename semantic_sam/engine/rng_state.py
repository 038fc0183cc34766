"""Capture and restore every random number generator a training process draws from.

The states are stored as plain ints, floats, lists and tensors, so a checkpoint holding them
loads with ``torch.load(weights_only=True)`` (no unpickling of NumPy or Python objects).
"""
from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import torch

__all__ = ["capture_rng_state", "restore_rng_state", "preserved_rng_state", "seeded_rng_state"]


def capture_rng_state() -> dict[str, Any]:
    """The states of Python's ``random``, NumPy's global generator, torch's CPU generator and,
    when CUDA is initialized, every CUDA device's generator."""
    version, mt, gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {"version": int(version), "state": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "kind": str(np_kind),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`. A saved CUDA state is restored when CUDA is usable."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state(
        (npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextmanager
def preserved_rng_state() -> Iterator[None]:
    """Run a block (e.g. an evaluation during training) without moving the CPU generators on:
    Python's, NumPy's and torch's states (and CUDA's, when initialized) are restored afterwards."""
    saved = capture_rng_state()
    try:
        yield
    finally:
        restore_rng_state(saved)


@contextmanager
def seeded_rng_state(seed: int) -> Iterator[None]:
    """Seed Python's, NumPy's and torch's CPU generators with ``seed`` (0 <= seed < 2**32) for a
    block, then put back the states they had before. CUDA generators are not touched."""
    py, npy, cpu = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed)
    torch.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)
        torch.set_rng_state(cpu)
