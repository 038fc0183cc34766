"""Atomic writes: the target holds the old or the new content, never a partial file."""
from __future__ import annotations

import os

import pytest
import torch

from semantic_sam.utils.atomic_write import atomic_torch_save, atomic_write, atomic_write_text


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "ckpt.pth"
    atomic_torch_save({"w": torch.ones(3)}, path)

    def half_then_crash(f):
        f.write(b"PK\x03\x04 partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, half_then_crash)
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(3))
    assert os.listdir(tmp_path) == ["ckpt.pth"]


def test_text_replaces_the_old_content(tmp_path):
    path = tmp_path / "last_checkpoint"
    atomic_write_text("model_0000001.pth", path)
    atomic_write_text("model_final.pth", path)
    assert path.read_text() == "model_final.pth"
    assert os.listdir(tmp_path) == ["last_checkpoint"]
