"""Views without copies: when ``view`` works, when ``reshape`` copies, and what ``permute`` does to strides.

``view_strides`` is ATen's ``computeStride`` (aten/src/ATen/TensorUtils.cpp), the test ``Tensor.view``
runs: it returns the strides of the requested view, or ``None`` when no view exists (then ``view``
raises and ``reshape`` copies). ``permute_meta`` is the metadata rule of ``Tensor.permute`` /
``transpose``; ``contiguous_manual`` copies exactly when ``Tensor.contiguous`` does.
Reference: PyTorch docs, "Tensor Views", ``torch.Tensor.view``, ``torch.reshape``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from snippets.pytorch.strides import _ints, _same_rank, contiguous_strides, is_contiguous

__all__ = [
    "infer_shape",
    "view_strides",
    "reshape_manual",
    "shares_storage",
    "permute_meta",
    "transpose_meta",
    "contiguous_manual",
]


def infer_shape(shape: Sequence[int], numel: int) -> tuple[int, ...]:
    """``shape`` with a single ``-1`` replaced by what makes the element count ``numel`` (like ``view(-1)``)."""
    shape = _ints("shape", shape, allow_negative=True)
    if any(n < -1 for n in shape):
        raise ValueError(f"shape={shape} has an entry < -1; sizes must be >= 0, or -1 for one inferred dim")
    if shape.count(-1) > 1:
        raise ValueError(f"shape={shape}: only one dimension can be inferred (-1)")
    known = math.prod(n for n in shape if n != -1)
    if -1 in shape:
        if known == 0:
            raise ValueError(f"shape={shape} is ambiguous for input of size {numel}: -1 could be any size")
        if numel % known:
            raise ValueError(f"shape={shape} is invalid for input of size {numel}")
        shape = tuple(numel // known if n == -1 else n for n in shape)
    if math.prod(shape) != numel:
        raise ValueError(f"shape={shape} is invalid for input of size {numel}")
    return shape


# --8<-- [start:view_strides]
def view_strides(shape: Sequence[int], stride: Sequence[int], new_shape: Sequence[int]) -> tuple[int, ...] | None:
    """Strides of ``x.view(new_shape)`` for ``x`` with this ``shape``/``stride``, or ``None`` if no view exists.

    ATen's ``computeStride``. The old dims are cut into *chunks*: runs of neighbouring dims that are
    contiguous with respect to each other (``stride[k] == shape[k+1] * stride[k+1]``; size-1 dims never
    cut). Inside a chunk the elements are evenly spaced, so it can be re-split freely; a view exists iff
    the new dims, read right to left, fill each chunk exactly (no new dim straddles two chunks).
    ``new_shape`` may contain one ``-1``.
    """
    shape, stride = _ints("shape", shape), _ints("stride", stride)
    _same_rank(shape, stride)
    numel = math.prod(shape)
    new_shape = infer_shape(new_shape, numel)
    if not shape:  # a 0-d tensor: every new dim has size 1
        return (1,) * len(new_shape)
    if numel == 0:  # no element is ever read: keep the strides, or use fresh ones
        return stride if new_shape == shape else contiguous_strides(new_shape)
    new_stride = [0] * len(new_shape)
    view_d = len(new_shape) - 1
    chunk_base = stride[-1]  # stride of the innermost dim of the current chunk
    chunk_numel = view_numel = 1
    for d in range(len(shape) - 1, -1, -1):
        chunk_numel *= shape[d]
        chunk_ends = d == 0 or (shape[d - 1] != 1 and stride[d - 1] != chunk_numel * chunk_base)
        if chunk_ends:  # new dims must now make up exactly chunk_numel elements
            while view_d >= 0 and (view_numel < chunk_numel or new_shape[view_d] == 1):
                new_stride[view_d] = view_numel * chunk_base
                view_numel *= new_shape[view_d]
                view_d -= 1
            if view_numel != chunk_numel:
                return None  # a new dim straddles two chunks
            if d > 0:
                chunk_base, chunk_numel, view_numel = stride[d - 1], 1, 1
    return tuple(new_stride) if view_d == -1 else None


def reshape_manual(x: Tensor, shape: Sequence[int]) -> Tensor:
    """``torch.reshape``: a view (shared storage) when :func:`view_strides` finds one, else a copy.

    x: (*) any strided tensor; returns a tensor of ``shape`` (one ``-1`` allowed).
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    new_shape = infer_shape(shape, x.numel())
    new_stride = view_strides(x.shape, x.stride(), new_shape)
    if new_stride is not None:  # metadata only: same storage, same offset, new shape and strides
        return x.as_strided(new_shape, new_stride, x.storage_offset())
    return x.contiguous().view(new_shape)  # no view exists: copy into row-major order, then view


# --8<-- [end:view_strides]


def shares_storage(a: Tensor, b: Tensor) -> bool:
    """True when ``a`` and ``b`` live in the same storage (one is a view of the other, or both of one base)."""
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


# --8<-- [start:permute]
def permute_meta(
    shape: Sequence[int], stride: Sequence[int], dims: Sequence[int]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Shape and strides of ``x.permute(dims)``: ``new_shape[i] = shape[dims[i]]``, same for strides.

    Nothing else changes (storage, offset): a permutation is a view. ``dims`` may be negative.
    """
    shape, stride = _ints("shape", shape), _ints("stride", stride)
    _same_rank(shape, stride)
    dims = _ints("dims", dims, allow_negative=True)
    n = len(shape)
    if len(dims) != n:
        raise ValueError(f"dims={dims} must have one entry per dim of shape={shape}")
    if any(not -max(n, 1) <= d < max(n, 1) for d in dims):
        raise ValueError(f"dims={dims} has an entry out of range for {n} dims")
    dims = tuple(d % n for d in dims) if n else dims
    if len(set(dims)) != n:
        raise ValueError(f"dims={dims} repeats a dim; it must be a permutation of range({n})")
    return tuple(shape[d] for d in dims), tuple(stride[d] for d in dims)


def transpose_meta(
    shape: Sequence[int], stride: Sequence[int], dim0: int, dim1: int
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Shape and strides of ``x.transpose(dim0, dim1)``: the permutation that swaps two dims."""
    dims = list(range(len(shape)))
    for d in (dim0, dim1):
        if not -len(dims) <= d < len(dims):
            raise ValueError(f"dim {d} is out of range for {len(dims)} dims")
    dims[dim0], dims[dim1] = dims[dim1], dims[dim0]
    return permute_meta(shape, stride, dims)


def contiguous_manual(x: Tensor) -> Tensor:
    """``Tensor.contiguous()``: ``x`` itself when already contiguous, else a row-major copy."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if is_contiguous(x.shape, x.stride()):
        return x  # no copy: the very same tensor object
    return x.clone(memory_format=torch.contiguous_format)


# --8<-- [end:permute]


if __name__ == "__main__":
    x = torch.arange(24.0).view(2, 3, 4)
    p = x.permute(1, 0, 2)  # shape (3, 2, 4), stride (4, 12, 1)
    print(
        "x.permute(1, 0, 2):", tuple(p.shape), "stride", p.stride(), "==", permute_meta(x.shape, x.stride(), (1, 0, 2))
    )
    for new in [(3, 2, 2, 2), (6, 4), (3, 8)]:
        s = view_strides(p.shape, p.stride(), new)
        r = reshape_manual(p, new)
        print(f"view{new}: strides {s}; reshape shares storage: {shares_storage(r, p)}")
