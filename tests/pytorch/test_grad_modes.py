"""my_no_grad vs torch.no_grad, inference-mode tensors, and in-place leaf updates under no_grad."""

from __future__ import annotations

import contextlib
import threading

import pytest
import torch
from torch import nn

from snippets.pytorch.grad_modes import grad_state, my_no_grad, sgd_step_
from tests.conftest import assert_close

F64 = torch.float64
OUTER = {
    "none": contextlib.nullcontext,
    "enable_grad": torch.enable_grad,
    "no_grad": torch.no_grad,
    "set_grad_enabled(False)": lambda: torch.set_grad_enabled(False),
}


def _trace(no_grad, outer) -> list[bool]:
    """requires_grad of x * 2 at every point of a nested block, and the mode after it."""
    x = torch.ones(2, requires_grad=True)
    seen = []
    with OUTER[outer]():
        seen.append((x * 2).requires_grad)
        with no_grad():
            seen.append((x * 2).requires_grad)
            with torch.enable_grad():
                seen.append((x * 2).requires_grad)
                with no_grad():
                    seen.append((x * 2).requires_grad)
                seen.append((x * 2).requires_grad)
            seen.append((x * 2).requires_grad)
        seen.append((x * 2).requires_grad)
    seen.append(torch.is_grad_enabled())
    return seen


@pytest.mark.parametrize("outer", list(OUTER))
def test_matches_torch_no_grad_when_nested(outer: str) -> None:
    ours = _trace(my_no_grad, outer)
    assert ours == _trace(torch.no_grad, outer)
    assert ours[1] is False and ours[2] is True  # enable_grad wins inside no_grad
    assert ours[-1] is True  # everything restored


@pytest.mark.parametrize("outer", list(OUTER))
def test_matches_torch_no_grad_as_decorator(outer: str) -> None:
    def body(x):
        inside = (x * 2).requires_grad
        with torch.enable_grad():
            again = (x * 2).requires_grad
        return inside, again, torch.is_grad_enabled()

    x = torch.ones(2, requires_grad=True)
    variants = [my_no_grad(body), my_no_grad()(body), torch.no_grad()(body), torch.no_grad(body)]
    with OUTER[outer]():
        results = [f(x) for f in variants]
        after = torch.is_grad_enabled()
    assert all(r == (False, True, False) for r in results)
    assert after == (outer in ("none", "enable_grad"))
    assert my_no_grad(body).__name__ == "body"  # functools.wraps


def test_decorator_syntax_and_recursion() -> None:
    @my_no_grad
    def f(x, depth):
        assert not torch.is_grad_enabled()
        return x * 2 if depth == 0 else f(x, depth - 1)

    x = torch.ones(2, requires_grad=True)
    assert not f(x, 3).requires_grad and torch.is_grad_enabled()


@pytest.mark.parametrize("start", [True, False])
@pytest.mark.parametrize("impl", [my_no_grad, torch.no_grad])
def test_previous_mode_restored_after_an_exception(start: bool, impl) -> None:
    with torch.set_grad_enabled(start):
        with pytest.raises(KeyError):
            with impl():
                raise KeyError("boom")
        assert torch.is_grad_enabled() == start

        @impl()
        def fails():
            raise ValueError("inside")

        with pytest.raises(ValueError, match="inside"):
            fails()
        assert torch.is_grad_enabled() == start
    assert torch.is_grad_enabled()


def test_same_instance_can_be_reentered() -> None:
    cm = my_no_grad()
    with cm:
        with torch.enable_grad():
            with cm:
                assert not torch.is_grad_enabled()
            assert torch.is_grad_enabled()
        assert not torch.is_grad_enabled()
    assert torch.is_grad_enabled()


def test_both_are_built_on_set_grad_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bool] = []
    real = torch.set_grad_enabled

    def spy(mode):
        calls.append(mode)
        return real(mode)

    monkeypatch.setattr(torch, "set_grad_enabled", spy)
    with torch.no_grad():
        pass
    torch_calls, calls[:] = list(calls), []
    with my_no_grad():
        pass
    assert torch_calls == calls == [False, True]  # enter: False; exit: the saved previous mode


def test_set_grad_enabled_as_a_function_switches_immediately() -> None:
    try:
        torch.set_grad_enabled(False)  # not a with-statement: the flag flips right away
        assert not torch.is_grad_enabled()
    finally:
        torch.set_grad_enabled(True)
    assert torch.is_grad_enabled()


def test_grad_mode_is_thread_local() -> None:
    seen = []
    with my_no_grad():
        t = threading.Thread(target=lambda: seen.append(torch.is_grad_enabled()))
        t.start()
        t.join()
        assert not torch.is_grad_enabled()
    assert seen == [True]


