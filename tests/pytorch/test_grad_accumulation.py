"""Gradient accumulation == full-batch gradient (float64), and the two cases where it is not."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from snippets.pytorch.grad_accumulation import accumulate_grads, accumulated_step, grads_of, split_batch
from tests.conftest import assert_close

F64 = torch.float64


def _problem(seed: int, device: torch.device, bn: bool = False):
    g = torch.Generator().manual_seed(seed)
    n, d_in, d_h, d_out = (int(v) for v in torch.randint(2, 9, (4,), generator=g))
    n += 6  # at least 8 samples, so it can be cut into unequal micro-batches
    torch.manual_seed(seed)
    layers = [nn.Linear(d_in, d_h)] + ([nn.BatchNorm1d(d_h)] if bn else []) + [nn.Tanh(), nn.Linear(d_h, d_out)]
    model = nn.Sequential(*layers).to(device, F64)
    x = torch.randn(n, d_in, generator=g, dtype=F64).to(device)
    y = torch.randn(n, d_out, generator=g, dtype=F64).to(device)
    cut = sorted(torch.randperm(n - 1, generator=g)[:2].add(1).tolist())  # 3 unequal, non-empty pieces
    sizes = [cut[0], cut[1] - cut[0], n - cut[1]]
    return model, x, y, sizes


def _full_grads(model, loss_fn, x, y):
    model.zero_grad()
    loss_fn(model(x), y).backward()
    return grads_of(model)


@pytest.mark.parametrize("seed", range(5))
def test_matches_full_batch_backward(seed: int, device: torch.device) -> None:
    model, x, y, sizes = _problem(seed, device)
    full = _full_grads(model, F.mse_loss, x, y)
    model.zero_grad()
    loss = accumulate_grads(model, F.mse_loss, split_batch(x, y, sizes), scale="size")
    for a, b in zip(grads_of(model), full):
        assert_close(a, b)
    assert_close(loss, F.mse_loss(model(x), y).detach())  # the weighted losses add up to the full loss
    # sum reduction needs no weights at all
    full_sum = _full_grads(model, lambda o, t: F.mse_loss(o, t, reduction="sum"), x, y)
    model.zero_grad()
    accumulate_grads(model, lambda o, t: F.mse_loss(o, t, reduction="sum"), split_batch(x, y, sizes), scale="none")
    for a, b in zip(grads_of(model), full_sum):
        assert_close(a, b)


@pytest.mark.parametrize("seed", range(3))
def test_equal_micro_batches_with_1_over_k(seed: int, device: torch.device) -> None:
    model, x, y, _ = _problem(seed, device)
    n = x.size(0) - x.size(0) % 4
    x, y = x[:n], y[:n]
    full = _full_grads(model, F.mse_loss, x, y)
    model.zero_grad()
    accumulate_grads(model, F.mse_loss, split_batch(x, y, [n // 4] * 4), scale="count")
    for a, b in zip(grads_of(model), full):
        assert_close(a, b)


@pytest.mark.parametrize("seed", range(3))
def test_accumulated_step_equals_full_batch_step(seed: int, device: torch.device) -> None:
    model, x, y, sizes = _problem(seed, device)
    twin = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt_ref = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9)
    for _ in range(3):
        accumulated_step(model, F.mse_loss, split_batch(x, y, sizes), opt)
        opt_ref.zero_grad()
        F.mse_loss(twin(x), y).backward()
        opt_ref.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        assert_close(a, b)


def test_unequal_micro_batches_with_1_over_k_are_wrong() -> None:
    model, x, y, sizes = _problem(0, torch.device("cpu"))
    assert len(set(sizes)) > 1
    full = _full_grads(model, F.mse_loss, x, y)
    model.zero_grad()
    accumulate_grads(model, F.mse_loss, split_batch(x, y, sizes), scale="count")
    assert max((a - b).abs().max().item() for a, b in zip(grads_of(model), full)) > 1e-3


def test_batchnorm_breaks_accumulation_in_train_mode_only() -> None:
    model, x, y, _ = _problem(1, torch.device("cpu"), bn=True)
    sizes = [3, x.size(0) - 3]  # BatchNorm needs at least 2 samples per micro-batch in training
    state = {k: v.clone() for k, v in model.state_dict().items()}
    full = _full_grads(model, F.mse_loss, x, y)
    model.load_state_dict(state)
    model.zero_grad()
    accumulate_grads(model, F.mse_loss, split_batch(x, y, sizes), scale="size")
    assert max((a - b).abs().max().item() for a, b in zip(grads_of(model), full)) > 1e-3  # per-batch statistics
    model.load_state_dict(state)
    model.eval()  # running statistics: every sample is normalised independently of its batch
    full = _full_grads(model, F.mse_loss, x, y)
    model.zero_grad()
    accumulate_grads(model, F.mse_loss, split_batch(x, y, sizes), scale="size")
    for a, b in zip(grads_of(model), full):
        assert_close(a, b)


def test_backward_adds_into_grad() -> None:
    w = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    for k in range(1, 4):
        (w * torch.tensor([3.0, 5.0], dtype=F64)).sum().backward()
        assert torch.equal(w.grad, k * torch.tensor([3.0, 5.0], dtype=F64))


def test_rejects_bad_input() -> None:
    model = nn.Linear(3, 1)
    x, y = torch.randn(4, 3), torch.randn(4, 1)
    with pytest.raises(ValueError, match="micro_batches is empty"):
        accumulate_grads(model, F.mse_loss, [])
    with pytest.raises(ValueError, match="scale='mean' must be one of"):
        accumulate_grads(model, F.mse_loss, [(x, y)], scale="mean")
    with pytest.raises(ValueError, match="at least one sample"):
        accumulate_grads(model, F.mse_loss, [(x, y), (x[:0], y[:0])])
    with pytest.raises(ValueError, match=r"must return a scalar, got shape \(4, 1\)"):
        accumulate_grads(model, lambda o, t: (o - t) ** 2, [(x, y)])
    with pytest.raises(ValueError, match="sum to the batch size 4"):
        split_batch(x, y, [1, 2])
    with pytest.raises(ValueError, match="differ in batch size: 4 != 3"):
        split_batch(x, y[:3], [4])
