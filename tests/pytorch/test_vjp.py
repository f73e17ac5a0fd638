"""v^T J from an explicit Jacobian vs backward(v), torch.autograd.grad(grad_outputs=v) and torch.func.vjp."""

from __future__ import annotations

import pytest
import torch

from snippets.pytorch.vjp import jacobian_matrix, vjp_via_backward, vjp_via_jacobian
from tests.conftest import assert_close

F64 = torch.float64


def _problem(seed: int, device: torch.device):
    """A random non-linear f: (*x_shape) -> (*y_shape) with m != n, plus x and v."""
    g = torch.Generator().manual_seed(seed)
    x_shape = tuple(int(s) for s in torch.randint(1, 5, (int(torch.randint(1, 4, (1,), generator=g)),), generator=g))
    y_shape = tuple(int(s) for s in torch.randint(1, 5, (int(torch.randint(1, 4, (1,), generator=g)),), generator=g))
    n, m = torch.Size(x_shape).numel(), torch.Size(y_shape).numel()
    a = torch.randn(m, n, generator=g, dtype=F64).to(device)
    c = torch.randn(m, generator=g, dtype=F64).to(device)

    def f(t: torch.Tensor) -> torch.Tensor:
        z = a @ t.reshape(-1)
        return (torch.tanh(z) * z + c * z.exp().sin()).reshape(y_shape)

    x = torch.randn(x_shape, generator=g, dtype=F64).to(device)
    v = torch.randn(y_shape, generator=g, dtype=F64).to(device)
    return f, x, v, a


@pytest.mark.parametrize("seed", range(6))
def test_matches_autograd_grad_and_func_vjp(seed: int, device: torch.device) -> None:
    f, x, v, _ = _problem(seed, device)
    y, ours = vjp_via_jacobian(f, x, v)
    xr = x.clone().requires_grad_()
    yr = f(xr)
    (ref,) = torch.autograd.grad(yr, xr, grad_outputs=v)
    assert_close(y, yr.detach())
    assert_close(ours, ref)
    y_func, vjp_fn = torch.func.vjp(f, x)
    assert_close(ours, vjp_fn(v)[0])
    assert_close(y_func, y)
    assert_close(vjp_via_backward(f, x, v), ours)


@pytest.mark.parametrize("seed", range(4))
def test_jacobian_matches_torch_jacobian_and_finite_differences(seed: int, device: torch.device) -> None:
    f, x, _, _ = _problem(seed, device)
    jac = jacobian_matrix(f, x)
    assert jac.shape == (f(x).numel(), x.numel())
    ref = torch.autograd.functional.jacobian(f, x)  # (*y_shape, *x_shape)
    assert_close(jac, ref.reshape(jac.shape))
    eps, flat = 1e-6, x.reshape(-1)  # independent of autograd: central differences, column j = J e_j
    cols = [
        (f((flat + eps * e).reshape(x.shape)) - f((flat - eps * e).reshape(x.shape))).reshape(-1) / (2 * eps)
        for e in torch.eye(x.numel(), dtype=F64, device=device)
    ]
    assert_close(jac, torch.stack(cols, 1), rtol=1e-6, atol=1e-7)


def test_constant_and_partly_constant_functions(device: torch.device) -> None:
    x = torch.randn(3, dtype=F64, device=device)
    assert torch.equal(
        jacobian_matrix(lambda t: torch.ones(2, dtype=F64, device=device), x),
        torch.zeros(2, 3, dtype=F64, device=device),
    )
    jac = jacobian_matrix(lambda t: torch.stack([t.sum(), torch.zeros((), dtype=F64, device=device)]), x)
    assert torch.equal(jac, torch.tensor([[1.0, 1, 1], [0, 0, 0]], dtype=F64, device=device))


def test_jacobian_of_a_linear_map_is_its_matrix(device: torch.device) -> None:
    _, _, _, a = _problem(7, device)
    x = torch.randn(a.shape[1], dtype=F64, device=device)
    assert_close(jacobian_matrix(lambda t: a @ t, x), a)  # J = A, so v^T J = A^T v
    v = torch.randn(a.shape[0], dtype=F64, device=device)
    assert_close(vjp_via_backward(lambda t: a @ t, x, v), a.T @ v)


def test_backward_accumulates_jt_v(device: torch.device) -> None:
    f, x, v, _ = _problem(1, device)
    _, jtv = vjp_via_jacobian(f, x, v)
    xr = x.clone().requires_grad_()
    f(xr).backward(v)
    f(xr).backward(v)  # a second call adds
    assert_close(xr.grad, 2 * jtv)


def test_backward_v_equals_gradient_of_weighted_sum(device: torch.device) -> None:
    f, x, v, _ = _problem(2, device)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    f(a).backward(v)
    (f(b) * v).sum().backward()  # v is a constant weight: d(sum v_i y_i)/dx = J^T v
    assert_close(a.grad, b.grad)


def test_sum_backward_equals_ones_gradient(device: torch.device) -> None:
    f, x, _, _ = _problem(3, device)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    f(a).sum().backward()
    y = f(b)
    y.backward(torch.ones_like(y))
    assert_close(a.grad, b.grad)


def test_scalar_implicit_gradient_is_one_and_backward_1_is_a_type_error() -> None:
    x = torch.randn(4, dtype=F64)
    s = vjp_via_backward(lambda t: (t**3).sum(), x)
    assert_close(s, 3 * x**2)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    (a**3).sum().backward()
    (b**3).sum().backward(torch.tensor(1.0, dtype=F64))
    assert_close(a.grad, b.grad)
    c = x.clone().requires_grad_()
    with pytest.raises(TypeError, match="'int' object is not iterable"):
        (c**3).sum().backward(1)
    with pytest.raises(TypeError, match="'float' object is not iterable"):
        (c**3).sum().backward(1.0)
    (c**3).sum().backward(torch.tensor(1))  # an integer tensor is accepted and cast
    assert_close(c.grad, a.grad)
    d = x.clone().requires_grad_()
    d[:1].mul(2).backward()  # "scalar" means one element: shape (1,) works too
    assert d.grad[0] == 2


