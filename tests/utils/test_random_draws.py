"""Random sources: reference (global), generator-based and replayed draws."""

import random

import pytest
import torch

from semantic_sam.utils.random_draws import ReferenceRandom, ReplayRandom, TorchRandom, resolve_random_source


def test_reference_random_matches_global_sources():
    py_state, torch_state = random.getstate(), torch.get_rng_state()
    try:
        random.seed(1)
        torch.manual_seed(1)
        r = ReferenceRandom()
        got = (r.randint(0, 9), r.rand(2, 3), r.randperm(5))
        items = [1, 2, 3, 4]
        r.shuffle(items)
        random.seed(1)
        torch.manual_seed(1)
        expected = (random.randint(0, 9), torch.rand(2, 3), torch.randperm(5))
        items2 = [1, 2, 3, 4]
        random.shuffle(items2)
    finally:
        random.setstate(py_state)
        torch.set_rng_state(torch_state)
    assert got[0] == expected[0] and torch.equal(got[1], expected[1]) and torch.equal(got[2], expected[2])
    assert items == items2


def test_torch_random_is_deterministic_and_in_range():
    a, b = TorchRandom(torch.Generator().manual_seed(0)), TorchRandom(torch.Generator().manual_seed(0))
    assert torch.equal(a.rand(4, 2), b.rand(4, 2))
    assert torch.equal(a.randperm(7), b.randperm(7))
    values = [a.randint(3, 5) for _ in range(200)]
    assert set(values) == {3, 4, 5}
    items = list(range(10))
    a.shuffle(items)
    assert sorted(items) == list(range(10))
    with pytest.raises(TypeError):
        TorchRandom(0)


def test_replay_returns_recorded_values_and_checks_requests():
    rec = torch.arange(6.0) / 10
    r = ReplayRandom([rec, torch.tensor([2, 0, 1]), 4, [3, 1, 2]])
    assert torch.equal(r.rand(2, 3), rec.view(2, 3))
    assert r.randperm(3).tolist() == [2, 0, 1]
    assert r.randint(0, 4) == 4
    items = [1, 2, 3]
    r.shuffle(items)
    assert items == [3, 1, 2] and r.remaining == 0
    with pytest.raises(ValueError, match="no recorded draws are left"):
        r.randint(0, 1)
    with pytest.raises(ValueError, match=r"draw #0 .* rand\(\(4, 2\)\)|rand\(4, 2\)"):
        ReplayRandom([torch.zeros(3)]).rand(4, 2)
    with pytest.raises(ValueError, match="randint"):
        ReplayRandom([7]).randint(0, 5)
    with pytest.raises(ValueError, match="permutation"):
        ReplayRandom([torch.tensor([0, 0, 1])]).randperm(3)
    with pytest.raises(ValueError, match="reordering"):
        ReplayRandom([[1, 2]]).shuffle([1, 3])


def test_resolve_random_source():
    assert isinstance(resolve_random_source(), ReferenceRandom)
    assert isinstance(resolve_random_source(generator=torch.Generator()), TorchRandom)
    replay = ReplayRandom([])
    assert resolve_random_source(replay, torch.Generator()) is replay
    with pytest.raises(TypeError):
        resolve_random_source(rng=torch.Generator())
