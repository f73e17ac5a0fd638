"""Iterables vs iterators: the protocol, DataLoader epochs and the one-shot model.parameters()."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from snippets.python.iterables import Countdown, CountdownIterator, is_iterator, is_one_shot, take_epochs


def test_iterable_gives_a_fresh_iterator_per_pass() -> None:
    c = Countdown(3)
    assert take_epochs(c, 3) == [[3, 2, 1]] * 3
    a, b = iter(c), iter(c)
    assert a is not b and isinstance(a, CountdownIterator)
    assert next(a) == 3 and next(b) == 3  # independent positions
    assert len(c) == 3


def test_iterator_is_exhausted_after_one_pass() -> None:
    it = iter(Countdown(2))
    assert iter(it) is it
    assert list(it) == [2, 1]
    assert list(it) == []
    with pytest.raises(StopIteration):
        next(it)
    with pytest.raises(StopIteration):  # and keeps raising
        next(it)


def test_next_on_an_iterable_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="'Countdown' object is not an iterator"):
        next(Countdown(3))  # type: ignore[call-overload]


def test_for_loop_calls_iter_once_per_loop() -> None:
    calls = []

    class Counted(Countdown):
        def __iter__(self) -> CountdownIterator:
            calls.append(1)
            return super().__iter__()

    c = Counted(2)
    for _ in range(3):
        for _ in c:
            pass
    assert len(calls) == 3


def test_dataloader_is_an_iterable_not_an_iterator() -> None:
    data = TensorDataset(torch.arange(6.0))
    loader = DataLoader(data, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(0))
    assert not is_iterator(loader)
    with pytest.raises(TypeError, match="'DataLoader' object is not an iterator"):
        next(loader)  # type: ignore[call-overload]
    it = iter(loader)
    assert is_iterator(it)
    (first,) = next(it)
    assert first.shape == (4,)
    (second,) = next(it)
    assert second.shape == (2,)  # 6 samples, batch 4: the last batch is short
    with pytest.raises(StopIteration):
        next(it)
    epochs = [torch.cat([b for (b,) in epoch]) for epoch in take_epochs(loader, 2)]
    for e in epochs:  # each iter() is a full new epoch ...
        assert sorted(e.tolist()) == list(range(6))
    assert not torch.equal(epochs[0], epochs[1])  # ... reshuffled (fixed generator, so deterministic)


def test_model_parameters_is_one_shot() -> None:
    model = nn.Linear(3, 2)
    params = model.parameters()
    assert is_iterator(params)
    assert sum(p.numel() for p in params) == 8
    assert sum(p.numel() for p in params) == 0  # the generator is used up: the classic silent bug
    assert is_one_shot(model.parameters())
    assert not is_one_shot(list(model.parameters()))
    # torch.optim materialises the iterable once, so a generator is fine there
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    assert len(opt.param_groups[0]["params"]) == 2


@pytest.mark.parametrize(
    "make, one_shot",
    [
        (lambda: zip([1, 2], "ab"), True),
        (lambda: map(str, [1, 2]), True),
        (lambda: (x for x in [1, 2]), True),
        (lambda: [1, 2], False),
        (lambda: (1, 2), False),
        (lambda: range(2), False),
        (lambda: {"a": 1}, False),
        (lambda: Countdown(2), False),
    ],
)
def test_which_builtins_are_one_shot(make, one_shot: bool) -> None:
    assert is_one_shot(make()) is one_shot
    assert is_iterator(make()) is one_shot


def test_rejected_inputs() -> None:
    with pytest.raises(ValueError, match="start must be >= 0"):
        Countdown(-1)
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        take_epochs([1], 0)
    with pytest.raises(TypeError, match="generator is an iterator"):
        take_epochs((x for x in [1, 2]), 2)
    assert take_epochs(iter([1, 2]), 1) == [[1, 2]]  # one pass over an iterator is fine
