"""view vs reshape, permute/transpose and contiguous(): our rules vs what PyTorch does to strides and storage."""

from __future__ import annotations

import random
import warnings

import pytest
import torch

from snippets.pytorch.views import (
    contiguous_manual,
    infer_shape,
    permute_meta,
    reshape_manual,
    shares_storage,
    transpose_meta,
    view_strides,
)
from tests.conftest import assert_close

SEEDS = range(8)
VIEW_ERROR = "view size is not compatible with input tensor's size and stride"


def _factors(n: int) -> list[int]:
    out, p = [], 2
    while n > 1:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    return out


def random_tensor(rng: random.Random, device: torch.device | str = "cpu") -> torch.Tensor:
    """A random strided tensor: a fresh one, permuted, then sliced (start and step per dim)."""
    shape = tuple(rng.randint(1, 4) for _ in range(rng.randint(1, 4)))
    x = torch.randn(shape, dtype=torch.float64, device=device)
    if rng.random() < 0.7:
        x = x.permute(*rng.sample(range(x.dim()), x.dim()))
    if rng.random() < 0.6:
        x = x[
            tuple(slice(rng.randint(0, n - 1) if rng.random() < 0.3 else 0, None, rng.randint(1, 2)) for n in x.shape)
        ]
    return x


def random_new_shape(rng: random.Random, numel: int) -> tuple[int, ...]:
    """A random shape with ``numel`` elements: the prime factors grouped at random, with size-1 dims sprinkled in."""
    factors = _factors(numel)
    if rng.random() < 0.5:
        rng.shuffle(factors)
    groups: list[int] = []
    for f in factors:
        if groups and rng.random() < 0.5:
            groups[-1] *= f
        else:
            groups.append(f)
    for _ in range(rng.randint(0, 2)):
        groups.insert(rng.randint(0, len(groups)), 1)
    return tuple(groups) if groups else ()


@pytest.mark.parametrize("seed", SEEDS)
def test_view_strides_is_none_exactly_when_view_raises(seed: int) -> None:
    rng = random.Random(seed)
    outcomes = set()
    for _ in range(40):
        x = random_tensor(rng)
        new = random_new_shape(rng, x.numel())
        ours = view_strides(x.shape, x.stride(), new)
        if ours is None:
            with pytest.raises(RuntimeError, match=VIEW_ERROR):
                x.view(new)
        else:
            v = x.view(new)
            assert v.stride() == ours, (tuple(x.shape), x.stride(), new)
            assert v.data_ptr() == x.data_ptr()  # same first element: a view keeps the offset
        outcomes.add(ours is None)
    assert outcomes == {True, False}


