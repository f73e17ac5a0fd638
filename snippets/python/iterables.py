"""Iterables vs iterators: why ``next(loader)`` fails and ``next(iter(loader))`` works.

Reference: Python data model (``__iter__``, ``__next__``; the iterator protocol, PEP 234);
``torch.utils.data.DataLoader`` is an iterable that makes a fresh iterator (one epoch) per ``iter()``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

__all__ = ["Countdown", "CountdownIterator", "take_epochs", "is_iterator", "is_one_shot"]

T = TypeVar("T")


# --8<-- [start:countdown]
class CountdownIterator:
    """The iterator: holds the position of *one* pass and is used up by it."""

    def __init__(self, start: int) -> None:
        self.current = start

    def __iter__(self) -> CountdownIterator:
        return self  # an iterator is its own iterable: iter(it) is it

    def __next__(self) -> int:
        if self.current <= 0:
            raise StopIteration  # exhausted: every later next() raises again
        self.current -= 1
        return self.current + 1


class Countdown:
    """The iterable: holds the data, and every ``iter()`` starts a fresh pass (like a DataLoader epoch)."""

    def __init__(self, start: int) -> None:
        if start < 0:
            raise ValueError(f"start must be >= 0, got start={start}")
        self.start = start

    def __iter__(self) -> CountdownIterator:
        return CountdownIterator(self.start)  # a NEW iterator each time

    def __len__(self) -> int:
        return self.start
# --8<-- [end:countdown]


# --8<-- [start:helpers]
def is_iterator(obj: object) -> bool:
    """True for iterators (``__next__`` and ``iter(obj) is obj``), False for re-iterable containers."""
    return isinstance(obj, Iterator) and iter(obj) is obj


def is_one_shot(obj: Iterable[object]) -> bool:
    """True when a second pass over ``obj`` sees nothing although the first pass saw something.

    Consumes ``obj`` (call it on a throw-away object): generators, ``zip``, ``map`` and
    ``model.parameters()`` are one-shot; lists, tuples, DataLoaders and :class:`Countdown` are not.
    """
    first = sum(1 for _ in obj)
    second = sum(1 for _ in obj)
    return first > 0 and second == 0


def take_epochs(iterable: Iterable[T], epochs: int) -> list[list[T]]:
    """Items of ``epochs`` full passes; raises ``TypeError`` for an iterator (its 2nd pass would be empty)."""
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got epochs={epochs}")
    if is_iterator(iterable) and epochs > 1:
        raise TypeError(
            f"{type(iterable).__name__} is an iterator: it is used up after one pass, so epoch 2 would be "
            "empty; pass the iterable (the DataLoader, the list) instead"
        )
    return [list(iterable) for _ in range(epochs)]  # `for`/list() call iter() once per pass
# --8<-- [end:helpers]


if __name__ == "__main__":
    c = Countdown(3)
    print("two passes over an iterable:", take_epochs(c, 2))
    it = iter(c)
    print("one iterator:", next(it), next(it), next(it), "then", list(it), "(exhausted)")
    print("is_iterator(Countdown(3)) =", is_iterator(c), "; is_iterator(iter(c)) =", is_iterator(it))
