"""In-place ops: the two autograd errors, the allowed cases, the version counter, SavedTensorAudit."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from snippets.pytorch.inplace_demo import SavedTensorAudit, sgd_update_
from tests.conftest import assert_close

F64 = torch.float64
LEAF_ERROR = "a leaf Variable that requires grad is being used in an in-place operation"
VERSION_ERROR = "one of the variables needed for gradient computation has been modified by an inplace operation"


def test_inplace_on_a_leaf_that_requires_grad_raises(device: torch.device) -> None:
    w = torch.ones(3, dtype=F64, device=device, requires_grad=True)
    with pytest.raises(RuntimeError, match=LEAF_ERROR):
        w.add_(1)
    with pytest.raises(RuntimeError, match=LEAF_ERROR):
        w[0] = 5.0
    with torch.no_grad():  # grad mode off: allowed (this is how optimizers update weights)
        w.add_(1)
    with torch.inference_mode():
        w.mul_(2)
    assert torch.equal(w, torch.full((3,), 4.0, dtype=F64, device=device)) and w.requires_grad
    b = torch.ones(3, device=device)  # a leaf that does not require grad: always allowed
    b.add_(1)
    assert w._version == 2 and b._version == 1


def test_overwriting_a_saved_tensor_raises_at_backward(device: torch.device) -> None:
    x = torch.randn(4, dtype=F64, device=device, requires_grad=True)
    y = x.sigmoid()  # sigmoid saves its output
    y.mul_(2)  # allowed now ...
    with pytest.raises(RuntimeError, match=VERSION_ERROR + r".*is at version 1; expected version 0"):
        y.sum().backward()  # ... detected here


def test_inplace_on_a_tensor_not_saved_is_fine(device: torch.device) -> None:
    x = torch.randn(4, dtype=F64, device=device, requires_grad=True)
    y = x * 2  # multiplying by a Python number saves no tensor
    y.add_(1)
    y[0] = 0.0  # even an indexed write: autograd records it (CopySlices)
    y.sum().backward()
    expected = torch.full((4,), 2.0, dtype=F64, device=device)
    expected[0] = 0.0
    assert_close(x.grad, expected)


@pytest.mark.parametrize("seed", range(3))
def test_inplace_relu_after_linear_matches_out_of_place(seed: int, device: torch.device) -> None:
    torch.manual_seed(seed)
    lin = nn.Linear(5, 4).to(device, F64)
    x = torch.randn(3, 5, dtype=F64, device=device)
    grads = []
    for inplace in (False, True):
        lin.zero_grad()
        out = nn.ReLU(inplace=inplace)(lin(x))  # addmm saves its inputs, not its output
        out.pow(2).sum().backward()
        grads.append([p.grad.clone() for p in lin.parameters()])
    for a, b in zip(*grads):
        assert_close(a, b)
    with pytest.raises(RuntimeError, match=VERSION_ERROR):  # after sigmoid, whose output is saved
        nn.ReLU(inplace=True)(lin(x).sigmoid()).sum().backward()


def test_version_counter_counts_inplace_ops_and_is_shared_by_views() -> None:
    t = torch.zeros(4)
    assert t._version == 0
    t.add_(1)
    t.mul_(3)
    t[0] = 5.0
    torch.add(t, 1, out=t)
    assert t._version == 4
    _ = t + 1  # out-of-place: no bump
    assert t._version == 4
    v = t[:2]  # a view shares its base's counter
    v.zero_()
    assert t._version == v._version == 5
    d = t.detach()  # so does detach()
    d.add_(1)
    assert t._version == 6


def test_detach_keeps_the_check_but_data_silently_breaks_it() -> None:
    x = torch.randn(4, dtype=F64, requires_grad=True)
    y = x.sigmoid()
    y.detach().mul_(2)
    with pytest.raises(RuntimeError, match=VERSION_ERROR):
        y.sum().backward()
    x.grad = None
    y = x.sigmoid()
    s = y.detach().clone()  # the true sigmoid
    y.data.mul_(2)  # .data: same storage, a fresh version counter
    assert y._version == 0
    y.sum().backward()  # no error, wrong gradient: uses 2s (1 - 2s) instead of s (1 - s)
    assert_close(x.grad, 2 * s * (1 - 2 * s))
    assert not torch.allclose(x.grad, s * (1 - s))


def test_audit_records_saved_tensors_and_bytes() -> None:
    x = torch.randn(1000, requires_grad=True)  # float32: 4000 bytes
    with SavedTensorAudit() as a:
        y = x.sigmoid()
    assert len(a.records) == 1 and a.records[0].tensor is y and a.nbytes == 4000  # saves its output
    with SavedTensorAudit() as a:
        x.sin()
    assert a.records[0].tensor is x  # sin saves its input
    with SavedTensorAudit() as a:
        x * 2
    assert a.records == [] and a.nbytes == 0
    w = torch.randn(1000, requires_grad=True)
    with SavedTensorAudit() as a:
        x * w  # each factor is needed for the other's gradient
    assert a.nbytes == 8000


CASES = {
    "sigmoid then y.mul_": (lambda x: x.sigmoid(), lambda x, y: y.mul_(2)),
    "exp then y.add_": (lambda x: x.exp(), lambda x, y: y.add_(1)),
    "tanh then y[0] = 0": (lambda x: x.tanh(), lambda x, y: y.__setitem__(0, 0.0)),
    "a.sin() then a.add_": (lambda x: (x * 1).sin(), None),
    "x * 2 then y.add_": (lambda x: x * 2, lambda x, y: y.add_(1)),
    "relu then sum": (lambda x: x.relu(), lambda x, y: None),
    "pow then y.add_ on a copy": (lambda x: x.pow(3), lambda x, y: y.clone().add_(1)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_audit_matches_pytorchs_own_check(name: str) -> None:
    make, modify = CASES[name]
    outcomes = []
    for audited in (False, True):
        x = torch.randn(5, dtype=F64, requires_grad=True)
        with SavedTensorAudit() if audited else torch.enable_grad() as audit:
            if modify is None:  # modify the input a that sin() saved
                a = x * 1
                y = a.sin()
                a.add_(1)
            else:
                y = make(x)
                modify(x, y)
        stale = len(audit.stale()) if audited else None
        try:
            y.sum().backward()
            outcomes.append(("ok", stale))
        except RuntimeError:
            outcomes.append(("raised", stale))
    (builtin, _), (ours, n_stale) = outcomes
    assert builtin == ours
    assert (n_stale > 0) == (builtin == "raised")


def test_hooks_bypass_pytorchs_version_check() -> None:
    x = torch.randn(3, dtype=F64, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):  # hands back whatever it got
        y = x.sigmoid()
    s = y.detach().clone()
    y.mul_(2)
    y.sum().backward()  # no error: with hooks, checking is the hooks' job (SavedTensorAudit does it)
    assert_close(x.grad, 2 * (2 * s) * (1 - 2 * s))  # d(2 sigmoid)/dx evaluated with the overwritten y
    assert not torch.allclose(x.grad, 2 * s * (1 - s))  # the true gradient


def test_sgd_update_is_allowed_on_leaves(device: torch.device) -> None:
    w = torch.tensor([1.0, 2.0], dtype=F64, device=device, requires_grad=True)
    frozen = torch.zeros(2, dtype=F64, device=device, requires_grad=True)  # grad stays None: skipped
    (w**2).sum().backward()
    sgd_update_([w, frozen], lr=0.25)
    assert_close(w.detach(), torch.tensor([0.5, 1.0], dtype=F64, device=device))  # w - 0.25 * 2w
    assert w.is_leaf and w.grad_fn is None and w._version == 1 and frozen._version == 0


@pytest.mark.parametrize("lr", [0.0, -0.1, float("nan")])
def test_rejects_bad_input(lr: float) -> None:
    with pytest.raises(ValueError, match="lr must be positive"):
        sgd_update_([torch.ones(1, requires_grad=True)], lr)


def test_inplace_on_a_non_leaf_rewrites_its_history() -> None:
    x = torch.randn(3, requires_grad=True)
    y = x * 2
    assert type(y.grad_fn).__name__ == "MulBackward0"
    y.add_(1)  # the op is recorded: y now ends in an AddBackward0 node, x stays the leaf
    assert type(y.grad_fn).__name__ == "AddBackward0" and not y.is_leaf and x.is_leaf
    assert type(y.grad_fn.next_functions[0][0]).__name__ == "MulBackward0"
