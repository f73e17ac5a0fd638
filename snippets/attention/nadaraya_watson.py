"""Nadaraya–Watson kernel regression: attention pooling with a Gaussian kernel, f(x) = sum_i a_i y_i.

Reference: Nadaraya 1964, Watson 1964; d2l.ai §11.2. With the Gaussian kernel the normalized
kernel weights ``K(x - x_i) / sum_j K(x - x_j)`` are exactly ``softmax_i(-(x - x_i)^2 / 2)``;
the parametric variant scales the distance by a learnable ``w``: ``softmax_i(-((x - x_i) w)^2 / 2)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from snippets.attention.pooling import attention_pool, gaussian_score

__all__ = [
    "target_fn",
    "make_dataset",
    "gaussian_kernel",
    "kernel_regression",
    "nw_regression",
    "NWKernelRegression",
    "leave_one_out_mask",
    "train_nw",
]


# --8<-- [start:data]
def target_fn(x: Tensor) -> Tensor:
    """The noise-free function to recover: ``2 sin(x) + x^0.8``."""
    return 2 * torch.sin(x) + x.pow(0.8)


def make_dataset(
    n_train: int = 50,
    *,
    noise_std: float = 0.5,
    x_max: float = 5.0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(x_train (n,), y_train (n,), x_test (m,), y_test (m,))``: sorted ``x_train ~ U[0, x_max)``,
    ``y_train = target_fn(x) + N(0, noise_std^2)``; ``x_test`` is a grid of step 0.1 with its
    noise-free targets. Drawn on the CPU from ``generator``."""
    if n_train <= 0 or noise_std < 0 or x_max <= 0:
        raise ValueError(f"need n_train > 0, noise_std >= 0, x_max > 0; got {n_train=}, {noise_std=}, {x_max=}")
    x_train = (torch.rand(n_train, generator=generator, dtype=dtype) * x_max).sort().values
    y_train = target_fn(x_train) + noise_std * torch.randn(n_train, generator=generator, dtype=dtype)
    x_test = torch.arange(0, x_max, 0.1, dtype=dtype)
    return x_train, y_train, x_test, target_fn(x_test)


# --8<-- [end:data]


# --8<-- [start:kernel_form]
def gaussian_kernel(u: Tensor) -> Tensor:
    """``K(u) = exp(-u^2 / 2) / sqrt(2 pi)``."""
    return torch.exp(-0.5 * u.pow(2)) / math.sqrt(2 * math.pi)


def kernel_regression(
    x_query: Tensor, x_keys: Tensor, y_values: Tensor, kernel: Callable[[Tensor], Tensor] = gaussian_kernel
) -> Tensor:
    """Textbook form ``f(x) = sum_i K(x - x_i) y_i / sum_j K(x - x_j)``.

    ``x_query: (..., n_q)``, ``x_keys, y_values: (..., n_k)`` → ``(..., n_q)``. Divides by the
    kernel sum directly, so it underflows to NaN where every ``K(x - x_i)`` is 0 (the softmax form
    of :func:`nw_regression` does not)."""
    k = kernel(x_query.unsqueeze(-1) - x_keys.unsqueeze(-2))  # (..., n_q, n_k): K(x - x_i)
    return (k @ y_values.unsqueeze(-1)).squeeze(-1) / k.sum(-1)


# --8<-- [end:kernel_form]


# --8<-- [start:nw]
def nw_regression(
    x_query: Tensor, x_keys: Tensor, y_values: Tensor, w: float | Tensor = 1.0, mask: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Nadaraya–Watson as attention: ``softmax_i(-((x - x_i) w)^2 / 2)`` pooled over ``y_i``.

    ``x_query: (..., n_q)``, ``x_keys, y_values: (..., n_k)`` → ``(pred (..., n_q),
    weights (..., n_q, n_k))``. Scalars become 1-D vectors: query ``(n_q, 1)``, key ``(n_k, 1)``.
    ``mask`` (True = keep) broadcasts to the weights, e.g. :func:`leave_one_out_mask`."""
    if x_keys.shape != y_values.shape:
        raise ValueError(f"x_keys {tuple(x_keys.shape)} and y_values {tuple(y_values.shape)} must match")
    pred, weights = attention_pool(
        x_query.unsqueeze(-1),
        x_keys.unsqueeze(-1),
        y_values.unsqueeze(-1),
        lambda q, k: gaussian_score(q, k, w),
        mask,
    )
    return pred.squeeze(-1), weights


# --8<-- [end:nw]


# --8<-- [start:module]
class NWKernelRegression(nn.Module):
    """Parametric Nadaraya–Watson: one learnable bandwidth-like scale ``w`` (shape ``(1,)``).

    ``forward(x_query (..., n_q), x_keys (..., n_k), y_values (..., n_k), mask=None)`` →
    ``(..., n_q)``; the last weights are kept in ``self.attention_weights`` for plotting."""

    def __init__(self, w_init: float = 1.0, *, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([float(w_init)], dtype=dtype))
        self.attention_weights: Tensor | None = None

    def forward(self, x_query: Tensor, x_keys: Tensor, y_values: Tensor, mask: Tensor | None = None) -> Tensor:
        pred, self.attention_weights = nw_regression(x_query, x_keys, y_values, self.w, mask)
        return pred


def leave_one_out_mask(n: int, *, device: torch.device | None = None) -> Tensor:
    """``(n, n)`` boolean mask, True = keep: training point i may not attend to itself."""
    if n < 2:
        raise ValueError(f"leave-one-out needs at least 2 points, got n={n}")
    return ~torch.eye(n, dtype=torch.bool, device=device)


# --8<-- [end:module]


# --8<-- [start:train]
def train_nw(
    x_train: Tensor,
    y_train: Tensor,
    *,
    epochs: int = 100,
    lr: float = 0.1,
    w_init: float = 1.0,
    leave_one_out: bool = True,
) -> tuple[NWKernelRegression, list[float]]:
    """Fit ``w`` by full-batch SGD on the sum of squared errors, each training point predicted
    from the *other* points (``leave_one_out``). Returns the model and the loss before each step.
    Without leave-one-out the loss keeps falling as ``w`` grows: every point predicts itself."""
    model = NWKernelRegression(w_init, dtype=x_train.dtype).to(x_train.device)
    mask = leave_one_out_mask(len(x_train), device=x_train.device) if leave_one_out else None
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    losses = []
    for _ in range(epochs):
        loss = (model(x_train, x_train, y_train, mask) - y_train).pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return model, losses


# --8<-- [end:train]


if __name__ == "__main__":
    x_train, y_train, x_test, y_test = make_dataset(generator=torch.Generator().manual_seed(0))
    pred, _ = nw_regression(x_test, x_train, y_train)
    print(f"non-parametric (w = 1): test MSE {(pred - y_test).pow(2).mean().item():.3f}")
    model, losses = train_nw(x_train, y_train)
    with torch.no_grad():
        pred = model(x_test, x_train, y_train)
    print(
        f"parametric: loss {losses[0]:.2f} -> {losses[-1]:.2f}, w = {model.w.item():.2f}, "
        f"test MSE {(pred - y_test).pow(2).mean().item():.3f}"
    )
