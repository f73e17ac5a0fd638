"""Rank collapse: stacked pure self-attention drives all tokens to one vector; skip connections stop it.

Reference: Dong, Cordonnier & Loukas 2021, "Attention is not all you need: pure attention loses rank
doubly exponentially with depth" (ICML). The residual ``res(X) = X - 1 x̄^T`` (``x̄``: the mean token)
measures how far the ``n`` tokens are from being one repeated vector; for pure self-attention its
norm shrinks roughly cubically per layer, i.e. doubly exponentially with depth.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from snippets.attention.sdpa import scaled_dot_product_attention

__all__ = ["RankCollapse", "token_residual", "relative_residual", "best_rank1_error", "rank_collapse_curve"]


# --8<-- [start:residual]
def token_residual(x: Tensor) -> Tensor:
    """``res(X) = X - 1 x̄^T`` for ``x: (..., n, d)``: each token minus the mean token, ``(..., n, d)``.

    ``1 x̄^T`` is the closest matrix (Frobenius norm) whose rows are all the same vector, so
    ``||res(X)||_F`` is the distance of ``X`` from "every token is identical".
    """
    if x.dim() < 2:
        raise ValueError(f"x must be (..., n, d), got shape {tuple(x.shape)}")
    return x - x.mean(dim=-2, keepdim=True)


def relative_residual(x: Tensor) -> Tensor:
    """``||res(X)||_F / ||X||_F`` for ``x: (..., n, d)`` → ``(...)``; 0 means all tokens collapsed to one."""
    return token_residual(x).flatten(-2).norm(dim=-1) / x.flatten(-2).norm(dim=-1)


def best_rank1_error(x: Tensor) -> Tensor:
    """``min_{rank A <= 1} ||X - A||_F = sqrt(sum_{i>=2} σ_i^2)`` (Eckart–Young) for ``x: (..., n, d)``.

    A lower bound on ``||res(X)||_F``: ``1 x̄^T`` is one particular rank-1 matrix.
    """
    s = torch.linalg.svdvals(x)  # (..., min(n, d)), descending
    return s[..., 1:].pow(2).sum(dim=-1).sqrt()
# --8<-- [end:residual]


class RankCollapse(NamedTuple):
    """``ratio: (depth + 1,)`` — ``||res(X_l)||_F / ||X_l||_F`` for the input (l = 0) and after each layer;
    ``singular_values: (depth + 1, min(n, d))`` of each ``X_l``, descending."""

    ratio: Tensor
    singular_values: Tensor


# --8<-- [start:curve]
def rank_collapse_curve(
    depth: int,
    n: int = 16,
    d: int = 32,
    residual: bool = False,
    mlp: bool = False,
    generator: torch.Generator | None = None,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | None = None,
) -> RankCollapse:
    """Push random tokens ``X_0 ~ N(0, 1): (n, d)`` through ``depth`` freshly drawn single-head layers.

    Each layer: ``A = softmax(X W_Q (X W_K)^T / sqrt(d)) X W_V`` with ``W_Q, W_K, W_V ~ N(0, 1/d)``;
    ``X <- X + A`` when ``residual`` else ``X <- A``; with ``mlp`` then ``M = ReLU(X W_1) W_2``
    (``d -> 4d -> d``, ``W_1 ~ N(0, 1/d)``, ``W_2 ~ N(0, 1/(4d))``) and ``X <- X + M`` or ``X <- M``.
    No LayerNorm, so the effect of the skip connection alone is visible. The numbers are drawn on the
    CPU from ``generator`` (default: seed 0), so a seed gives the same network on every ``device``.
    """
    if depth < 0:
        raise ValueError(f"depth={depth} must be >= 0")
    if n < 2:
        raise ValueError(f"n={n} must be >= 2: collapse is about several tokens becoming one")
    if d < 1:
        raise ValueError(f"d={d} must be >= 1")
    g = generator if generator is not None else torch.Generator().manual_seed(0)

    def draw(*shape: int, std: float = 1.0) -> Tensor:
        return (torch.randn(*shape, generator=g, dtype=dtype) * std).to(device)

    x = draw(n, d)
    xs = [x]
    for _ in range(depth):
        w_q, w_k, w_v = draw(3, d, d, std=1 / math.sqrt(d))
        a = scaled_dot_product_attention(x @ w_q, x @ w_k, x @ w_v)  # (n, d), scale 1/sqrt(d)
        x = x + a if residual else a
        if mlp:
            w_1, w_2 = draw(d, 4 * d, std=1 / math.sqrt(d)), draw(4 * d, d, std=1 / math.sqrt(4 * d))
            m = torch.relu(x @ w_1) @ w_2
            x = x + m if residual else m
        xs.append(x)
    stack = torch.stack(xs)  # (depth + 1, n, d)
    return RankCollapse(relative_residual(stack), torch.linalg.svdvals(stack))
# --8<-- [end:curve]


if __name__ == "__main__":
    for label, kw in (
        ("pure attention", {}),
        ("+ residual", {"residual": True}),
        ("+ residual + MLP", {"residual": True, "mlp": True}),
    ):
        r = rank_collapse_curve(12, generator=torch.Generator().manual_seed(0), **kw).ratio
        print(f"{label:17s}", " ".join(f"{v:.1e}" for v in r[:5]), "... layer 12:", f"{r[-1]:.2f}")