@pytest.mark.parametrize("seed", SEEDS)
def test_reshape_shares_storage_exactly_when_a_view_exists(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(40):
        x = random_tensor(rng)
        new = random_new_shape(rng, x.numel())
        viewable = view_strides(x.shape, x.stride(), new) is not None
        r = x.reshape(new)
        assert shares_storage(r, x) == viewable
        ours = reshape_manual(x, new)
        assert shares_storage(ours, x) == viewable
        assert ours.stride() == r.stride() and torch.equal(ours, r)


@pytest.mark.parametrize("seed", SEEDS[:4])
def test_reshape_manual_matches_reshape_forward_and_backward(seed: int, device: torch.device) -> None:
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(8):
        base = torch.randn(24, dtype=torch.float64, generator=gen).to(device)
        x = random_tensor(rng, device)
        x = base[: x.numel()].view(x.shape) if rng.random() < 0.3 else x  # contiguous cases too
        new = random_new_shape(rng, x.numel())
        a = x.detach().clone().requires_grad_()
        b = x.detach().clone().requires_grad_()
        ours, ref = reshape_manual(a, new), torch.reshape(b, new)
        assert_close(ours, ref)
        grad = torch.randn(ref.shape, dtype=torch.float64, generator=gen).to(device)
        ours.backward(grad)
        ref.backward(grad)
        assert_close(a.grad, b.grad)


def test_empty_and_zero_dim_tensors_follow_aten() -> None:
    for x, new in [
        (torch.empty(2, 0, 3), (0, 6)),
        (torch.empty(2, 0, 3).transpose(0, 2), (3, 0, 2)),
        (torch.empty(2, 0, 3).transpose(0, 2), (0,)),
        (torch.tensor(5.0), (1, 1)),
        (torch.tensor(5.0), ()),
    ]:
        assert x.view(new).stride() == view_strides(x.shape, x.stride(), new)


def test_splitting_always_works_merging_needs_neighbours_in_memory() -> None:
    p = torch.arange(24.0).view(2, 3, 4).permute(1, 0, 2)  # shape (3, 2, 4), stride (4, 12, 1)
    assert view_strides(p.shape, p.stride(), (3, 2, 2, 2)) == p.view(3, 2, 2, 2).stride() == (4, 12, 2, 1)
    for merge in [(6, 4), (3, 8), (24,)]:
        assert view_strides(p.shape, p.stride(), merge) is None
        with pytest.raises(RuntimeError, match=VIEW_ERROR):
            p.view(merge)
    s = torch.arange(24.0).view(2, 3, 4)[:, :, :2]  # shape (2, 3, 2), stride (12, 4, 1)
    assert view_strides(s.shape, s.stride(), (6, 2)) == s.view(6, 2).stride() == (4, 1)  # 12 == 3 * 4: mergeable
    assert view_strides(s.shape, s.stride(), (2, 6)) is None  # 4 != 2 * 1: a gap between dims 1 and 2


def test_reshape_view_propagates_writes_and_a_copy_does_not() -> None:
    x = torch.zeros(2, 3)
    r = x.reshape(6)  # contiguous: reshape returns a view
    r[0] = 1.0
    assert x[0, 0] == 1.0  # the write shows through: reshape did not copy
    t = x.t()
    c = t.reshape(6)  # no view exists: reshape copies
    c[0] = 99.0
    assert x[0, 0] == 1.0 and not shares_storage(c, x)
    assert x.view(6)._base is x and r._base is x and c._base is None


def test_infer_shape_like_view_minus_one() -> None:
    x = torch.zeros(2, 3, 4)
    for shape in [(-1,), (4, -1), (-1, 2, 3), (2, -1, 1)]:
        assert infer_shape(shape, x.numel()) == tuple(x.view(shape).shape)
    empty = torch.empty(2, 0, 3)
    assert infer_shape((-1, 3), 0) == tuple(empty.view(-1, 3).shape) == (0, 3)


def test_rejected_inputs() -> None:
    x = torch.zeros(3, 4)
    with pytest.raises(ValueError, match=r"shape=\(5, 3\) is invalid for input of size 12"):
        view_strides((3, 4), (4, 1), (5, 3))
    with pytest.raises(RuntimeError, match=r"shape '\[5, 3\]' is invalid for input of size 12"):
        x.view(5, 3)
    with pytest.raises(ValueError, match=r"only one dimension can be inferred"):
        infer_shape((-1, -1), 12)
    with pytest.raises(RuntimeError, match="only one dimension can be inferred"):
        x.view(-1, -1)
    with pytest.raises(ValueError, match=r"shape=\(-2, 6\) has an entry < -1"):
        infer_shape((-2, 6), 12)
    with pytest.raises(ValueError, match=r"shape=\(0, -1\) is ambiguous for input of size 0"):
        infer_shape((0, -1), 0)
    with pytest.raises(RuntimeError, match="cannot reshape tensor of 0 elements"):
        torch.empty(0).view(0, -1)
    with pytest.raises(ValueError, match=r"shape=\(3, 4\) and stride=\(1,\) must have the same length"):
        view_strides((3, 4), (1,), (12,))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        reshape_manual([1, 2], (2,))  # type: ignore[arg-type]


def test_clone_keeps_transposed_strides_and_reshape_clone_always_copies() -> None:
    x = torch.zeros(3, 4)
    kept = x.t().clone()  # memory_format=torch.preserve_format: the copy keeps the transposed layout
    assert kept.stride() == (1, 4) and not kept.is_contiguous()
    with pytest.raises(RuntimeError, match=VIEW_ERROR):
        kept.view(12)
    for src in (x, x.t()):
        assert not shares_storage(src.reshape(-1).clone(), x)


# ----- 4.14: transpose, permute, .T and contiguous() -----


@pytest.mark.parametrize("seed", SEEDS)
def test_permute_meta_matches_permute_and_shares_data(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(20):
        x = random_tensor(rng)
        dims = rng.sample(range(x.dim()), x.dim())
        if rng.random() < 0.3:
            dims = [d - x.dim() for d in dims]  # negative dims, as permute accepts them
        p = x.permute(dims)
        assert permute_meta(x.shape, x.stride(), dims) == (tuple(p.shape), p.stride())
        assert p.data_ptr() == x.data_ptr() and p.storage_offset() == x.storage_offset()  # a view: nothing moved
        d0, d1 = rng.randrange(x.dim()), rng.randrange(x.dim())
        t = x.transpose(d0, d1)
        assert transpose_meta(x.shape, x.stride(), d0, d1) == (tuple(t.shape), t.stride())
        assert t.data_ptr() == x.data_ptr()


@pytest.mark.parametrize("seed", SEEDS[:4])
def test_permuted_contiguous_tensor_is_contiguous_iff_big_dims_keep_their_order(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(20):
        x = torch.zeros([rng.randint(1, 3) for _ in range(rng.randint(1, 4))])
        dims = rng.sample(range(x.dim()), x.dim())
        big = [d for d in dims if x.shape[d] > 1]
        assert x.permute(dims).is_contiguous() == (big == sorted(big))


def test_the_permute_example_of_the_notes() -> None:
    x = torch.arange(24.0).view(2, 3, 4)
    p = x.permute(2, 0, 1)
    assert tuple(p.shape) == (4, 2, 3) and p.stride() == (1, 12, 4)
    assert p.data_ptr() == x.data_ptr() and not p.is_contiguous()
    assert x.permute(1, 0, 2).stride() == (4, 12, 1)
    p[0, 0, 1] = -1.0  # a write through the permuted view lands in x
    assert x[0, 1, 0] == -1.0


@pytest.mark.parametrize("seed", SEEDS[:4])
def test_contiguous_copies_only_when_needed(seed: int, device: torch.device) -> None:
    rng = random.Random(seed)
    for _ in range(10):
        x = random_tensor(rng, device)
        ours, ref = contiguous_manual(x), x.contiguous()
        if x.is_contiguous():
            assert ours is x and ref is x  # the very same object: no copy at all
        else:
            assert ours.data_ptr() != x.data_ptr() and ref.data_ptr() != x.data_ptr()
        assert ours.stride() == ref.stride() and ours.is_contiguous()
        assert torch.equal(ours, ref)


@pytest.mark.parametrize("seed", SEEDS[:3])
def test_contiguous_manual_matches_contiguous_forward_and_backward(seed: int, device: torch.device) -> None:
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(5):
        x = random_tensor(rng, device).detach()
        a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
        pa, pb = a.transpose(0, -1), b.transpose(0, -1)
        ours, ref = contiguous_manual(pa), pb.contiguous()
        assert_close(ours, ref)
        grad = torch.randn(ref.shape, dtype=torch.float64, generator=gen).to(device)
        ours.backward(grad)
        ref.backward(grad)
        assert_close(a.grad, b.grad)


def test_dot_T_on_3d_is_deprecated_mT_and_permute_are_not() -> None:
    x = torch.arange(24.0).view(2, 3, 4)
    was = torch.is_warn_always_enabled()
    torch.set_warn_always(True)  # a TORCH_WARN_ONCE warning: only the first use per process warns otherwise
    try:
        with pytest.warns(UserWarning, match=r"The use of `x.T` on tensors of dimension other than 2"):
            t = x.T
    finally:
        torch.set_warn_always(was)
    assert tuple(t.shape) == (4, 3, 2) and t.stride() == x.permute(2, 1, 0).stride()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert x.mT.stride() == x.transpose(-2, -1).stride() == (12, 1, 4)
        assert x.permute(*range(x.ndim - 1, -1, -1)).shape == t.shape
        m = torch.zeros(3, 4)
        assert m.T.stride() == m.t().stride() == (1, 4)  # 2-D: no warning


def test_contiguous_is_needed_before_view_not_before_most_kernels() -> None:
    torch.manual_seed(0)
    X = torch.randn(4, 5, 8)  # (batch, num_steps, embed)
    Xs = X.permute(1, 0, 2)  # (num_steps, batch, embed): a non-contiguous view
    assert not Xs.is_contiguous()
    with pytest.raises(RuntimeError, match=VIEW_ERROR):
        Xs.view(20, 8)
    assert Xs.contiguous().view(20, 8).shape == Xs.reshape(20, 8).shape == (20, 8)
    rnn = torch.nn.RNN(8, 6)  # time-major input
    w = torch.randn(8, 3)
    lin = torch.nn.Linear(8, 3)
    # same values (up to float rounding: the layout can change the order of a reduction)
    for ours, ref in [
        (rnn(Xs)[0], rnn(Xs.contiguous())[0]),
        (Xs @ w, Xs.contiguous() @ w),
        (Xs.sum(0), Xs.contiguous().sum(0)),
        (lin(Xs), lin(Xs.contiguous())),
    ]:
        torch.testing.assert_close(ours, ref)  # float32 default tolerances


def test_permute_rejected_inputs() -> None:
    with pytest.raises(ValueError, match=r"dims=\(0,\) must have one entry per dim of shape=\(2, 3\)"):
        permute_meta((2, 3), (3, 1), (0,))
    with pytest.raises(RuntimeError, match="number of dimensions in the tensor input does not match"):
        torch.zeros(2, 3).permute(0)
    with pytest.raises(ValueError, match=r"dims=\(0, 0\) repeats a dim"):
        permute_meta((2, 3), (3, 1), (0, 0))
    with pytest.raises(RuntimeError, match="duplicate dims are not allowed"):
        torch.zeros(2, 3).permute(0, 0)
    with pytest.raises(ValueError, match=r"dims=\(0, 2\) has an entry out of range for 2 dims"):
        permute_meta((2, 3), (3, 1), (0, 2))
    with pytest.raises(ValueError, match="dim 2 is out of range for 2 dims"):
        transpose_meta((2, 3), (3, 1), 0, 2)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        contiguous_manual([1.0])  # type: ignore[arg-type]
