"""zero_grad(params, set_to_none) vs Optimizer.zero_grad, and the four claims of the page."""

from __future__ import annotations

import gc
import inspect
import weakref

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from snippets.pytorch.zero_grad import grad_bytes, grads_over_backwards, sgd_zero_vs_none, zero_grad
from tests.conftest import CUDA, assert_close

F64 = torch.float64


class _OpLog(TorchDispatchMode):
    """Record the name of every ATen op that runs."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def _model(seed: int, device: torch.device) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).to(device, F64)


def _backward(model: nn.Module, seed: int, **kw) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 5, generator=g, dtype=F64).to(next(model.parameters()).device)
    model(x).pow(2).sum().backward(**kw)


@pytest.mark.parametrize("set_to_none", [True, False])
@pytest.mark.parametrize("seed", range(3))
def test_matches_optimizer_zero_grad(seed: int, set_to_none: bool, device: torch.device) -> None:
    ours, ref = _model(seed, device), _model(seed, device)
    opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    for step in range(3):
        for m in (ours, ref):
            _backward(m, seed + step)
        zero_grad(ours.parameters(), set_to_none=set_to_none)
        opt.zero_grad(set_to_none=set_to_none)
        for a, b in zip(ours.parameters(), ref.parameters()):
            assert (a.grad is None) == (b.grad is None) == set_to_none
            if not set_to_none:
                assert torch.equal(a.grad, torch.zeros_like(a))
                assert_close(a.grad, b.grad)
    _backward(ours, 9)  # and the next backward gives the same fresh gradient either way
    _backward(ref, 9)
    for a, b in zip(ours.parameters(), ref.parameters()):
        assert_close(a.grad, b.grad)


def test_zero_keeps_the_same_tensor_none_drops_it() -> None:
    model = _model(0, torch.device("cpu"))
    _backward(model, 0)
    before = [p.grad.data_ptr() for p in model.parameters()]
    zero_grad(model.parameters(), set_to_none=False)
    assert [p.grad.data_ptr() for p in model.parameters()] == before  # same storage, now zeros
    assert grad_bytes(model.parameters()) == sum(p.nbytes for p in model.parameters())
    zero_grad(model.parameters(), set_to_none=True)
    assert grad_bytes(model.parameters()) == 0


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")
def test_zero_grad_of_a_create_graph_gradient_detaches_it() -> None:
    w = torch.tensor([2.0], requires_grad=True)
    (w**3).sum().backward(create_graph=True)  # w.grad = 3 w^2 carries a graph
    assert w.grad.grad_fn is not None
    zero_grad([w], set_to_none=False)
    assert w.grad.grad_fn is None and not w.grad.requires_grad and w.grad.item() == 0.0


def test_without_clearing_backward_accumulates() -> None:
    assert grads_over_backwards(4) == [3.0, 6.0, 9.0, 12.0]  # claim (1): 2nd backward doubles
    assert grads_over_backwards(4, clear="zero") == grads_over_backwards(4, clear="none") == [3.0] * 4


def test_set_to_none_releases_the_gradient_tensor_on_cpu() -> None:
    model = _model(1, torch.device("cpu"))
    _backward(model, 1)
    refs = [weakref.ref(p.grad) for p in model.parameters()]
    zero_grad(model.parameters(), set_to_none=False)
    gc.collect()
    assert all(r() is not None for r in refs)  # zero_(): the tensors are still alive
    zero_grad(model.parameters(), set_to_none=True)
    assert all(r() is None for r in refs)  # None: freed at once (reference counting, no gc needed)


@pytest.mark.skipif(not CUDA, reason="no CUDA device")
def test_set_to_none_frees_cuda_memory_into_the_caching_allocator() -> None:
    model = nn.Linear(1024, 1024, device="cuda")
    model(torch.randn(8, 1024, device="cuda")).sum().backward()
    torch.cuda.synchronize()
    held = grad_bytes(model.parameters())
    allocated, reserved = torch.cuda.memory_allocated(), torch.cuda.memory_reserved()
    zero_grad(model.parameters(), set_to_none=False)
    assert torch.cuda.memory_allocated() == allocated
    zero_grad(model.parameters(), set_to_none=True)
    assert allocated - torch.cuda.memory_allocated() >= held  # the grads' blocks are free again ...
    assert torch.cuda.memory_reserved() == reserved  # ... but stay cached by PyTorch, not given to the OS


def test_sgd_moves_a_zero_grad_parameter_but_skips_a_none_one() -> None:
    traj = sgd_zero_vs_none(2)
    assert traj["zero"][1] == traj["none"][1] == pytest.approx(0.89)  # the same first step
    assert traj["zero"][2] == pytest.approx(0.7821)  # momentum + weight decay keep moving it
    assert traj["none"][2] == pytest.approx(0.89)  # grad None: the step skips the parameter
    long = sgd_zero_vs_none(30)
    assert len(set(long["none"][1:])) == 1 and long["zero"][-1] < 0.2


def test_plain_sgd_treats_zero_and_none_alike() -> None:
    traj = sgd_zero_vs_none(5, momentum=0.0, weight_decay=0.0)
    assert traj["zero"] == traj["none"]


def test_optimizer_and_module_default_to_set_to_none() -> None:
    for fn in (torch.optim.Optimizer.zero_grad, nn.Module.zero_grad):
        assert inspect.signature(fn).parameters["set_to_none"].default is True


def test_zero_runs_fill_kernels_none_runs_none() -> None:
    model = _model(2, torch.device("cpu"))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    _backward(model, 0)
    with _OpLog() as log:
        opt.zero_grad(set_to_none=False)
    assert sum("zero_" in op for op in log.ops) == len(list(model.parameters()))
    with _OpLog() as log:
        _backward(model, 1)
    assert sum(op == "aten.add_.Tensor" for op in log.ops) == 4  # next backward adds into the zeros
    with _OpLog() as log:
        opt.zero_grad(set_to_none=True)
    assert not any("zero_" in op for op in log.ops)
    with _OpLog() as log:
        _backward(model, 2)
    assert not any(op == "aten.add_.Tensor" for op in log.ops)  # the new gradient is simply stored


def test_code_reading_grad_must_handle_none() -> None:
    model = _model(3, torch.device("cpu"))
    _backward(model, 3)
    model.zero_grad()  # default: set_to_none=True
    with pytest.raises(AttributeError, match="'NoneType' object has no attribute 'norm'"):
        sum(p.grad.norm() for p in model.parameters())
    total = nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # the built-in skips None grads
    assert total.item() == 0.0


def test_rejects_bad_input() -> None:
    with pytest.raises(TypeError, match="params must contain tensors, got int"):
        zero_grad([1, 2])
    with pytest.raises(ValueError, match="calls >= 1"):
        grads_over_backwards(0)
    with pytest.raises(ValueError, match="clear='all'"):
        grads_over_backwards(2, clear="all")
    with pytest.raises(ValueError, match="steps must be >= 1, got 0"):
        sgd_zero_vs_none(0)
