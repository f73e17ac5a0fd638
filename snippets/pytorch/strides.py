"""Storage, strides and contiguity: how a tensor's index maps to an address in its flat storage.

A tensor is a 1-D *storage* plus metadata (shape, stride, storage offset, dtype); element
``x[i_0, ..., i_{n-1}]`` lives at storage position ``offset + sum_k i_k * stride[k]``. These
functions recompute what ATen computes (``c10::contiguous_strides``, ``TensorImpl::compute_contiguous``,
``as_strided``). Reference: PyTorch docs, "Tensor Views" and ``torch.Tensor.stride``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["contiguous_strides", "is_contiguous", "element_offset", "gather_strided", "storage_tensor"]


def _ints(name: str, values: Sequence[int], *, allow_negative: bool = False) -> tuple[int, ...]:
    """``values`` as a tuple of Python ints; ``TypeError``/``ValueError`` naming ``name`` otherwise."""
    if isinstance(values, Tensor | str | bytes) or not isinstance(values, Sequence):
        raise TypeError(f"{name} must be a sequence of ints (a tuple, list or torch.Size), got {type(values).__name__}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name} must contain ints, got {name}={tuple(values)!r}")
        if v < 0 and not allow_negative:
            raise ValueError(f"{name}={tuple(values)} has a negative entry; sizes and strides must be >= 0")
        out.append(int(v))
    return tuple(out)


def _same_rank(shape: tuple[int, ...], stride: tuple[int, ...]) -> None:
    if len(shape) != len(stride):
        raise ValueError(f"shape={shape} and stride={stride} must have the same length (one stride per dim)")


# --8<-- [start:strides]
def contiguous_strides(shape: Sequence[int]) -> tuple[int, ...]:
    """Row-major (C-order) strides of a freshly allocated tensor of ``shape``, in elements.

    ``s[n-1] = 1`` and ``s[k] = s[k+1] * max(shape[k+1], 1)``: the last dim moves fastest. The
    ``max(., 1)`` matches ATen for empty dims (``torch.empty(2, 0, 3).stride() == (3, 3, 1)``).
    A 0-d tensor has ``()``.
    """
    shape = _ints("shape", shape)
    strides = [1] * len(shape)
    for k in range(len(shape) - 2, -1, -1):
        strides[k] = strides[k + 1] * max(shape[k + 1], 1)
    return tuple(strides)


def is_contiguous(shape: Sequence[int], stride: Sequence[int]) -> bool:
    """``Tensor.is_contiguous()`` from shape and stride alone (ATen's ``compute_contiguous``).

    True when walking the elements in row-major index order visits consecutive storage positions:
    every dim of size > 1 has the stride :func:`contiguous_strides` would give it. The stride of a
    size-1 dim is never used, so it is ignored; a tensor with no elements is always contiguous.
    """
    shape, stride = _ints("shape", shape), _ints("stride", stride)
    _same_rank(shape, stride)
    if 0 in shape:
        return True
    expected = 1
    for size, st in zip(reversed(shape), reversed(stride)):
        if size == 1:
            continue  # index 0 only: the stride is multiplied by 0
        if st != expected:
            return False
        expected *= size
    return True


# --8<-- [end:strides]


# --8<-- [start:gather]
def element_offset(index: Sequence[int], stride: Sequence[int], offset: int = 0) -> int:
    """Storage position of element ``x[index]``: ``offset + sum_k index[k] * stride[k]``.

    ``offset`` is ``x.storage_offset()``; the byte address is ``x.untyped_storage().data_ptr()``
    plus this position times ``x.element_size()``. Indices must be non-negative.
    """
    index, stride = _ints("index", index), _ints("stride", stride)
    if len(index) != len(stride):
        raise ValueError(f"index={index} and stride={stride} must have the same length (one index per dim)")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError(f"offset={offset!r} must be an int >= 0")
    return offset + sum(i * s for i, s in zip(index, stride))


def gather_strided(storage: Tensor, shape: Sequence[int], stride: Sequence[int], offset: int = 0) -> Tensor:
    """Read the tensor described by (``shape``, ``stride``, ``offset``) out of a flat ``storage``.

    storage: (N,) — one element per storage position (see :func:`storage_tensor`).
    Returns a new tensor of ``shape`` equal to ``torch.as_strided(storage, shape, stride, offset)``
    (a copy, not a view; differentiable: overlapping positions, e.g. stride 0, add up in backward).
    """
    if not isinstance(storage, Tensor):
        raise TypeError(f"storage must be a torch.Tensor, got {type(storage).__name__}")
    if storage.dim() != 1:
        raise ValueError(f"storage must be 1-D (one element per position), got shape {tuple(storage.shape)}")
    shape, stride = _ints("shape", shape), _ints("stride", stride)
    _same_rank(shape, stride)
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError(f"offset={offset!r} must be an int >= 0")
    if 0 not in shape:
        last = element_offset([n - 1 for n in shape], stride, offset)  # the largest position read
        if last >= storage.numel():
            raise ValueError(
                f"shape={shape}, stride={stride}, offset={offset} reach position {last}, "
                f"out of bounds for a storage of {storage.numel()} elements"
            )
    positions = torch.full((), offset, dtype=torch.long, device=storage.device)
    for n, s in zip(shape, stride):  # one broadcast step per dim: positions[i_0, ..., i_k]
        positions = positions.unsqueeze(-1) + torch.arange(n, device=storage.device) * s
    return storage[positions]


# --8<-- [end:gather]


def storage_tensor(x: Tensor) -> Tensor:
    """A 1-D view of the *whole* storage behind ``x`` (offset 0, stride 1), dtype of ``x``.

    Shares memory with ``x``: ``gather_strided(storage_tensor(x), x.shape, x.stride(),
    x.storage_offset())`` equals ``x`` for every strided tensor.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    n = x.untyped_storage().nbytes() // x.element_size()
    return torch.as_strided(x, (n,), (1,), 0)


if __name__ == "__main__":
    base = torch.arange(12.0)
    x = base.view(3, 4)
    y = x.t()[1:]  # transpose (a view) then slice (a view): still the same 12 storage cells
    print("x:", tuple(x.shape), "stride", x.stride(), "contiguous", is_contiguous(x.shape, x.stride()))
    print("y = x.t()[1:]:", tuple(y.shape), "stride", y.stride(), "offset", y.storage_offset())
    print("contiguous_strides(y.shape) =", contiguous_strides(y.shape), "-> contiguous:", y.is_contiguous())
    print("y[2, 1] at storage position", element_offset((2, 1), y.stride(), y.storage_offset()), "=", y[2, 1].item())
    print(gather_strided(storage_tensor(y), y.shape, y.stride(), y.storage_offset()))
