"""What ``y.backward(v)`` computes: the vector–Jacobian product ``v^T J``, shown with an explicit Jacobian.

For ``y = f(x)`` with ``x: (*x_shape)`` (n numbers) and ``y: (*y_shape)`` (m numbers), the Jacobian is
``J: (m, n)``, ``J[i, j] = dy_i / dx_j``. Reverse mode never builds ``J``: ``backward(v)`` pushes
``v: (*y_shape)`` through the graph and adds ``J^T v`` (reshaped to ``x_shape``) into ``x.grad``.
A scalar ``y`` has ``m = 1``, so the implicit ``v = 1`` is the only sensible default.
Reference: PyTorch docs, "Autograd mechanics" and ``torch.autograd.backward``; d2l.ai §2.5.2.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["jacobian_matrix", "vjp_via_jacobian", "vjp_via_backward"]

Fn = Callable[[Tensor], Tensor]


def _check_x(x: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise ValueError(f"x must be floating point to be differentiated, got dtype={x.dtype}")
    if x.numel() == 0:
        raise ValueError(f"x is empty (shape {tuple(x.shape)}): nothing to differentiate")


def _call(f: Fn, x: Tensor) -> Tensor:
    y = f(x)
    if not isinstance(y, Tensor):
        raise TypeError(f"f must return a torch.Tensor, got {type(y).__name__}")
    return y


def _check_v(v: Tensor, y: Tensor) -> None:
    if not isinstance(v, Tensor):
        raise TypeError(f"v must be a torch.Tensor, got {type(v).__name__}")
    if v.shape != y.shape:
        raise ValueError(f"v has shape {tuple(v.shape)} but f(x) has shape {tuple(y.shape)}: they must match")
    if v.dtype != y.dtype or v.device != y.device:
        raise ValueError(f"v ({v.dtype}, {v.device}) must have the dtype and device of f(x) ({y.dtype}, {y.device})")


# --8<-- [start:jacobian]
def jacobian_matrix(f: Fn, x: Tensor) -> Tensor:
    """The full Jacobian ``J: (m, n)`` of ``f`` at ``x``, one row per output element.

    Row ``i`` is the gradient of the single number ``y_i``: one backward pass with the one-hot
    ``v = e_i``. The loop is the lesson: ``J`` costs ``m`` backward passes and ``m * n`` numbers;
    ``backward(v)`` gets ``v^T J`` from one pass without ever forming ``J``. (``torch.func.jacrev``
    and ``autograd.grad(..., is_grads_batched=True)`` vectorise the same loop with ``vmap``.)
    """
    _check_x(x)
    leaf = x.detach().requires_grad_()
    with torch.enable_grad():  # record f (and y[i]) even when the caller is inside no_grad
        y = _call(f, leaf).reshape(-1)  # (m,)
        if not y.requires_grad:  # f ignores x (or detached it): every derivative is 0
            return torch.zeros(y.numel(), leaf.numel(), dtype=x.dtype, device=x.device)
        rows = []
        for i in range(y.numel()):
            (row,) = torch.autograd.grad(y[i], leaf, retain_graph=True, allow_unused=True)
            rows.append(torch.zeros_like(leaf) if row is None else row)  # None: y_i does not depend on x
    return torch.stack(rows).reshape(y.numel(), leaf.numel())  # (m, n)
    # --8<-- [end:jacobian]


# --8<-- [start:vjp]
def vjp_via_jacobian(f: Fn, x: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """``(y, v^T J)`` with ``J`` materialised: ``y = f(x)``, ``v: y.shape`` → gradient ``x.shape``.

    This is what ``y.backward(v)`` adds into ``x.grad`` — here at the cost of ``m`` backward passes.
    """
    _check_x(x)
    y = _call(f, x.detach())
    _check_v(v, y)
    jac = jacobian_matrix(f, x)  # (m, n)
    return y, (v.reshape(-1) @ jac).reshape(x.shape)  # (m,) @ (m, n) -> (n,) -> x_shape
    # --8<-- [end:vjp]


# --8<-- [start:backward]
def vjp_via_backward(f: Fn, x: Tensor, v: Tensor | None = None) -> Tensor:
    """What ``y.backward(v)`` accumulates into a fresh leaf copy of ``x`` (``v=None``: scalar ``y`` only)."""
    _check_x(x)
    leaf = x.detach().clone().requires_grad_()
    with torch.enable_grad():
        y = _call(f, leaf)
    if v is not None:
        _check_v(v, y)
    elif y.numel() != 1:
        raise ValueError(f"f(x) has shape {tuple(y.shape)}: pass v of that shape (only scalars get v = 1)")
    y.backward(v)  # adds J^T v into leaf.grad
    return leaf.grad
    # --8<-- [end:backward]


if __name__ == "__main__":
    torch.manual_seed(0)
    x = torch.randn(3, dtype=torch.float64)
    v = torch.randn(2, dtype=torch.float64)
    a = torch.randn(2, 3, dtype=torch.float64)

    def f(t: Tensor) -> Tensor:
        return torch.tanh(a @ t)

    print("J =\n", jacobian_matrix(f, x))
    print("v^T J   =", vjp_via_jacobian(f, x, v)[1])
    print("backward=", vjp_via_backward(f, x, v))