@pytest.mark.parametrize("impl", [my_no_grad, torch.no_grad])
def test_factory_tensors_may_still_require_grad(impl) -> None:
    x = torch.ones(2, requires_grad=True)
    with impl():
        y = x * 2
        a = torch.ones(2, requires_grad=True)
        p = nn.Parameter(torch.ones(2))
    assert not y.requires_grad and y.is_leaf  # op results: no graph
    assert a.requires_grad and p.requires_grad  # explicitly created leaves keep the flag


def test_inference_tensors_cannot_enter_autograd(device: torch.device) -> None:
    x = torch.randn(3, dtype=F64, device=device, requires_grad=True)
    with torch.inference_mode():
        assert grad_state() == {"grad": False, "inference": True}
        t = torch.ones(3, dtype=F64, device=device) * 2
        u = x * 2  # even ops on leaves that require grad produce inference tensors
    assert t.is_inference() and u.is_inference() and not u.requires_grad and u.grad_fn is None
    with pytest.raises(RuntimeError, match="Inference tensors cannot be saved for backward"):
        t * x  # mul would save t for its backward
    with pytest.raises(RuntimeError, match="Setting requires_grad=True on inference tensor outside InferenceMode"):
        t.requires_grad_()
    with pytest.raises(RuntimeError, match="Inplace update to inference tensor outside InferenceMode"):
        t.add_(1)
    s = t + x  # add saves nothing, so this one is allowed
    s.sum().backward()
    assert_close(x.grad, torch.ones_like(x))
    c = t.clone()  # the way out: a clone made outside is a normal tensor
    assert not c.is_inference()
    (c * x).sum().backward()
    with torch.no_grad():  # no_grad tensors, in contrast, are ordinary tensors
        n = torch.ones(3, dtype=F64, device=device) * 2
    assert not n.is_inference()
    (n * x).sum().backward()
    n.add_(1)


def test_in_place_update_of_a_leaf_needs_no_grad(device: torch.device) -> None:
    w = torch.randn(3, dtype=F64, device=device, requires_grad=True)
    (w**2).sum().backward()
    with pytest.raises(RuntimeError, match="a leaf Variable that requires grad is being used in an in-place operation"):
        w -= 0.1 * w.grad
    ptr, version, expected = w.data_ptr(), w._version, w.detach() - 0.1 * w.grad
    with my_no_grad():
        w -= 0.1 * w.grad  # what every optimizer does
    assert w._version == version + 1 and w.data_ptr() == ptr  # same storage, one in-place write
    assert w.is_leaf and w.requires_grad and w.grad_fn is None
    assert_close(w.detach(), expected)


def test_sgd_step_matches_torch_optim_sgd(device: torch.device) -> None:
    torch.manual_seed(0)
    ours = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).to(device, F64)
    ref = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).to(device, F64)
    ref.load_state_dict(ours.state_dict())
    opt = torch.optim.SGD(ref.parameters(), lr=0.05)
    x, y = torch.randn(16, 3, dtype=F64, device=device), torch.randn(16, 1, dtype=F64, device=device)
    losses = []
    for _ in range(20):
        for model in (ours, ref):
            model.zero_grad()
            loss = ((model(x) - y) ** 2).mean()
            loss.backward()
        losses.append(loss.item())
        sgd_step_(ours.parameters(), lr=0.05)
        opt.step()
        for p, q in zip(ours.parameters(), ref.parameters()):
            assert_close(p, q)
    assert losses[-1] < losses[0]


def test_rejects_bad_input() -> None:
    w = torch.ones(2, requires_grad=True)
    with pytest.raises(ValueError, match="lr=0 must be positive"):
        sgd_step_([w], lr=0)
    with pytest.raises(ValueError, match="got a non-leaf with grad_fn=MulBackward0"):
        sgd_step_([w * 2], lr=0.1)
    with pytest.raises(TypeError, match="my_no_grad decorates a function, got int"):
        my_no_grad(3)

    def gen():
        yield 1

    with pytest.raises(TypeError, match="cannot decorate the generator function 'gen'"):
        my_no_grad(gen)
    assert torch.is_grad_enabled()


@pytest.mark.parametrize("phase", ["train", "val"])
def test_set_grad_enabled_switches_one_loop_between_phases(phase: str) -> None:
    x = torch.ones(2, requires_grad=True)
    with torch.set_grad_enabled(phase == "train"):
        y = x * 2
    assert y.requires_grad == (phase == "train") and torch.is_grad_enabled()


def test_the_notes_typos_fail_silently_or_loudly() -> None:
    assert not hasattr(torch, "set_grad_enable")  # the notes' spelling does not exist
    t = torch.ones(2)
    t.require_grads = True  # a typo on a tensor just creates a new Python attribute ...
    assert not t.requires_grad  # ... and changes nothing
    with pytest.raises(TypeError):
        torch.set_grad_enabled("Flase")  # the mode must be a bool
