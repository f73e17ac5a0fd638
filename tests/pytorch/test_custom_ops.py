"""MyLinear vs nn.Linear; CenteredLayer; Square, SoftplusFn, LinearFunction vs built-ins; gradcheck, gradgradcheck."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn
from torch.autograd import gradcheck, gradgradcheck
from torch.autograd.gradcheck import GradcheckError
from torch.nn import functional as F

from snippets.pytorch.custom_ops import (
    CenteredLayer,
    LinearFunction,
    MyLinear,
    Square,
    linear,
    softplus,
    square,
)
from tests.conftest import assert_close

F64 = torch.float64


def _randn(g: torch.Generator, *shape: int, device: torch.device) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=F64).to(device)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("seed", range(3))
def test_my_linear_matches_nn_linear(seed: int, bias: bool, device: torch.device) -> None:
    g = torch.Generator().manual_seed(seed)
    d_in, d_out = (int(v) for v in torch.randint(1, 7, (2,), generator=g))
    batch = [(5,), (2, 3), ()][seed]
    torch.manual_seed(seed)
    ours = MyLinear(d_in, d_out, bias=bias, device=device, dtype=F64)
    torch.manual_seed(seed)
    ref = nn.Linear(d_in, d_out, bias=bias, device=device, dtype=F64)
    assert_close(ours.weight, ref.weight, rtol=0, atol=0)  # same init, same RNG order
    if bias:
        assert_close(ours.bias, ref.bias, rtol=0, atol=0)
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert repr(ours).replace("MyLinear", "Linear") == repr(ref)
    x = _randn(g, *batch, d_in, device=device)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    out, out_ref = ours(x1), ref(x2)
    assert out.shape == (*batch, d_out)
    assert_close(out, out_ref)
    grad = torch.randn_like(out)
    (out * grad).sum().backward()
    (out_ref * grad).sum().backward()
    assert_close(x1.grad, x2.grad)
    for (name, p), (name_ref, p_ref) in zip(ours.named_parameters(), ref.named_parameters(), strict=True):
        assert name == name_ref
        assert_close(p.grad, p_ref.grad)
    other = nn.Linear(d_in, d_out, bias=bias, device=device, dtype=F64)
    ours.load_state_dict(other.state_dict())  # strict, both ways
    ref.load_state_dict(ours.state_dict())
    assert_close(ours(x), other(x))


def test_my_linear_without_bias_registers_none() -> None:
    layer = MyLinear(3, 2, bias=False)
    assert layer.bias is None
    assert list(layer.state_dict()) == ["weight"] and "bias" in layer._parameters


def test_d2l_style_data_cuts_the_graph() -> None:
    """The page's note: d2l's MyLinear uses ``.data`` in forward, so its parameters never get a gradient."""

    class D2LMyLinear(nn.Module):
        def __init__(self, in_units: int, units: int) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.randn(in_units, units))
            self.bias = nn.Parameter(torch.randn(units))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.relu(torch.matmul(x, self.weight.data) + self.bias.data)

    net = nn.Sequential(D2LMyLinear(4, 3), D2LMyLinear(3, 1))
    out = net(torch.randn(2, 4))
    assert not out.requires_grad and out.grad_fn is None
    with pytest.raises(RuntimeError, match="does not require grad and does not have a grad_fn"):
        out.sum().backward()
    mixed = nn.Sequential(nn.Linear(4, 4), D2LMyLinear(4, 1))
    mixed(torch.randn(2, 4)).sum().backward()  # runs: x still carries a graph through the matmul ...
    assert all(p.grad is not None for p in mixed[0].parameters())
    assert all(p.grad is None for p in mixed[1].parameters())  # ... but the custom layer itself never learns
    ok = nn.Sequential(MyLinear(4, 3), nn.ReLU(), MyLinear(3, 1))
    ok(torch.randn(2, 4)).sum().backward()
    assert all(p.grad is not None for p in ok.parameters())


@pytest.mark.parametrize("dim", [None, 0, -1])
def test_centered_layer(dim: int | None, device: torch.device) -> None:
    g = torch.Generator().manual_seed(0)
    x = (_randn(g, 4, 5, device=device) * 3 + 2).requires_grad_()
    layer = CenteredLayer(dim)
    y = layer(x)
    expected = x - (x.mean() if dim is None else x.mean(dim, keepdim=True))
    assert_close(y, expected)
    mean = y.mean() if dim is None else y.mean(dim)
    assert_close(mean, torch.zeros_like(mean), atol=1e-14, rtol=0)
    assert list(layer.parameters()) == [] and layer.state_dict() == {}
    grad = _randn(g, 4, 5, device=device)
    y.backward(grad)
    # closed form: centering is a projection, its VJP subtracts the mean of the incoming gradient
    assert_close(x.grad, grad - (grad.mean() if dim is None else grad.mean(dim, keepdim=True)))
    assert repr(layer) == ("CenteredLayer()" if dim is None else f"CenteredLayer(dim={dim})")


@pytest.mark.parametrize("seed", range(3))
def test_square_matches_pow_and_passes_gradcheck(seed: int, device: torch.device) -> None:
    g = torch.Generator().manual_seed(seed)
    shape = [(4,), (2, 3), (2, 1, 3)][seed]
    x = _randn(g, *shape, device=device).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    y, y_ref = square(x), x_ref**2
    assert_close(y, y_ref)
    grad = _randn(g, *shape, device=device)
    y.backward(grad)
    y_ref.backward(grad)
    assert_close(x.grad, x_ref.grad)
    assert_close(x.grad, 2 * x.detach() * grad)  # J^T y_bar with J = diag(2x)
    assert type(y.grad_fn).__name__ == "SquareBackward"
    assert gradcheck(square, (x,))
    assert gradgradcheck(square, (x,))


@pytest.mark.parametrize(("beta", "threshold"), [(1.0, 20.0), (2.0, 20.0), (0.5, 1.0)])
def test_softplus_matches_f_softplus(beta: float, threshold: float, device: torch.device) -> None:
    g = torch.Generator().manual_seed(int(beta * 10 + threshold))
    x = (_randn(g, 3, 40, device=device) * 8).requires_grad_()  # covers the linear region too
    x_ref = x.detach().clone().requires_grad_()
    y, y_ref = softplus(x, beta, threshold), F.softplus(x_ref, beta, threshold)
    assert_close(y, y_ref)
    grad = _randn(g, 3, 40, device=device)
    y.backward(grad)
    y_ref.backward(grad)
    assert_close(x.grad, x_ref.grad)
    assert bool((beta * x.detach() > threshold).any())  # the linear branch was exercised
    smooth = (_randn(g, 6, device=device) * 0.5).requires_grad_()  # away from the kink at the threshold
    assert gradcheck(lambda t: softplus(t, beta, threshold), (smooth,))
    assert gradgradcheck(lambda t: softplus(t, beta, threshold), (smooth,))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batch", [(5,), (2, 3), ()])
def test_linear_function_matches_f_linear(batch: tuple[int, ...], bias: bool, device: torch.device) -> None:
    g = torch.Generator().manual_seed(len(batch) + 3 * bias)
    x = _randn(g, *batch, 4, device=device).requires_grad_()
    w = _randn(g, 3, 4, device=device).requires_grad_()
    b = _randn(g, 3, device=device).requires_grad_() if bias else None
    leaves = [t for t in (x, w, b) if t is not None]
    refs = [t.detach().clone().requires_grad_() for t in leaves]
    y = linear(x, w, b)
    y_ref = F.linear(refs[0], refs[1], refs[2] if bias else None)
    assert_close(y, y_ref)
    grad = torch.randn_like(y)
    y.backward(grad)
    y_ref.backward(grad)
    for t, r in zip(leaves, refs, strict=True):
        assert_close(t.grad, r.grad)
    inputs = (x, w, b)
    assert gradcheck(linear, inputs)
    assert gradgradcheck(linear, inputs)


def test_needs_input_grad_skips_unneeded_gradients() -> None:
    seen: list[tuple[bool, ...]] = []

    class Spy(LinearFunction):
        @staticmethod
        def backward(ctx: Any, grad_y: torch.Tensor) -> Any:
            seen.append(tuple(ctx.needs_input_grad))
            return LinearFunction.backward(ctx, grad_y)

    x = torch.randn(2, 4, requires_grad=True)
    w = torch.randn(3, 4)  # frozen weight
    Spy.apply(x, w, None).sum().backward()
    assert seen == [(True, False, False)] and w.grad is None and x.grad is not None


def test_forward_runs_in_no_grad_mode() -> None:
    modes: list[bool] = []

    class Probe(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
            modes.append(torch.is_grad_enabled())
            return x * 2

        @staticmethod
        def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
            return grad * 2

    x = torch.randn(3, requires_grad=True)
    y = Probe.apply(x)
    assert modes == [False]  # nothing inside forward is recorded: backward must be written by hand
    assert y.requires_grad and type(y.grad_fn).__name__ == "ProbeBackward"


def test_functions_are_called_through_apply() -> None:
    x = torch.randn(3, requires_grad=True)
    with pytest.warns(DeprecationWarning, match="should not be instantiated"):
        with pytest.raises(RuntimeError, match="Legacy autograd function with non-static forward"):
            Square()(x)


def test_gradcheck_catches_a_wrong_backward() -> None:
    class WrongSquare(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
            (x,) = ctx.saved_tensors
            return x * grad  # forgot the factor 2

    x = torch.randn(4, dtype=F64, requires_grad=True)
    with pytest.raises(GradcheckError, match="Jacobian mismatch for output 0"):
        gradcheck(WrongSquare.apply, (x,))


def test_gradgradcheck_catches_a_non_differentiable_backward() -> None:
    class DetachedSquare(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
            (x,) = ctx.saved_tensors
            return 2 * x.detach() * grad  # right value, but the second derivative is lost

    x = torch.randn(4, dtype=F64, requires_grad=True)
    assert gradcheck(DetachedSquare.apply, (x,))
    assert not gradgradcheck(DetachedSquare.apply, (x,), raise_exception=False)


def test_float32_gradcheck_is_unreliable() -> None:
    x = torch.randn(6, generator=torch.Generator().manual_seed(0), requires_grad=True)  # float32
    with pytest.warns(UserWarning, match="not a double precision"):
        assert not gradcheck(square, (x,), raise_exception=False)  # correct backward, yet it "fails"
    assert gradcheck(square, (x.detach().double().requires_grad_(),))


def test_a_function_has_nothing_to_register() -> None:
    class SquareThenLinear(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.op = Square  # a plain attribute: a Function class is not a Module
            self.fc = MyLinear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.op.apply(x))

    m = SquareThenLinear()
    assert list(m._modules) == ["fc"] and list(m.state_dict()) == ["fc.weight", "fc.bias"]
    assert m(torch.randn(4, 3)).shape == (4, 2)


def test_rejected_inputs() -> None:
    with pytest.raises(ValueError, match=r"in_features must be a positive int, got in_features=0"):
        MyLinear(0, 2)
    with pytest.raises(ValueError, match=r"out_features must be a positive int, got out_features=2.0"):
        MyLinear(3, 2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"x must have shape \(\*, in_features=3\), got \(2, 4\)"):
        MyLinear(3, 2)(torch.randn(2, 4))
    with pytest.raises(TypeError, match="dim must be an int or None, got dim=1.5"):
        CenteredLayer(1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="x must be a floating-point tensor to take a mean, got dtype=torch.int64"):
        CenteredLayer()(torch.arange(4))
    with pytest.raises(ValueError, match="beta must be > 0, got beta=0"):
        softplus(torch.randn(3), beta=0)
    with pytest.raises(TypeError, match="x must be a floating-point tensor, got dtype=torch.int64"):
        softplus(torch.arange(3))
    with pytest.raises(ValueError, match=r"weight must have shape \(out_features, in_features\), got \(3,\)"):
        linear(torch.randn(2, 3), torch.randn(3))
    with pytest.raises(ValueError, match=r"x must have shape \(\*, in_features=4\), got \(2, 3\)"):
        linear(torch.randn(2, 3), torch.randn(5, 4))
    with pytest.raises(ValueError, match=r"bias must have shape \(5,\), got \(4,\)"):
        linear(torch.randn(2, 4), torch.randn(5, 4), torch.randn(4))
