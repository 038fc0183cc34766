"""The data in tests/fixtures that several test modules read: paths, the released checkpoints' key
lists, the tiny parity config and the reference's golden tensors."""
from __future__ import annotations

import os

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
PARITY = os.path.join(FIXTURES, "parity_tiny")


def reference_keys(variant: str, prefix: str = "") -> dict[str, tuple[int, ...]]:
    """``{name without prefix: shape}`` of the released SwinT/SwinL checkpoint entries under ``prefix``."""
    keys = {}
    with open(os.path.join(FIXTURES, f"state_dict_keys_swin{variant}.txt")) as f:
        for line in f:
            name, shape = line.rstrip("\n").split(" ", 1)
            if name.startswith(prefix):
                keys[name[len(prefix) :]] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    return keys


def tiny_cfg(*overrides: str):
    """The tiny parity config with ``KEY=VALUE`` overrides."""
    from semantic_sam.config import load_config

    return load_config(os.path.join(PARITY, "tiny_parity.yaml"), list(overrides))


def load_golden() -> dict[str, torch.Tensor]:
    """The reference's golden tensors for the tiny parity model."""
    return torch.load(os.path.join(PARITY, "golden.pt"), map_location="cpu", weights_only=True)
