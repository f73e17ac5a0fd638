"""Storage, strides and contiguity: our formulas vs ``stride()``, ``is_contiguous()`` and ``as_strided``."""

from __future__ import annotations

import random

import pytest
import torch

from snippets.pytorch.strides import (
    contiguous_strides,
    element_offset,
    gather_strided,
    is_contiguous,
    storage_tensor,
)
from tests.conftest import assert_close

SEEDS = range(6)


def random_shape(rng: random.Random, *, allow_empty: bool = True) -> tuple[int, ...]:
    low = 0 if allow_empty and rng.random() < 0.15 else 1
    return tuple(rng.randint(low, 5) for _ in range(rng.randint(0, 4)))


def random_view(rng: random.Random, device: torch.device | str = "cpu") -> torch.Tensor:
    """A random non-empty tensor reached by permuting, slicing (with steps) and expanding a fresh one."""
    shape = tuple(rng.randint(1, 5) for _ in range(rng.randint(1, 4)))
    x = torch.randn(shape, dtype=torch.float64, device=device)
    x = x.permute(*rng.sample(range(x.dim()), x.dim()))
    index = []
    for n in x.shape:
        start = rng.randint(0, n - 1)
        index.append(slice(start, None, rng.randint(1, 2)))
    x = x[tuple(index)]
    if rng.random() < 0.3:  # a broadcast dim: stride 0
        d = rng.randrange(x.dim())
        if x.shape[d] == 1:
            x = x.expand(*[3 if k == d else -1 for k in range(x.dim())])
    return x


