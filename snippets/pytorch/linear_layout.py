"""``nn.Linear``'s weight layout: stored as ``(out_features, in_features)``, transposed inside the product.

``F.linear(x, W, b) = x Wᵀ + b`` with ``W: (out, in)``: row ``i`` of ``W`` holds the weights of output unit ``i``
(the textbook ``y = W x + b`` for one column vector, written for a batch of row vectors). ``Wᵀ`` is a view
(no copy). Reference: PyTorch docs ``torch.nn.Linear`` and ``torch.nn.functional.linear``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["linear", "linear_by_rows", "linear_grads", "from_in_out_kernel"]


def _check(x: Tensor, weight: Tensor, bias: Tensor | None) -> None:
    for name, t in (("x", x), ("weight", weight), ("bias", bias)):
        if t is not None and not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D (out_features, in_features), got weight.shape={tuple(weight.shape)}")
    if x.dim() == 0:
        raise ValueError("x must have at least 1 dimension (*, in_features), got a 0-D tensor")
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"x.shape[-1]={x.shape[-1]} must equal weight.shape[1]={weight.shape[1]} "
            "(weight is (out_features, in_features))"
        )
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(
            f"bias must have shape (out_features,)=({weight.shape[0]},), got bias.shape={tuple(bias.shape)}"
        )


# --8<-- [start:linear]
def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``y = x Wᵀ + b``, like ``F.linear``.

    ``x: (*, in)``, ``weight: (out, in)``, ``bias: (out,)`` or None → ``(*, out)``; any number of leading
    dimensions ``*`` (including none).
    """
    _check(x, weight, bias)
    y = x @ weight.mT  # .mT is a view: the stored (out, in) weight is never copied
    return y if bias is None else y + bias


# --8<-- [end:linear]


# --8<-- [start:by_rows]
def linear_by_rows(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """The same product, one output unit at a time: ``y[..., i] = x · weight[i] + bias[i]``.

    The loop over output units *is* the lesson: row ``i`` of the ``(out, in)`` weight is a contiguous vector
    of ``in`` numbers, the weights of unit ``i``. ``x: (*, in)`` → ``(*, out)``.
    """
    _check(x, weight, bias)
    cols = [(x * weight[i]).sum(-1) for i in range(weight.shape[0])]  # unit i reads row i
    y = torch.stack(cols, dim=-1) if cols else x.new_zeros(*x.shape[:-1], 0)
    return y if bias is None else y + bias


# --8<-- [end:by_rows]


# --8<-- [start:grads]
def linear_grads(x: Tensor, weight: Tensor, grad_y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of ``y = x Wᵀ + b`` by hand: ``(grad_x, grad_weight, grad_bias)``.

    ``x: (*, in)``, ``weight: (out, in)``, ``grad_y = ∂L/∂y: (*, out)`` → ``grad_x: (*, in)``,
    ``grad_weight: (out, in)`` (the stored layout, with no transpose), ``grad_bias: (out,)``.
    """
    _check(x, weight, None)
    if grad_y.shape != (*x.shape[:-1], weight.shape[0]):
        raise ValueError(
            f"grad_y.shape={tuple(grad_y.shape)} must be x.shape[:-1] + (out_features,)="
            f"{(*x.shape[:-1], weight.shape[0])}"
        )
    x2, g2 = x.reshape(-1, x.shape[-1]), grad_y.reshape(-1, weight.shape[0])  # flatten the batch dims: (N, ·)
    grad_x = grad_y @ weight  # (*, out) @ (out, in) -> (*, in)
    grad_weight = g2.mT @ x2  # (out, N) @ (N, in) -> (out, in)
    grad_bias = g2.sum(0)  # (out,)
    return grad_x, grad_weight, grad_bias


# --8<-- [end:grads]


# --8<-- [start:port]
def from_in_out_kernel(kernel: Tensor) -> Tensor:
    """A weight stored the other way round, ``kernel: (in, out)`` (Keras ``Dense``, Flax ``Dense``, ``x @ W``
    code), as the ``(out, in)`` tensor ``nn.Linear.weight`` expects: ``kernel.T``, made contiguous."""
    if not isinstance(kernel, Tensor):
        raise TypeError(f"kernel must be a torch.Tensor, got {type(kernel).__name__}")
    if kernel.dim() != 2:
        raise ValueError(f"kernel must be 2-D (in_features, out_features), got kernel.shape={tuple(kernel.shape)}")
    return kernel.mT.contiguous()


# --8<-- [end:port]


if __name__ == "__main__":
    layer = torch.nn.Linear(3, 5)
    x = torch.randn(2, 4, 3)
    print("weight:", tuple(layer.weight.shape), "-> y:", tuple(linear(x, layer.weight, layer.bias).shape))
    print("matches nn.Linear:", torch.allclose(linear(x, layer.weight, layer.bias), layer(x), atol=1e-6))
    print("row 0 is unit 0:", torch.allclose(linear_by_rows(x, layer.weight)[..., 0], x @ layer.weight[0]))
