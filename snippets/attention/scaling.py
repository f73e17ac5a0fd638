"""Why attention divides by sqrt(d_k): dot-product variance and softmax saturation.

Reference: Vaswani et al. 2017, §3.2.1 (footnote 4); d2l.ai §11.3.3.
For q, k with i.i.d. zero-mean unit-variance entries, Var[q·k] = d_k; unscaled scores grow
like sqrt(d_k), push softmax towards one-hot, and its Jacobian diag(s) - s s^T towards 0.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["dot_product_variance", "softmax_jacobian", "softmax_grad_norm"]


# --8<-- [start:variance]
def dot_product_variance(
    d_k: int,
    n: int = 100_000,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | None = None,
) -> float:
    """Empirical variance of ``q·k`` over ``n`` pairs with ``q, k ~ N(0, I_{d_k})`` (≈ d_k)."""
    if d_k <= 0 or n <= 1:
        raise ValueError(f"need d_k > 0 and n > 1, got d_k={d_k}, n={n}")
    q = torch.randn(n, d_k, generator=generator, dtype=dtype, device=device)
    k = torch.randn(n, d_k, generator=generator, dtype=dtype, device=device)
    return (q * k).sum(-1).var().item()
# --8<-- [end:variance]


# --8<-- [start:jacobian]
def softmax_jacobian(s: Tensor) -> Tensor:
    """Jacobian of softmax given its output ``s: (..., n)`` → ``(..., n, n) = diag(s) - s s^T``."""
    if s.dim() == 0 or s.size(-1) == 0:
        raise ValueError(f"s must have a non-empty last dim, got shape {tuple(s.shape)}")
    return torch.diag_embed(s) - s.unsqueeze(-1) * s.unsqueeze(-2)
# --8<-- [end:jacobian]


# --8<-- [start:grad_norm]
def softmax_grad_norm(
    d_k: int,
    n_keys: int = 16,
    *,
    scaled: bool,
    n_trials: int = 2_000,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> tuple[float, float]:
    """Mean Frobenius norm of the softmax Jacobian and mean largest weight for random q, K.

    Scores are ``K q`` (``scaled=False``) or ``K q / sqrt(d_k)`` (``scaled=True``), with
    ``q: (d_k,)`` and ``K: (n_keys, d_k)`` standard normal, averaged over ``n_trials`` draws.
    """
    if d_k <= 0 or n_keys <= 1 or n_trials <= 0:
        raise ValueError(f"need d_k > 0, n_keys > 1, n_trials > 0; got {d_k}, {n_keys}, {n_trials}")
    q = torch.randn(n_trials, d_k, 1, generator=generator, dtype=dtype)
    keys = torch.randn(n_trials, n_keys, d_k, generator=generator, dtype=dtype)
    scores = (keys @ q).squeeze(-1)  # (n_trials, n_keys)
    if scaled:
        scores = scores / math.sqrt(d_k)
    s = torch.softmax(scores, dim=-1)
    jac_norm = torch.linalg.matrix_norm(softmax_jacobian(s)).mean().item()
    return jac_norm, s.max(dim=-1).values.mean().item()
# --8<-- [end:grad_norm]


if __name__ == "__main__":
    g = torch.Generator().manual_seed(0)
    for d in (4, 64, 512):
        raw = softmax_grad_norm(d, scaled=False, n_trials=500, generator=g)
        fix = softmax_grad_norm(d, scaled=True, n_trials=500, generator=g)
        var = dot_product_variance(d, 20_000, generator=g)
        print(f"d_k={d:4d}  Var[q·k]={var:7.1f}  |J| unscaled={raw[0]:.3f}  scaled={fix[0]:.3f}")