@pytest.mark.parametrize("seed", SEEDS)
def test_contiguous_strides_match_a_fresh_tensor(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(20):
        shape = random_shape(rng)
        assert contiguous_strides(shape) == torch.empty(shape).stride(), shape
    assert contiguous_strides((2, 3, 4)) == (12, 4, 1)
    assert contiguous_strides(()) == ()
    assert contiguous_strides(torch.Size([2, 0, 3])) == torch.empty(2, 0, 3).stride() == (3, 3, 1)


@pytest.mark.parametrize("seed", SEEDS)
def test_is_contiguous_matches_torch_on_random_views(seed: int) -> None:
    rng = random.Random(seed)
    seen = set()
    for _ in range(30):
        y = random_view(rng)
        ours = is_contiguous(y.shape, y.stride())
        assert ours == y.is_contiguous(), (tuple(y.shape), y.stride())
        seen.add(ours)
    assert seen == {True, False}  # both cases were exercised


def test_size_one_strides_are_ignored_and_empty_tensors_are_contiguous() -> None:
    odd = torch.as_strided(torch.zeros(12), (3, 1, 4), (4, 100, 1))  # stride 100 on a size-1 dim
    assert odd.is_contiguous() and is_contiguous((3, 1, 4), (4, 100, 1))
    empty = torch.as_strided(torch.zeros(1), (0, 3), (7, 9))
    assert empty.is_contiguous() and is_contiguous((0, 3), (7, 9))
    assert not is_contiguous((3, 4), (1, 3)) and not torch.zeros(4, 3).t().is_contiguous()


@pytest.mark.parametrize("seed", SEEDS)
def test_element_offset_is_the_address_of_the_element(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(10):
        y = random_view(rng)
        storage = storage_tensor(y)
        index = tuple(rng.randrange(n) for n in y.shape)
        pos = element_offset(index, y.stride(), y.storage_offset())
        assert storage[pos] == y[index]
        # the byte address: storage start + position * element size
        assert y[index].data_ptr() == y.untyped_storage().data_ptr() + pos * y.element_size()


@pytest.mark.parametrize("seed", SEEDS)
def test_gather_strided_reads_every_view_back(seed: int, device: torch.device) -> None:
    rng = random.Random(seed)
    for _ in range(10):
        y = random_view(rng, device)
        out = gather_strided(storage_tensor(y), y.shape, y.stride(), y.storage_offset())
        assert out.device == y.device and out.dtype == y.dtype
        assert torch.equal(out, y)
        assert out.is_contiguous() and out.data_ptr() != y.data_ptr()  # a copy, not a view


@pytest.mark.parametrize("seed", SEEDS)
def test_matches_as_strided_forward_and_backward(seed: int, device: torch.device) -> None:
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(5):
        shape = tuple(rng.randint(1, 4) for _ in range(rng.randint(1, 3)))
        stride = tuple(rng.choice([0, 1, 2, 3, 5]) for _ in shape)  # 0 and small strides: overlapping reads
        offset = rng.randint(0, 3)
        n = element_offset([s - 1 for s in shape], stride, offset) + 1 + rng.randint(0, 2)
        storage = torch.randn(n, dtype=torch.float64, generator=gen).to(device)
        a = storage.clone().requires_grad_()
        b = storage.clone().requires_grad_()
        ours = gather_strided(a, shape, stride, offset)
        ref = torch.as_strided(b, shape, stride, offset)
        assert_close(ours, ref)
        grad = torch.randn(shape, dtype=torch.float64, generator=gen).to(device)
        ours.backward(grad)
        ref.backward(grad)
        assert_close(a.grad, b.grad)  # positions read twice receive the sum of both gradients


def test_views_share_storage_and_only_change_metadata() -> None:
    x = torch.arange(12.0).view(3, 4)
    y = x.t()[1:]
    assert y.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()
    assert (y.shape, y.stride(), y.storage_offset()) == ((3, 3), (1, 4), 1)
    y[0, 0] = 100.0  # a write through the view lands in the shared storage
    assert x[0, 1] == 100.0
    assert storage_tensor(y).shape == (12,) and storage_tensor(y)[1] == 100.0


def test_negative_strides_and_out_of_bounds_are_rejected_like_torch() -> None:
    storage = torch.arange(12.0)
    with pytest.raises(RuntimeError, match="Negative strides are not supported"):
        torch.as_strided(storage, (3,), (-1,), 2)
    with pytest.raises(ValueError, match=r"stride=\(-1,\) has a negative entry"):
        gather_strided(storage, (3,), (-1,), 2)
    with pytest.raises(RuntimeError, match="out of bounds for storage of size"):
        torch.as_strided(storage, (4, 4), (4, 1))
    with pytest.raises(ValueError, match="reach position 15, out of bounds for a storage of 12 elements"):
        gather_strided(storage, (4, 4), (4, 1))
    flipped = storage.flip(0)  # no negative stride: flip copies
    assert flipped.stride() == (1,) and flipped.data_ptr() != storage.data_ptr()


def test_rejected_inputs() -> None:
    s = torch.arange(6.0)
    with pytest.raises(ValueError, match=r"shape=\(2, 3\) and stride=\(1,\) must have the same length"):
        is_contiguous((2, 3), (1,))
    with pytest.raises(ValueError, match=r"shape=\(2, -3\) has a negative entry"):
        contiguous_strides((2, -3))
    with pytest.raises(TypeError, match="shape must contain ints"):
        contiguous_strides((2, 3.0))
    with pytest.raises(TypeError, match="shape must be a sequence of ints"):
        contiguous_strides(torch.tensor([2, 3]))
    with pytest.raises(ValueError, match=r"index=\(1,\) and stride=\(3, 1\) must have the same length"):
        element_offset((1,), (3, 1))
    with pytest.raises(ValueError, match="offset=-1 must be an int >= 0"):
        element_offset((1,), (1,), -1)
    with pytest.raises(ValueError, match=r"storage must be 1-D .* got shape \(2, 3\)"):
        gather_strided(s.view(2, 3), (2,), (1,))
    with pytest.raises(TypeError, match="storage must be a torch.Tensor"):
        gather_strided([0.0, 1.0], (2,), (1,))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reach position 7, out of bounds for a storage of 6 elements"):
        gather_strided(s, (1,), (1,), 7)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        storage_tensor(s.tolist())  # type: ignore[arg-type]


def test_the_metadata_table_of_the_page() -> None:
    x = torch.arange(12.0).view(3, 4)
    table = {
        "x.t()": (x.t(), (4, 3), (1, 4), 0, False),
        "x[1:]": (x[1:], (2, 4), (4, 1), 4, True),  # an offset does not break contiguity
        "x[:, 1:3]": (x[:, 1:3], (3, 2), (4, 1), 1, False),
        "x[:, ::2]": (x[:, ::2], (3, 2), (4, 2), 0, False),
        "expand": (x[:1].expand(5, 4), (5, 4), (0, 1), 0, False),  # broadcasting: stride 0, no memory
    }
    for name, (v, shape, stride, offset, contiguous) in table.items():
        assert (tuple(v.shape), v.stride(), v.storage_offset(), v.is_contiguous()) == (
            shape,
            stride,
            offset,
            contiguous,
        ), name
        assert is_contiguous(shape, stride) == contiguous
        assert v.untyped_storage().data_ptr() == x.untyped_storage().data_ptr(), name
    with pytest.raises(ValueError, match="step must be greater than zero"):
        x[::-1]
