"""``zip`` and ``*``-unpacking: pairing sequences, transposing rows into columns with ``zip(*rows)``,
and the same transpose turning a list of ``(x, y)`` samples into a batch (what a DataLoader's collate does).

Reference: Python documentation, built-in ``zip`` (``strict=``, PEP 618) and "Unpacking argument lists";
``torch.utils.data.default_collate``; d2l.ai §3.2 / §4.2 (``zip`` in the data iterators).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TypeVar

import torch
from torch import Tensor

__all__ = ["transpose_pairs", "collate_pairs"]

T = TypeVar("T")


# --8<-- [start:transpose]
def transpose_pairs(rows: Iterable[Sequence[T]], width: int | None = None) -> tuple[tuple[T, ...], ...]:
    """Rows ``[(a1, b1), (a2, b2), ...]`` -> columns ``((a1, a2, ...), (b1, b2, ...))``: ``zip(*rows)``.

    Unlike bare ``zip(*rows)``, which silently cuts every column to the shortest row, rows of unequal
    length raise ``ValueError``. ``width`` (the number of columns) is needed only for an empty input:
    ``zip(*[])`` yields nothing, so ``xs, ys = zip(*[])`` fails; ``transpose_pairs([], width=2)`` is ``((), ())``.
    ``rows`` may be any iterable, even a one-shot iterator: it is read exactly once.
    """
    if width is not None and width < 0:
        raise ValueError(f"width must be >= 0, got width={width}")
    rows = list(rows)  # `*rows` would materialise it anyway; we need len() and indexing for the checks
    for i, row in enumerate(rows):
        if not isinstance(row, Sequence):
            raise TypeError(f"rows[{i}] must be a sequence such as a tuple, got {type(row).__name__}")
    expected = width if width is not None else (len(rows[0]) if rows else 0)
    for i, row in enumerate(rows):
        if len(row) != expected:
            rule = f"width={width}" if width is not None else "the length of rows[0]"
            raise ValueError(f"rows[{i}] has length {len(row)}, expected {expected} ({rule})")
    if not rows:
        return ((),) * expected
    return tuple(zip(*rows))  # the transpose itself: column j = (rows[0][j], rows[1][j], ...)


# --8<-- [end:transpose]


# --8<-- [start:collate]
def collate_pairs(samples: Sequence[tuple[Tensor, ...]]) -> tuple[Tensor, ...]:
    """A list of ``B`` samples ``(x_i, y_i, ...)`` -> a batch ``(X, Y, ...)`` with ``X: (B, *x_i.shape)``.

    Transpose with ``zip(*samples)`` (all ``x``s together, all ``y``s together), then ``torch.stack`` each
    column: what ``torch.utils.data.default_collate`` does for tuples of tensors. Differentiable.
    """
    if len(samples) == 0:
        raise ValueError("samples is empty: cannot collate a batch of size 0")
    columns = transpose_pairs(samples)
    for j, column in enumerate(columns):
        for i, t in enumerate(column):
            if not isinstance(t, Tensor):
                raise TypeError(f"samples[{i}][{j}] must be a Tensor, got {type(t).__name__}")
        shapes = {tuple(t.shape) for t in column}
        if len(shapes) > 1:
            raise ValueError(f"field {j} of the samples must have one shape to be stacked, got {sorted(shapes)}")
    return tuple(torch.stack(column) for column in columns)


# --8<-- [end:collate]


if __name__ == "__main__":
    a, b = [1, 2, 3], [4, 5, 6]
    pack = zip(a, b)
    print("pack:", *pack)
    print("pack:", *pack, "(used up: a zip object is an iterator)")
    print("unpack:", *zip(*zip(a, b)))
    print("transpose_pairs:", transpose_pairs([(1, "a"), (2, "b")]), "| empty:", transpose_pairs([], width=2))
    X, y = collate_pairs([(torch.zeros(3), torch.tensor(0)), (torch.ones(3), torch.tensor(1))])
    print("collate_pairs:", tuple(X.shape), y.tolist())
