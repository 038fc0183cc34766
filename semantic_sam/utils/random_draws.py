"""Sources of the random numbers drawn by training-target preparation, matching and losses.

Every random decision of a training step (which masks are clicked, which pixel, which
targets are kept, the anchor jitter, the matcher's points, the loss points) goes through one
:class:`RandomSource`, so that a step can be

* reproduced from the reference's seeds (:class:`ReferenceRandom`: torch's global generator for
  tensors, Python's ``random`` module for integers and shuffles, exactly as the reference draws
  them),
* made deterministic without touching global state (:class:`TorchRandom` with a
  ``torch.Generator``), or
* replayed from recorded draws (:class:`ReplayRandom`), e.g. the golden data of
  ``tests/fixtures/criterion_tiny``.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Any, Iterable, List, Optional, Sequence, Union

import torch
from torch import Tensor

__all__ = ["RandomSource", "ReferenceRandom", "TorchRandom", "ReplayRandom", "resolve_random_source"]

Device = Union[torch.device, str, None]


class RandomSource:
    """Interface: the four kinds of draws the training step makes."""

    def rand(self, *size: int, device: Device = None) -> Tensor:
        """Uniform float32 samples in [0, 1) of shape ``size``."""
        raise NotImplementedError

    def randperm(self, n: int, device: Device = None) -> Tensor:
        """A random permutation of ``0 .. n-1`` (int64)."""
        raise NotImplementedError

    def randint(self, low: int, high: int) -> int:
        """A uniform integer in ``[low, high]``, both ends included (``random.randint``)."""
        raise NotImplementedError

    def shuffle(self, items: List[Any]) -> None:
        """Shuffle ``items`` in place."""
        raise NotImplementedError


class ReferenceRandom(RandomSource):
    """The reference's own sources: torch's global generator and Python's ``random`` module.

    With ``random.seed(s)`` and ``torch.manual_seed(s)`` before a training step, the draws equal
    the reference's draw for draw (on the same device type).
    """

    def rand(self, *size: int, device: Device = None) -> Tensor:
        return torch.rand(*size, device=device)

    def randperm(self, n: int, device: Device = None) -> Tensor:
        return torch.randperm(n, device=device)

    def randint(self, low: int, high: int) -> int:
        return random.randint(low, high)

    def shuffle(self, items: List[Any]) -> None:
        random.shuffle(items)


class TorchRandom(RandomSource):
    """All draws from one ``torch.Generator`` (tensors are drawn on the generator's device, then moved)."""

    def __init__(self, generator: torch.Generator):
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"TorchRandom needs a torch.Generator, got {type(generator).__name__}")
        self.generator = generator

    def rand(self, *size: int, device: Device = None) -> Tensor:
        out = torch.rand(*size, generator=self.generator, device=self.generator.device)
        return out.to(device) if device is not None else out

    def randperm(self, n: int, device: Device = None) -> Tensor:
        out = torch.randperm(n, generator=self.generator, device=self.generator.device)
        return out.to(device) if device is not None else out

    def randint(self, low: int, high: int) -> int:
        if high < low:
            raise ValueError(f"randint: empty range [{low}, {high}]")
        return low + int(torch.randint(high - low + 1, (1,), generator=self.generator, device=self.generator.device))

    def shuffle(self, items: List[Any]) -> None:
        order = torch.randperm(len(items), generator=self.generator, device=self.generator.device).tolist()
        items[:] = [items[i] for i in order]


class ReplayRandom(RandomSource):
    """Returns recorded draws, in the order they were recorded.

    Each recorded value answers one call: a tensor answers ``rand`` or ``randperm`` (it must have
    as many elements as requested; it is reshaped to the requested size), an ``int`` answers
    ``randint`` (it must lie in the range), and a list answers ``shuffle`` (it must be a
    permutation of the items; it becomes their new order). A call that does not fit the next
    recorded value raises ``ValueError`` naming the draw's position.
    """

    def __init__(self, draws: Iterable[Union[Tensor, int, Sequence[Any]]]):
        self._draws = deque(draws)
        self._position = 0

    @property
    def remaining(self) -> int:
        """How many recorded draws have not been used yet."""
        return len(self._draws)

    def _next(self, what: str) -> Any:
        if not self._draws:
            raise ValueError(
                f"ReplayRandom: {what} requested as draw #{self._position}, but no recorded draws are left"
            )
        self._position += 1
        return self._draws.popleft()

    def _tensor(self, what: str, numel: int, device: Device) -> Tensor:
        value = self._next(what)
        if not isinstance(value, Tensor) or value.numel() != numel:
            got = f"tensor of shape {tuple(value.shape)}" if isinstance(value, Tensor) else repr(value)
            raise ValueError(f"ReplayRandom: draw #{self._position - 1} is a {got}, but {what} was requested")
        return value.to(device) if device is not None else value

    def rand(self, *size: int, device: Device = None) -> Tensor:
        numel = 1
        for s in size:
            numel *= int(s)
        return self._tensor(f"rand{tuple(size)}", numel, device).reshape(*size).float()

    def randperm(self, n: int, device: Device = None) -> Tensor:
        out = self._tensor(f"randperm({n})", n, device).reshape(n).long()
        if not torch.equal(out.sort().values.cpu(), torch.arange(n)):
            raise ValueError(f"ReplayRandom: draw #{self._position - 1} is not a permutation of 0..{n - 1}")
        return out

    def randint(self, low: int, high: int) -> int:
        value = self._next(f"randint({low}, {high})")
        if isinstance(value, Tensor) and value.numel() == 1:
            value = int(value)
        if not isinstance(value, int) or not low <= value <= high:
            raise ValueError(
                f"ReplayRandom: draw #{self._position - 1} is {value!r}, but randint({low}, {high}) was requested"
            )
        return value

    def shuffle(self, items: List[Any]) -> None:
        value = self._next(f"shuffle of {len(items)} items")
        order = value.tolist() if isinstance(value, Tensor) else list(value)
        if sorted(order) != sorted(items):
            raise ValueError(
                f"ReplayRandom: draw #{self._position - 1} ({order}) is not a reordering of the items {items}"
            )
        items[:] = order


def resolve_random_source(
    rng: Optional[RandomSource] = None, generator: Optional[torch.Generator] = None
) -> RandomSource:
    """``rng`` if given, else a :class:`TorchRandom` on ``generator`` if given, else :class:`ReferenceRandom`."""
    if rng is not None:
        if not isinstance(rng, RandomSource):
            raise TypeError(f"rng must be a RandomSource, got {type(rng).__name__}")
        return rng
    if generator is not None:
        return TorchRandom(generator)
    return ReferenceRandom()
