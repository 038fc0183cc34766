"""The resumable training stream: positions, ranks, workers, seeding and resume."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from semantic_sam.data.train_stream import (
    DataStreamStateError,
    JointTrainLoader,
    ResumableTrainLoader,
    TrainingStream,
    dataset_seed,
)


def _draw(record: dict) -> dict:
    """A mapper whose output depends on the record and on all three global generators."""
    return {"index": record["index"], "py": random.random(), "np": float(np.random.rand()),
            "torch": float(torch.rand(()))}


DATASET = [{"index": i} for i in range(7)]


def _batches(loader, n: int) -> list[list[dict]]:
    out = []
    for batch in loader:
        out.append(batch)
        if len(out) == n:
            break
    return out


def test_every_epoch_is_a_permutation_and_ranks_split_the_positions():
    ranks = [TrainingStream(DATASET, _draw, seed=3, images_per_process=2, rank=r, world_size=2) for r in (0, 1)]
    # Batches 0..6 of both ranks cover positions 0..27 = four epochs of 7 records, each position once.
    positions = sorted(p for s in ranks for b in range(7) for p in s.positions(b))
    assert positions == list(range(28))
    indices = [ranks[0].record_index(p) for p in range(28)]
    for epoch in range(4):
        assert sorted(indices[7 * epoch: 7 * epoch + 7]) == list(range(7))
    assert indices[:7] != indices[7:14]  # each epoch has its own order
    assert ranks[0].positions(0) == [0, 2] and ranks[1].positions(0) == [1, 3]


def test_mapping_is_seeded_by_position_and_leaves_the_global_generators_alone():
    stream = TrainingStream(DATASET, _draw, seed=3, images_per_process=1)
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    before = (random.random(), float(np.random.rand()), float(torch.rand(())))
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    first = stream.map_position(5)
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == before
    random.seed(2), np.random.seed(2), torch.manual_seed(2)  # other global states: same sample
    assert stream.map_position(5) == first
    assert stream.map_position(6) != first
    assert TrainingStream(DATASET, _draw, seed=4, images_per_process=1).map_position(5) != first


@pytest.mark.parametrize("num_workers", [0, 2])
def test_batches_do_not_depend_on_the_data_workers(num_workers):
    reference = TrainingStream(DATASET, _draw, seed=5, images_per_process=3)
    expected = [reference.batch(b) for b in range(5)]
    stream = TrainingStream(DATASET, _draw, seed=5, images_per_process=3)
    loader = ResumableTrainLoader(stream, num_workers=num_workers)
    assert _batches(loader, 5) == expected
    assert loader.state_dict() == {"seed": 5, "position": 15}


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_loader_restored_from_its_state_continues_the_stream(num_workers):
    def rank1_loader(seed: int, workers: int = 0) -> ResumableTrainLoader:
        stream = TrainingStream(DATASET, _draw, seed=seed, images_per_process=2, rank=1, world_size=2)
        return ResumableTrainLoader(stream, num_workers=workers)

    expected = _batches(rank1_loader(5), 6)[3:]
    first = rank1_loader(5)
    _batches(first, 3)
    state = first.state_dict()
    assert state == {"seed": 5, "position": 12}  # 3 steps x 2 images x 2 processes
    resumed = rank1_loader(99, num_workers)
    resumed.load_state_dict(state)
    assert _batches(resumed, 3) == expected


def test_bad_rows_are_counted_and_state_cannot_be_loaded_mid_stream():
    def flaky(record):
        return {"index": record["index"], "bad_rows": 2 if record["index"] == 0 else 0}

    loader = ResumableTrainLoader(TrainingStream(DATASET, flaky, seed=0, images_per_process=7))
    _batches(loader, 1)  # one epoch: record 0 once
    assert loader.bad_rows == 2
    with pytest.raises(RuntimeError, match="before the first batch"):
        loader.load_state_dict({"seed": 0, "position": 0})


@pytest.mark.parametrize("kwargs", [dict(images_per_process=0), dict(rank=2, world_size=2), dict(seed=-1)])
def test_bad_settings_are_refused(kwargs):
    settings = dict(seed=0, images_per_process=1) | kwargs
    with pytest.raises(ValueError, match="bad stream settings"):
        TrainingStream(DATASET, _draw, **settings)
    with pytest.raises(ValueError, match="no records"):
        TrainingStream([], _draw, seed=0, images_per_process=1)


# ------------------------------------------------------------------------------------------ joint


def _joint(images: dict[str, int], seed: int = 5) -> JointTrainLoader:
    datasets = {"a": [{"index": i} for i in range(5)], "b": [{"index": 10 + i} for i in range(3)]}
    return JointTrainLoader({
        name: ResumableTrainLoader(
            TrainingStream(datasets[name], _draw, seed=dataset_seed(seed, i), images_per_process=n)
        )
        for i, (name, n) in enumerate(images.items())
    })


def test_a_joint_loader_zips_the_datasets_with_their_own_batch_sizes():
    steps = _batches(_joint({"a": 1, "b": 2}), 4)
    assert all(list(step) == ["a", "b"] and len(step["a"]) == 1 and len(step["b"]) == 2 for step in steps)
    assert all(d["index"] < 5 for s in steps for d in s["a"]) and all(d["index"] >= 10 for s in steps for d in s["b"])
    # "b" (3 records, 2 per step): steps 0..2 read two whole epochs, each a permutation
    b = [d["index"] for s in steps[:3] for d in s["b"]]
    assert sorted(b[:3]) == sorted(b[3:6]) == [10, 11, 12]
    assert _joint({"a": 1, "b": 2}).images_per_step == 3


def test_a_joint_loader_restored_from_its_state_continues_every_stream():
    loader = _joint({"a": 1, "b": 2})
    straight = _batches(loader, 5)
    first = _joint({"a": 1, "b": 2})
    _batches(first, 2)
    state = first.state_dict()
    assert state == {"datasets": {"a": {"seed": 5, "position": 2}, "b": {"seed": dataset_seed(5, 1), "position": 4}}}
    resumed = _joint({"a": 1, "b": 2})
    resumed.load_state_dict(state)
    assert _batches(resumed, 3) == straight[2:]


def test_dataset_seeds_differ_and_the_first_keeps_the_run_seed():
    assert dataset_seed(7, 0) == 7
    seeds = {dataset_seed(7, i) for i in range(4)}
    assert len(seeds) == 4 and all(0 <= s < 2**31 for s in seeds)


def test_a_stream_state_of_other_datasets_is_refused():
    joint = _joint({"a": 1, "b": 1})
    with pytest.raises(DataStreamStateError, match=r"of \['a'\]; this run trains \['a', 'b'\]"):
        joint.load_state_dict({"datasets": {"a": {"seed": 5, "position": 0}}})
    with pytest.raises(DataStreamStateError, match="of a single dataset"):
        joint.load_state_dict({"seed": 5, "position": 0})
    single = ResumableTrainLoader(TrainingStream(DATASET, _draw, seed=0, images_per_process=1))
    with pytest.raises(DataStreamStateError, match=r"joint stream of \['a', 'b'\]; this run trains one dataset"):
        single.load_state_dict(joint.state_dict())


def test_joint_bad_rows_sum_the_datasets_and_restore_a_saved_count():
    joint = _joint({"a": 1, "b": 1})
    joint.loaders["a"].bad_rows, joint.loaders["b"].bad_rows = 2, 3
    assert joint.bad_rows == 5
    joint.bad_rows = 9  # restored from a checkpoint
    assert joint.bad_rows == 9
    joint.loaders["b"].bad_rows += 1
    assert joint.bad_rows == 10
