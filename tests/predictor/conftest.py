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
    """The tiny parity model with its checkpoint (random weights, reference-format file)."""
    from semantic_sam.build import build_model
    from semantic_sam.checkpoint import load_checkpoint
    from semantic_sam.config import load_config

    torch.set_num_threads(1)
    model = build_model(load_config(os.path.join(FIXTURES, "tiny_parity.yaml")))
    load_checkpoint(model, os.path.join(FIXTURES, "tiny_parity.pth"))
    return model.eval()
