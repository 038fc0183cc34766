"""TrainingCheckpointer: what --resume may read, and how it copes with broken files."""
from __future__ import annotations

import logging
import os
import pickle

import pytest
import torch
from torch import nn

from semantic_sam.checkpoint import CheckpointError, CheckpointMismatchError
from semantic_sam.engine.checkpointer import TrainingCheckpointer


class Counter:
    """A checkpointable with a state."""

    def __init__(self, value: int = 0):
        self.value = value

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = state["value"]


def _model(fill: float) -> nn.Module:
    model = nn.Linear(3, 2)
    nn.init.constant_(model.weight, fill)
    nn.init.constant_(model.bias, fill)
    return model


@pytest.fixture()
def run_dir(tmp_path) -> str:
    """A run that saved iterations 1 and 3 (weights 1.0 and 3.0) and named model_0000003."""
    out = str(tmp_path / "run")
    os.makedirs(out)
    for it in (1, 3):
        checkpointer = TrainingCheckpointer(_model(float(it)), out, counter=Counter(10 * it))
        checkpointer.save(f"model_{it:07d}", iteration=it)
    return out


def _resume(out: str):
    model, counter = _model(0.0), Counter()
    extra = TrainingCheckpointer(model, out, counter=counter).resume()
    return float(model.weight.detach()[0, 0]), counter.value, extra


def test_resume_loads_the_named_checkpoint_with_its_checkpointables(run_dir):
    with open(os.path.join(run_dir, "last_checkpoint")) as f:
        assert f.read() == "model_0000003.pth"
    weight, counter, extra = _resume(run_dir)
    assert (weight, counter, extra["iteration"]) == (3.0, 30, 3)
    assert extra["path"] == os.path.join(run_dir, "model_0000003.pth")
    assert not [f for f in os.listdir(run_dir) if ".tmp" in f]


@pytest.mark.parametrize("damage", ["truncate", "empty-tag", "missing-tag", "tag-names-missing-file"])
def test_resume_falls_back_to_the_newest_readable_checkpoint(run_dir, damage, caplog):
    newest, tag = os.path.join(run_dir, "model_0000003.pth"), os.path.join(run_dir, "last_checkpoint")
    expected = 3.0
    if damage == "truncate":
        with open(newest, "r+b") as f:
            f.truncate(os.path.getsize(newest) // 2)
        expected = 1.0
    elif damage == "empty-tag":
        open(tag, "w").close()
    elif damage == "missing-tag":
        os.remove(tag)
    else:
        with open(tag, "w") as f:
            f.write("model_0000009.pth")
    model = _model(0.0)
    checkpointer = TrainingCheckpointer(model, run_dir)
    assert checkpointer.has_checkpoint()
    with caplog.at_level(logging.WARNING):
        checkpointer.resume()
    assert float(model.weight.detach()[0, 0]) == expected
    if damage in ("truncate", "tag-names-missing-file"):
        assert "cannot use checkpoint" in caplog.text


def test_no_readable_checkpoint_is_an_error(run_dir):
    for name in ("model_0000001.pth", "model_0000003.pth"):
        with open(os.path.join(run_dir, name), "wb") as f:
            f.write(b"\x00garbage")
    with pytest.raises(CheckpointError, match="no readable checkpoint"):
        TrainingCheckpointer(_model(0.0), run_dir).resume()


@pytest.mark.parametrize("name", ["../elsewhere.pth", "/tmp/elsewhere.pth", "sub/model.pth", ".."])
def test_last_checkpoint_may_only_name_a_file_of_its_folder(run_dir, name):
    with open(os.path.join(run_dir, "last_checkpoint"), "w") as f:
        f.write(name)
    with pytest.raises(CheckpointError, match="may only name a checkpoint file inside"):
        TrainingCheckpointer(_model(0.0), run_dir).resume()


class _Payload:
    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.mark.parametrize("name", ["planted.pkl", "planted.pth"])
@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")  # torch's, about the planted file
def test_a_planted_pickle_is_refused_without_running_it(run_dir, tmp_path, name):
    payload = _Payload()
    payload.marker = str(tmp_path / "code_ran")
    with open(os.path.join(run_dir, name), "wb") as f:
        pickle.dump({"model": {"weight": payload}}, f)
    with open(os.path.join(run_dir, "last_checkpoint"), "w") as f:
        f.write(name)
    model = _model(0.0)
    checkpointer = TrainingCheckpointer(model, run_dir)
    with pytest.raises(CheckpointError, match="refusing to load"):
        checkpointer.load(os.path.join(run_dir, name))
    checkpointer.resume()  # skips the planted file, resumes from a real checkpoint
    assert float(model.weight.detach()[0, 0]) == 3.0
    assert not os.path.exists(payload.marker)


def test_resume_is_strict(run_dir):
    with pytest.raises(CheckpointMismatchError, match="missing"):
        TrainingCheckpointer(nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2)), run_dir).resume()
    with pytest.raises(CheckpointMismatchError, match="shape mismatches"):
        TrainingCheckpointer(nn.Linear(4, 2), run_dir).resume()


def test_non_finite_weights_are_refused(tmp_path):
    model = _model(1.0)
    with torch.no_grad():
        model.weight[0, 1] = float("nan")
    TrainingCheckpointer(model, str(tmp_path)).save("model_final", iteration=0)
    with pytest.raises(CheckpointError, match="NaN or infinite values, e.g. weight"):
        TrainingCheckpointer(_model(0.0), str(tmp_path)).load(os.path.join(tmp_path, "model_final.pth"))


def test_per_rank_states_go_with_the_save_of_their_iteration(tmp_path):
    calls = []
    checkpointer = TrainingCheckpointer(_model(1.0), str(tmp_path), per_rank_state=lambda: calls.append(1) or {"k": 5})
    checkpointer.collect_per_rank(4)
    checkpointer.save("model_0000004", iteration=4)
    checkpointer.save("model_0000005", iteration=5)  # nothing collected for 5: nothing stored
    read = lambda n: torch.load(os.path.join(tmp_path, n), weights_only=True)  # noqa: E731
    assert read("model_0000004.pth")["per_rank"] == [{"k": 5}]
    assert "per_rank" not in read("model_0000005.pth")
    assert calls == [1]
