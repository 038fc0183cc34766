"""Fixtures: the geometric stand-in model and the tiny real model with its parity checkpoint."""
from __future__ import annotations

import os

import pytest
import torch

from tests.predictor.disk_model import FIXTURES, DiskModel


@pytest.fixture
def disk_model() -> DiskModel:
    return DiskModel().eval()


@pytest.fixture(scope="session")
def tiny_model():
    """The tiny parity model with its checkpoint (skipped while the model code is not importable)."""
    torch.set_num_threads(1)
    try:
        import semantic_sam
        from semantic_sam.checkpoint import load_checkpoint
        from semantic_sam.config import load_config
    except ImportError as e:  # pragma: no cover - only while the model is being written
        pytest.skip(f"model code not available: {e}")
    cfg = load_config(os.path.join(FIXTURES, "tiny_parity.yaml"))
    model = semantic_sam.build_model(cfg) if hasattr(semantic_sam, "build_model") else None
    if model is None:
        from semantic_sam.build import build_model

        model = build_model(cfg)
    load_checkpoint(model, os.path.join(FIXTURES, "tiny_parity.pth"))
    return model.eval()
