"""Self-attention: queries, keys and values all come from the same sequence X.

Reference: Vaswani et al. 2017, §3.2; d2l.ai §11.6. ``Y = softmax(X W_Q (X W_K)^T / sqrt(d_k)) X W_V``
is permutation-*equivariant* (``f(P X) = P f(X)``), not invariant: shuffling the tokens shuffles
the outputs the same way. Word order is therefore invisible without positional encodings.
"""

from __future__ import annotations

import torch
from torch import Tensor

from snippets.attention.sdpa import scaled_dot_product_attention

__all__ = ["self_attention", "permute_tokens"]


# --8<-- [start:self_attention]
def self_attention(x: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor, mask: Tensor | None = None) -> Tensor:
    """Single-head self-attention ``softmax(X W_Q (X W_K)^T / sqrt(d_k) + M) X W_V``.

    Shapes: ``x: (..., n, d_in)``, ``w_q, w_k: (d_in, d_k)``, ``w_v: (d_in, d_v)`` →
    ``(..., n, d_v)``. ``mask`` follows :func:`scaled_dot_product_attention` (boolean
    True = keep, or additive float), broadcastable to ``(..., n, n)``.
    """
    if x.dim() < 2:
        raise ValueError(f"x must be (..., n, d_in), got shape {tuple(x.shape)}")
    for name, w in (("w_q", w_q), ("w_k", w_k), ("w_v", w_v)):
        if w.dim() != 2 or w.size(0) != x.size(-1):
            raise ValueError(f"{name} must be (d_in={x.size(-1)}, d_out), got shape {tuple(w.shape)}")
    q, k, v = x @ w_q, x @ w_k, x @ w_v  # the same X plays all three roles
    return scaled_dot_product_attention(q, k, v, attn_mask=mask)


# --8<-- [end:self_attention]


def permute_tokens(x: Tensor, perm: Tensor) -> Tensor:
    """``P X``: reorder the positions (dim -2) of ``x: (..., n, d)`` by ``perm: (n,)``."""
    if perm.dim() != 1 or not torch.equal(perm.sort().values, torch.arange(x.size(-2), device=perm.device)):
        raise ValueError(f"perm must be a permutation of 0..{x.size(-2) - 1}, got {perm.tolist()}")
    return x[..., perm, :]


if __name__ == "__main__":
    torch.manual_seed(0)
    x = torch.randn(4, 3, dtype=torch.float64)
    w_q, w_k, w_v = (torch.randn(3, 3, dtype=torch.float64) for _ in range(3))
    perm = torch.tensor([2, 0, 3, 1])
    y, y_shuffled = self_attention(x, w_q, w_k, w_v), self_attention(permute_tokens(x, perm), w_q, w_k, w_v)
    print("f(PX) == P f(X):", torch.allclose(y_shuffled, permute_tokens(y, perm)))
    print("f(PX) == f(X):  ", torch.allclose(y_shuffled, y))
    x = torch.tensor([[1.0, 0.0], [3.0, 0.0]])
    print("scores X X^T for X=[[1,0],[3,0]]:", (x @ x.T).tolist(), "-> token 0 attends most to token 1")
