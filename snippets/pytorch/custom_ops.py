"""Custom layers (``nn.Module`` subclasses) and custom operators (``torch.autograd.Function``).

A layer without parameters (:class:`CenteredLayer`), a layer with parameters that is a drop-in replacement for
``nn.Linear`` (:class:`MyLinear`), and three operators with hand-written backward passes — each backward returns
the vector-Jacobian product :math:`\\bar x = J^\\top \\bar y`. Reference: d2l.ai, "Custom Layers" (zh 5.4); PyTorch
docs, "Extending PyTorch — Extending torch.autograd".
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["CenteredLayer", "MyLinear", "Square", "SoftplusFn", "LinearFunction", "square", "softplus", "linear"]


# --8<-- [start:centered]
class CenteredLayer(nn.Module):
    """Subtract the mean: ``y = x - x.mean(dim, keepdim=True)`` (the whole tensor when ``dim=None``).

    No parameters, so nothing is registered: ``list(CenteredLayer().parameters()) == []``.
    Shape: ``(*)`` -> ``(*)``; the mean of the output over ``dim`` is 0 (up to rounding).
    """

    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int)):
            raise TypeError(f"dim must be an int or None, got dim={dim!r}")
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        if not x.is_floating_point() and not x.is_complex():
            raise TypeError(f"x must be a floating-point tensor to take a mean, got dtype={x.dtype}")
        if self.dim is None:
            return x - x.mean()
        return x - x.mean(dim=self.dim, keepdim=True)

    def extra_repr(self) -> str:
        return "" if self.dim is None else f"dim={self.dim}"


# --8<-- [end:centered]


# --8<-- [start:my_linear]
class MyLinear(nn.Module):
    """``y = x W^T + b``, a drop-in replacement for ``nn.Linear`` written with ``nn.Parameter``.

    Same parameter names and shapes as ``nn.Linear`` (``weight: (out_features, in_features)``,
    ``bias: (out_features,)``), same initialisation (so the same seed gives the same weights) and therefore the same
    ``state_dict`` keys: the two load each other's state dicts. Input ``(*, in_features)`` -> ``(*, out_features)``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {name}={value!r}")
        self.in_features, self.out_features = in_features, out_features
        factory = {"device": device, "dtype": dtype}
        # nn.Parameter = a tensor that a Module registers in _parameters when assigned as an attribute
        self.weight = nn.Parameter(torch.empty(out_features, in_features, **factory))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features, **factory))
        else:
            self.register_parameter("bias", None)  # keeps `self.bias` defined (None) and out of the state_dict
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.Linear's initialisation: U(-1/sqrt(in), 1/sqrt(in)) for weight and bias, in the same RNG order."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # = U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"x must have shape (*, in_features={self.in_features}), got {tuple(x.shape)}")
        y = x @ self.weight.T  # use the Parameter itself (never .data): autograd must see it
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


# --8<-- [end:my_linear]


# --8<-- [start:square]
class Square(torch.autograd.Function):
    """``y = x ** 2`` with a hand-written backward: ``x_bar = 2 x * y_bar`` (J = diag(2x), so J^T y_bar)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)  # tensors needed by backward go through save_for_backward
        return x * x  # runs with grad mode off: autograd records nothing in here

    @staticmethod
    def backward(ctx: Any, grad_y: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return 2 * x * grad_y  # built from differentiable ops, so double backward works too


# --8<-- [end:square]


# --8<-- [start:softplus]
class SoftplusFn(torch.autograd.Function):
    """``F.softplus(x, beta, threshold)``: ``log(1 + exp(beta x)) / beta``, and ``x`` where ``beta x > threshold``.

    Backward: ``x_bar = sigmoid(beta x) * y_bar`` (1 in the linear region). ``beta`` and ``threshold`` are Python
    floats, not tensors, so backward returns ``None`` for them.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, beta: float, threshold: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.beta, ctx.threshold = beta, threshold  # non-tensors are stored on ctx directly
        bx = x * beta
        return torch.where(bx > threshold, x, torch.log1p(torch.exp(bx)) / beta)

    @staticmethod
    def backward(ctx: Any, grad_y: Tensor) -> tuple[Tensor, None, None]:
        (x,) = ctx.saved_tensors
        bx = x * ctx.beta
        grad_x = torch.where(bx > ctx.threshold, grad_y, grad_y * torch.sigmoid(bx))
        return grad_x, None, None  # one gradient per forward input, None for the floats


# --8<-- [end:softplus]


# --8<-- [start:linear_fn]
class LinearFunction(torch.autograd.Function):
    """``F.linear``: ``y = x W^T + b``; x: ``(*, in)``, weight: ``(out, in)``, bias: ``(out,)`` or None.

    Backward (``g = y_bar``: ``(*, out)``): ``x_bar = g W``, ``W_bar = g^T x`` and ``b_bar = sum g`` over all batch
    dimensions. ``ctx.needs_input_grad`` skips the products nobody asked for.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        y = x @ weight.T
        return y if bias is None else y + bias

    @staticmethod
    def backward(ctx: Any, grad_y: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        x, weight = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = grad_y @ weight  # (*, out) @ (out, in) -> (*, in)
        if ctx.needs_input_grad[1]:
            grad_w = grad_y.reshape(-1, grad_y.shape[-1]).T @ x.reshape(-1, x.shape[-1])  # (out, in)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_y.reshape(-1, grad_y.shape[-1]).sum(0)  # (out,)
        return grad_x, grad_w, grad_b


# --8<-- [end:linear_fn]


def square(x: Tensor) -> Tensor:
    """``Square.apply(x)``: always call a Function through ``.apply``, never ``Square()(x)`` or ``.forward``."""
    return Square.apply(x)


def softplus(x: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    """``SoftplusFn.apply`` with ``F.softplus``'s defaults and argument checks."""
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got dtype={x.dtype}")
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got beta={beta}")
    return SoftplusFn.apply(x, float(beta), float(threshold))


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``LinearFunction.apply`` with shape checks: x ``(*, in)``, weight ``(out, in)``, bias ``(out,)``."""
    if weight.dim() != 2:
        raise ValueError(f"weight must have shape (out_features, in_features), got {tuple(weight.shape)}")
    if x.dim() == 0 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"x must have shape (*, in_features={weight.shape[1]}), got {tuple(x.shape)}")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
    return LinearFunction.apply(x, weight, bias)


if __name__ == "__main__":
    torch.manual_seed(0)
    ours = MyLinear(4, 3)
    torch.manual_seed(0)
    ref = nn.Linear(4, 3)
    x = torch.randn(2, 4)
    print(ours)
    same_out = torch.allclose(ours(x), ref(x))
    print("same init as nn.Linear:", torch.equal(ours.weight, ref.weight), "; same output:", same_out)
    print("CenteredLayer mean:", float(CenteredLayer()(torch.tensor([1.0, 2.0, 3.0, 4.0])).mean()))
    xd = torch.randn(5, dtype=torch.float64, requires_grad=True)
    print("gradcheck(square):", torch.autograd.gradcheck(square, (xd,)))
    print("gradgradcheck(softplus):", torch.autograd.gradgradcheck(softplus, (xd,)))
