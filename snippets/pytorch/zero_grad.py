"""Clearing gradients: ``p.grad.zero_()`` (keep a tensor of zeros) vs ``p.grad = None`` (drop it).

``zero_grad(params, set_to_none)`` does what ``torch.optim.Optimizer.zero_grad`` does; the demos
show why the choice matters: without clearing, ``backward()`` accumulates; ``None`` frees the
gradient tensor; and an optimizer treats "gradient 0" and "no gradient" differently (SGD with
momentum or weight decay still moves a parameter whose gradient is 0, but skips one whose
gradient is None). Reference: PyTorch docs, ``torch.optim.Optimizer.zero_grad``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

__all__ = ["zero_grad", "grad_bytes", "grads_over_backwards", "sgd_zero_vs_none"]


# --8<-- [start:zero_grad]
def zero_grad(params: Iterable[Tensor], set_to_none: bool = True) -> None:
    """Clear ``p.grad`` of every tensor in ``params`` — like ``Optimizer.zero_grad(set_to_none)``.

    ``set_to_none=True``: ``p.grad = None`` (the gradient tensor is released; the next
    ``backward()`` allocates a new one). ``set_to_none=False``: fill the existing tensor with zeros
    in place (memory stays allocated; one fill kernel per tensor).
    """
    for p in params:
        if not isinstance(p, Tensor):
            raise TypeError(f"params must contain tensors, got {type(p).__name__}")
        if p.grad is None:
            continue
        if set_to_none:
            p.grad = None
        else:
            if p.grad.grad_fn is not None:  # a grad built with create_graph=True: cut it off first
                p.grad.detach_()
            else:
                p.grad.requires_grad_(False)
            p.grad.zero_()


# --8<-- [end:zero_grad]


def grad_bytes(params: Iterable[Tensor]) -> int:
    """Bytes held by the ``.grad`` tensors of ``params`` (0 for those whose grad is None)."""
    return sum(p.grad.nbytes for p in params if p.grad is not None)


# --8<-- [start:demos]
def grads_over_backwards(calls: int, *, clear: str | None = None) -> list[float]:
    """``w.grad`` after each of ``calls`` backward passes of ``loss = 3 w`` (w = 1).

    ``clear=None``: never cleared (3, 6, 9, …); ``"zero"`` / ``"none"``: cleared before each pass.
    """
    if calls < 1 or clear not in (None, "zero", "none"):
        raise ValueError(f"need calls >= 1 and clear in (None, 'zero', 'none'); got {calls=}, {clear=}")
    w = torch.tensor(1.0, requires_grad=True)
    out = []
    for _ in range(calls):
        if clear is not None:
            zero_grad([w], set_to_none=clear == "none")
        (3 * w).backward()
        out.append(w.grad.item())
    return out


def sgd_zero_vs_none(steps: int = 2, *, lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 0.1) -> dict:
    """One real step (loss = p, gradient 1), then ``steps - 1`` steps after clearing the gradient.

    Returns ``{"zero": [p_0, p_1, ...], "none": [...]}`` — the parameter after each step when the
    gradient was cleared with ``zero_()`` and with ``None``.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    out = {}
    for how in ("zero", "none"):
        p = nn.Parameter(torch.tensor(1.0))
        opt = torch.optim.SGD([p], lr=lr, momentum=momentum, weight_decay=weight_decay)
        traj = [p.item()]
        p.backward()  # d p / d p = 1
        for _ in range(steps):
            opt.step()
            traj.append(p.item())
            opt.zero_grad(set_to_none=how == "none")  # from now on: no new gradient
        out[how] = traj
    return out


# --8<-- [end:demos]


if __name__ == "__main__":
    print("grad after 4 backward calls, never cleared:", grads_over_backwards(4))
    print("grad after 4 backward calls, cleared each time:", grads_over_backwards(4, clear="none"))
    traj = sgd_zero_vs_none(2)
    print(
        f"SGD(momentum=0.9, weight_decay=0.1), after 2 steps: zero_() -> {traj['zero'][-1]:.4f}, "
        f"None -> {traj['none'][-1]:.4f}"
    )
