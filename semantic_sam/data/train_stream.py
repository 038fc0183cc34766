"""The training data stream, made resumable: what a step trains on depends only on the seed and
the step, not on how many processes, data workers or restarts produced it.

The stream is an endless sequence of *positions* 0, 1, 2, ...; position ``p`` is record
``perm_e[p mod n]`` of the dataset (``n`` records), where ``perm_e`` is a permutation of epoch
``e = p div n`` drawn from ``(seed, e)`` alone. The record at position ``p`` is mapped (decoded,
augmented) with Python's, NumPy's and torch's generators seeded from ``(seed, p)``, so its
augmentation does not depend on the worker that maps it.

Process ``rank`` of ``world_size`` takes positions ``start + rank, start + rank + world_size, ...``
in batches of ``images_per_process``; its data workers take whole batches in turn, and
:class:`torch.utils.data.DataLoader` returns them in order. After ``i`` steps the processes have
consumed ``start + i * images_per_process * world_size`` positions: that number (with the seed) is
the whole state of the stream, which :meth:`ResumableTrainLoader.state_dict` gives to a checkpoint.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..engine.rng_state import seeded_rng_state
from ..errors import UserError

__all__ = ["DataStreamStateError", "JointTrainLoader", "dataset_seed", "ResumableTrainLoader", "TrainingStream", "position_seed"]

_PERMUTATION, _SAMPLE, _DATASET = 0, 1, 2


class DataStreamStateError(ValueError, UserError):
    """A checkpoint's data-stream state that does not fit this run's datasets."""


def position_seed(seed: int, kind: int, index: int) -> int:
    """A 32-bit seed drawn from ``(seed, kind, index)`` (NumPy's ``SeedSequence``)."""
    return int(np.random.SeedSequence((int(seed), int(kind), int(index))).generate_state(1)[0])


class TrainingStream(IterableDataset):
    """This process's batches of the stream (see the module docstring), mapped by ``mapper``.

    Each item is one batch: a list of ``images_per_process`` mapped dicts.
    """

    def __init__(
        self,
        dataset: Sequence[dict],
        mapper: Callable[[dict], dict],
        *,
        seed: int,
        images_per_process: int,
        rank: int = 0,
        world_size: int = 1,
        start: int = 0,
        shuffle: bool = True,
    ):
        if len(dataset) == 0:
            raise ValueError("the training dataset has no records")
        if images_per_process < 1 or world_size < 1 or not 0 <= rank < world_size or start < 0 or seed < 0:
            raise ValueError(
                f"bad stream settings: images_per_process={images_per_process}, rank={rank}, "
                f"world_size={world_size}, start={start}, seed={seed}"
            )
        self.dataset = dataset
        self.mapper = mapper
        self.seed = int(seed)
        self.images_per_process = int(images_per_process)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.start = int(start)
        self.shuffle = shuffle
        self._epoch = -1
        self._permutation: list[int] = []

    def record_index(self, position: int) -> int:
        """The dataset index at stream ``position``."""
        n = len(self.dataset)
        epoch, offset = divmod(position, n)
        if not self.shuffle:
            return offset
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(position_seed(self.seed, _PERMUTATION, epoch))
            self._permutation = torch.randperm(n, generator=g).tolist()
            self._epoch = epoch
        return self._permutation[offset]

    def positions(self, batch: int) -> list[int]:
        """The stream positions of this process's ``batch``-th batch (0 = the first after ``start``)."""
        first = batch * self.images_per_process
        return [self.start + (first + t) * self.world_size + self.rank for t in range(self.images_per_process)]

    def map_position(self, position: int) -> dict:
        record = dict(self.dataset[self.record_index(position)])
        with seeded_rng_state(position_seed(self.seed, _SAMPLE, position)):
            return self.mapper(record)

    def batch(self, batch: int) -> list[dict]:
        return [self.map_position(p) for p in self.positions(batch)]

    def __iter__(self) -> Iterator[list[dict]]:
        info = get_worker_info()
        worker, num_workers = (0, 1) if info is None else (info.id, info.num_workers)
        batch = worker
        while True:
            yield self.batch(batch)
            batch += num_workers


def _as_is(batch: Any) -> Any:
    return batch


class ResumableTrainLoader:
    """Endless iterator of ``stream``'s batches (lists of mapped dicts), mapped by ``num_workers``
    data workers (0: in this process).

    Also counts, in ``bad_rows``, the corrupt records the mapper replaced (the batches' ``bad_rows``).
    ``state_dict()`` / ``load_state_dict()`` save and restore the stream's seed and how many positions
    the processes consumed; load before iterating.
    """

    def __init__(self, stream: TrainingStream, num_workers: int = 0):
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.stream = stream
        self.num_workers = int(num_workers)
        self.bad_rows = 0
        self._yielded = 0

    @property
    def images_per_step(self) -> int:
        """Positions consumed by one training step over all processes."""
        return self.stream.images_per_process * self.stream.world_size

    @property
    def position(self) -> int:
        """Positions consumed so far (by every process, counting the batches this one returned)."""
        return self.stream.start + self._yielded * self.images_per_step

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.stream.seed, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if self._yielded:
            raise RuntimeError("load_state_dict must come before the first batch")
        if not isinstance(state, dict) or not {"seed", "position"} <= set(state):
            saved = sorted(state.get("datasets", {})) if isinstance(state, dict) else state
            raise DataStreamStateError(
                f"the checkpoint's data stream is a joint stream of {saved}; this run trains one dataset "
                "(resume with the same DATASETS.TRAIN)"
            )
        self.stream.seed = int(state["seed"])
        self.stream.start = int(state["position"])
        self.stream._epoch = -1

    def __iter__(self) -> Iterator[list[dict]]:
        loader = DataLoader(
            self.stream,
            batch_size=None,
            num_workers=self.num_workers,
            collate_fn=_as_is,
            # DataLoader draws its workers' base seed from this generator instead of torch's global
            # one, which the training step draws from; the stream seeds every record itself.
            generator=torch.Generator().manual_seed(self.stream.seed),
            persistent_workers=False,
        )
        for batch in loader:
            self._yielded += 1
            self.bad_rows += sum(int(d.get("bad_rows", 0)) for d in batch)
            yield batch


class JointTrainLoader:
    """One :class:`ResumableTrainLoader` per dataset, zipped: each step is ``{dataset name: batch}``
    (SEMANTIC_SPEC §8), so every step trains every dataset with its own images per step (the mixing
    ratio). Each dataset's stream is resumable on its own; the joint state is theirs by name.
    """

    def __init__(self, loaders: dict[str, ResumableTrainLoader]):
        if not loaders:
            raise ValueError("a joint loader needs at least one dataset")
        self.loaders = dict(loaders)
        self._bad_rows_restored = 0

    @property
    def images_per_step(self) -> int:
        """Images of one training step over all processes and datasets."""
        return sum(loader.images_per_step for loader in self.loaders.values())

    @property
    def bad_rows(self) -> int:
        """Corrupt records replaced so far, over all datasets (plus the count restored from a checkpoint)."""
        return self._bad_rows_restored + sum(loader.bad_rows for loader in self.loaders.values())

    @bad_rows.setter
    def bad_rows(self, value: int) -> None:
        self._bad_rows_restored = int(value) - sum(loader.bad_rows for loader in self.loaders.values())

    def state_dict(self) -> dict[str, dict[str, dict[str, int]]]:
        return {"datasets": {name: loader.state_dict() for name, loader in self.loaders.items()}}

    def load_state_dict(self, state: dict) -> None:
        saved = state.get("datasets") if isinstance(state, dict) else None
        if not isinstance(saved, dict) or set(saved) != set(self.loaders):
            what = sorted(saved) if isinstance(saved, dict) else "a single dataset"
            raise DataStreamStateError(
                f"the checkpoint's data stream is of {what}; this run trains {sorted(self.loaders)} "
                "(resume with the same DATASETS.TRAIN)"
            )
        for name, loader in self.loaders.items():
            loader.load_state_dict(saved[name])

    def __iter__(self) -> Iterator[dict[str, list[dict]]]:
        iterators = {name: iter(loader) for name, loader in self.loaders.items()}
        while True:
            yield {name: next(it) for name, it in iterators.items()}


def dataset_seed(seed: int, index: int) -> int:
    """The stream seed of the ``index``-th dataset of a joint run (index 0 keeps ``seed``)."""
    return int(seed) if index == 0 else position_seed(seed, _DATASET, index) & 0x7FFFFFFF
