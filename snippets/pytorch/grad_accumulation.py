"""Gradient accumulation: K backward passes over micro-batches, one optimizer step.

``.grad`` is a running sum: every ``backward()`` *adds* into it. Summing the gradients of K
micro-batches therefore reproduces the gradient of the whole batch exactly — provided each
micro-batch loss is weighted so that the weights add up to the full-batch loss (``n_k / N`` for a
mean-reduced loss, ``1`` for a sum-reduced one) and no layer looks at the batch (BatchNorm in
training mode does). Reference: PyTorch docs, "Autograd mechanics" (gradient accumulation);
d2l.ai §12.5 (minibatches).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

__all__ = ["Scale", "split_batch", "accumulate_grads", "accumulated_step", "grads_of"]

Scale = Literal["size", "count", "none"]
LossFn = Callable[[Tensor, Tensor], Tensor]


def split_batch(x: Tensor, y: Tensor, sizes: Sequence[int]) -> list[tuple[Tensor, Tensor]]:
    """Cut ``x: (N, ...)`` and ``y: (N, ...)`` into micro-batches of the given ``sizes`` (summing to N)."""
    if x.size(0) != y.size(0):
        raise ValueError(f"x and y differ in batch size: {x.size(0)} != {y.size(0)}")
    if any(s <= 0 for s in sizes) or sum(sizes) != x.size(0):
        raise ValueError(f"sizes={list(sizes)} must be positive and sum to the batch size {x.size(0)}")
    return list(zip(x.split(list(sizes)), y.split(list(sizes))))


# --8<-- [start:accumulate]
def accumulate_grads(
    model: nn.Module,
    loss_fn: LossFn,
    micro_batches: Sequence[tuple[Tensor, Tensor]],
    *,
    scale: Scale = "size",
) -> Tensor:
    """Add the gradients of every micro-batch ``(x_k: (n_k, ...), y_k: (n_k, ...))`` into ``.grad``.

    Each micro-batch loss is multiplied by a weight before ``backward()``:
    ``"size"``: ``n_k / N`` (exact for a mean-reduced ``loss_fn``, any sizes);
    ``"count"``: ``1 / K`` (the common recipe; exact only when all ``n_k`` are equal);
    ``"none"``: ``1`` (exact for a sum-reduced ``loss_fn``).
    ``.grad`` is *not* cleared first. Returns the weighted total loss (detached scalar).
    """
    if len(micro_batches) == 0:
        raise ValueError("micro_batches is empty: need at least one (x, y) pair")
    sizes = [x.size(0) for x, _ in micro_batches]
    if min(sizes) <= 0:
        raise ValueError(f"every micro-batch needs at least one sample, got sizes {sizes}")
    n, k = sum(sizes), len(sizes)
    weights = {"size": [s / n for s in sizes], "count": [1 / k] * k, "none": [1.0] * k}
    if scale not in weights:
        raise ValueError(f"scale={scale!r} must be one of 'size', 'count', 'none'")
    total = None
    for (x, y), w in zip(micro_batches, weights[scale]):
        loss = loss_fn(model(x), y)
        if loss.dim() != 0:
            raise ValueError(f"loss_fn must return a scalar, got shape {tuple(loss.shape)}")
        (loss * w).backward()  # adds into p.grad; the graph of this micro-batch is freed
        total = loss.detach() * w if total is None else total + loss.detach() * w
    return total


# --8<-- [end:accumulate]


# --8<-- [start:step]
def accumulated_step(
    model: nn.Module,
    loss_fn: LossFn,
    micro_batches: Sequence[tuple[Tensor, Tensor]],
    optimizer: torch.optim.Optimizer,
    *,
    scale: Scale = "size",
) -> Tensor:
    """One optimizer step on the gradient summed over ``micro_batches`` (cleared before, not after)."""
    optimizer.zero_grad()  # set_to_none=True: start from "no gradient"
    loss = accumulate_grads(model, loss_fn, micro_batches, scale=scale)
    optimizer.step()
    return loss


# --8<-- [end:step]


def grads_of(model: nn.Module) -> list[Tensor]:
    """Copies of every parameter's ``.grad`` (zeros where it is None), in ``parameters()`` order."""
    return [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in model.parameters()]


if __name__ == "__main__":
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)).double()
    xs, ys = torch.randn(10, 4, dtype=torch.float64), torch.randn(10, 1, dtype=torch.float64)
    mse = nn.functional.mse_loss
    mse(net(xs), ys).backward()
    full = grads_of(net)
    for how in ("size", "count"):
        net.zero_grad()
        accumulate_grads(net, mse, split_batch(xs, ys, [2, 3, 5]), scale=how)
        err = max((a - b).abs().max().item() for a, b in zip(grads_of(net), full))
        print(f"micro-batches 2+3+5, scale={how!r}: max |accumulated - full batch| = {err:.2e}")