def test_non_scalar_without_gradient_raises(device: torch.device) -> None:
    x = torch.randn(3, dtype=F64, device=device, requires_grad=True)
    y = x * 2
    with pytest.raises(RuntimeError, match="grad can be implicitly created only for scalar outputs"):
        y.backward()
    with pytest.raises(RuntimeError, match="grad can be implicitly created only for scalar outputs"):
        torch.autograd.grad(y, x)
    with pytest.raises(RuntimeError, match="Mismatch in shape"):
        y.backward(torch.ones(2, dtype=F64, device=device))


def test_rejects_bad_input() -> None:
    x = torch.randn(3, dtype=F64)

    def f(t):
        return t * 2

    with pytest.raises(ValueError, match=r"v has shape \(2,\) but f\(x\) has shape \(3,\)"):
        vjp_via_jacobian(f, x, torch.ones(2, dtype=F64))
    with pytest.raises(ValueError, match=r"v has shape \(3, 1\) but f\(x\) has shape \(3,\)"):
        vjp_via_backward(f, x, torch.ones(3, 1, dtype=F64))
    with pytest.raises(ValueError, match="must have the dtype and device of f"):
        vjp_via_jacobian(f, x, torch.ones(3, dtype=torch.float32))
    with pytest.raises(ValueError, match=r"f\(x\) has shape \(3,\): pass v"):
        vjp_via_backward(f, x)
    with pytest.raises(ValueError, match="x must be floating point"):
        jacobian_matrix(f, torch.arange(3))
    with pytest.raises(ValueError, match=r"x is empty \(shape \(0, 2\)\)"):
        jacobian_matrix(f, torch.zeros(0, 2))
    with pytest.raises(TypeError, match="x must be a torch.Tensor, got list"):
        jacobian_matrix(f, [1.0, 2.0])
    with pytest.raises(TypeError, match="v must be a torch.Tensor, got float"):
        vjp_via_jacobian(f, x, 1.0)
    for call in (
        lambda g: vjp_via_jacobian(g, x, x),
        lambda g: vjp_via_backward(g, x, x),
        lambda g: jacobian_matrix(g, x),
    ):
        with pytest.raises(TypeError, match="f must return a torch.Tensor, got tuple"):
            call(lambda t: (t, t))


def test_works_when_called_under_no_grad(device: torch.device) -> None:
    f, x, v, _ = _problem(4, device)
    _, ref = vjp_via_jacobian(f, x, v)
    with torch.no_grad():
        assert_close(vjp_via_jacobian(f, x, v)[1], ref)
        assert_close(vjp_via_backward(f, x, v), ref)
        assert jacobian_matrix(f, x).abs().sum() > 0  # not silently zero
    assert torch.is_grad_enabled()


@pytest.mark.parametrize("seed", range(3))
def test_vjp_is_linear_in_v_and_one_hot_v_gives_a_row(seed: int, device: torch.device) -> None:
    f, x, v, _ = _problem(seed, device)
    w = torch.randn(v.shape, generator=torch.Generator().manual_seed(seed + 10), dtype=F64).to(device)
    combo = vjp_via_backward(f, x, 2 * v - 3 * w)
    assert_close(combo, 2 * vjp_via_backward(f, x, v) - 3 * vjp_via_backward(f, x, w))
    jac = jacobian_matrix(f, x)
    e = torch.zeros(v.numel(), dtype=F64, device=device)
    e[-1] = 1
    assert_close(vjp_via_backward(f, x, e.reshape(v.shape)).reshape(-1), jac[-1])


def test_backward_gradient_continues_the_chain_rule(device: torch.device) -> None:
    """The unfinished sentence of the notes: backward(gradient) takes the upstream gradient dL/dy."""
    f, x, _, _ = _problem(5, device)

    def loss(y: torch.Tensor) -> torch.Tensor:
        return (y.sin() ** 2).sum()

    whole = x.clone().requires_grad_()
    loss(f(whole)).backward()  # one graph, x -> y -> L
    part = x.clone().requires_grad_()
    y = f(part)
    y_cut = y.detach().requires_grad_()  # a second graph starting at y
    loss(y_cut).backward()  # y_cut.grad = dL/dy
    y.backward(y_cut.grad)  # the first graph, fed the upstream gradient
    assert_close(part.grad, whole.grad)


def test_autograd_grad_returns_backward_accumulates(device: torch.device) -> None:
    f, x, v, _ = _problem(6, device)
    xr = x.clone().requires_grad_()
    xr.grad = torch.ones_like(xr)
    y = f(xr)
    (g,) = torch.autograd.grad(y, xr, grad_outputs=v, retain_graph=True)
    assert torch.equal(xr.grad, torch.ones_like(xr))  # autograd.grad leaves .grad alone
    y.backward(v)
    assert_close(xr.grad, 1 + g)  # backward adds into it


def test_jacobian_costs_m_backward_passes_vjp_costs_one() -> None:
    calls = []

    def f(t: torch.Tensor) -> torch.Tensor:
        h = t.exp()
        h.register_hook(lambda g: calls.append(1))  # runs once per backward pass through h
        return torch.cat([h, h[:2] * 3])  # m = n + 2 outputs

    x, m = torch.randn(4, dtype=F64), 6
    jacobian_matrix(f, x)
    assert len(calls) == m
    calls.clear()
    vjp_via_backward(f, x, torch.ones(m, dtype=F64))
    assert len(calls) == 1
