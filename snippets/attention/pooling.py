"""Attention pooling: a data-dependent weighted average of values, f(q) = sum_i alpha(q, k_i) v_i.

Reference: d2l.ai §11.1 (queries, keys, values; attention cues) and §11.2 (attention pooling);
Bahdanau et al. 2015. Keys are the *rows* of ``K`` (``(n_k, d)``), as in PyTorch; the score is a
*similarity* (larger score ⇒ larger weight), so a distance must enter with a minus sign.
Boolean masks follow ``F.scaled_dot_product_attention``: True = the key takes part.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from snippets.attention.masking import masked_softmax

__all__ = [
    "ScoreFn",
    "attention_pool",
    "attention_pool_loop",
    "dot_score",
    "gaussian_score",
    "uniform_pooling",
    "one_hot_attention",
]

ScoreFn = Callable[[Tensor, Tensor], Tensor]


# --8<-- [start:scores]
def dot_score(query: Tensor, keys: Tensor, scale: float | None = None) -> Tensor:
    """Scaled dot product ``q·k * scale`` (default ``1/sqrt(d)``): ``(..., n_q, d), (..., n_k, d)
    -> (..., n_q, n_k)``. Larger dot product = more similar = more weight."""
    scale = 1.0 / math.sqrt(query.size(-1)) if scale is None else scale
    return query @ keys.transpose(-2, -1) * scale


def gaussian_score(query: Tensor, keys: Tensor, w: float | Tensor = 1.0) -> Tensor:
    """Negative scaled squared distance ``-(||q - k|| * w)^2 / 2`` (Gaussian kernel in log space):
    ``(..., n_q, d), (..., n_k, d) -> (..., n_q, n_k)``. Near keys get large scores."""
    diff = query.unsqueeze(-2) - keys.unsqueeze(-3)  # (..., n_q, n_k, d)
    return -0.5 * (diff * w).pow(2).sum(-1)


# --8<-- [end:scores]


# --8<-- [start:attention_pool]
def attention_pool(
    query: Tensor, keys: Tensor, values: Tensor, score_fn: ScoreFn, mask: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Score → softmax → weighted sum, for all queries at once.

    Shapes: ``query: (..., n_q, d_q)``, ``keys: (..., n_k, d_k)``, ``values: (..., n_k, d_v)``
    → ``(output (..., n_q, d_v), weights (..., n_q, n_k))``. ``score_fn(query, keys)`` returns
    ``(..., n_q, n_k)``; ``mask`` (True = keep) broadcasts to it. Every row of ``weights`` is
    non-negative and sums to 1, so each output is a convex combination of the values.
    """
    _check_pool(query, keys, values)
    scores = score_fn(query, keys)  # e_l = score(q, k_l)
    expected = (*query.shape[:-1], keys.size(-2))
    if tuple(scores.shape) != expected:
        raise ValueError(f"score_fn must return shape {expected} (..., n_q, n_k), got {tuple(scores.shape)}")
    weights = masked_softmax(scores, mask)  # a = softmax(e)
    return weights @ values, weights  # c = sum_l a_l v_l, one (n_k, d_v) matmul per batch


# --8<-- [end:attention_pool]


# --8<-- [start:attention_pool_loop]
def attention_pool_loop(query: Tensor, keys: Tensor, values: Tensor, score_fn: ScoreFn) -> Tensor:
    """Reference: one query and one key at a time (``query: (n_q, d_q)``, ``keys: (n_k, d_k)``,
    ``values: (n_k, d_v)`` → ``(n_q, d_v)``). Slow on purpose: it spells out the formulas."""
    _check_pool(query, keys, values)
    if query.dim() != 2:
        raise ValueError(f"the loop reference takes unbatched 2-D inputs, got query {tuple(query.shape)}")
    outputs = []
    for q in query:  # each query is pooled independently
        e = torch.stack([score_fn(q[None], k[None])[0, 0] for k in keys])  # e_l, l = 1..n_k
        a = torch.exp(e - e.max()) / torch.exp(e - e.max()).sum()  # softmax
        outputs.append(sum(a_l * v_l for a_l, v_l in zip(a, values)))  # sum_l a_l v_l
    return torch.stack(outputs)


# --8<-- [end:attention_pool_loop]


# --8<-- [start:extremes]
def uniform_pooling(values: Tensor, n_q: int) -> Tensor:
    """No cue at all: every query gets the plain average of the values, weights ``1/n_k``.

    ``values: (..., n_k, d_v)`` → ``(..., n_q, d_v)``; equals ``attention_pool`` with a constant
    score (average pooling)."""
    if n_q <= 0:
        raise ValueError(f"n_q must be positive, got n_q={n_q}")
    if values.dim() < 2 or values.size(-2) == 0:
        raise ValueError(f"values must be (..., n_k, d_v) with n_k > 0, got shape {tuple(values.shape)}")
    mean = values.mean(dim=-2, keepdim=True)  # (..., 1, d_v)
    return mean.expand(*values.shape[:-2], n_q, values.size(-1))


def one_hot_attention(index: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
    """A hard dictionary lookup written as attention: weight 1 on key ``index``, 0 elsewhere.

    ``index: (..., n_q)`` integer, ``values: (..., n_k, d_v)`` → ``(output (..., n_q, d_v),
    weights (..., n_q, n_k))``; ``output`` is exactly ``values[..., index, :]``."""
    if index.dtype.is_floating_point or index.dtype == torch.bool:
        raise ValueError(f"index must be an integer tensor, got dtype {index.dtype}")
    n_k = values.size(-2)
    if index.numel() and bool(((index < 0) | (index >= n_k)).any()):
        raise ValueError(f"index must lie in [0, n_k={n_k}), got {index.tolist()}")
    weights = torch.nn.functional.one_hot(index, n_k).to(values.dtype)  # rows are one-hot
    return weights @ values, weights


# --8<-- [end:extremes]


def _check_pool(query: Tensor, keys: Tensor, values: Tensor) -> None:
    """Name the offending tensor when the (..., n, d) layouts do not fit together."""
    for name, t in (("query", query), ("keys", keys), ("values", values)):
        if t.dim() < 2:
            raise ValueError(f"{name} must be (..., n, d), got shape {tuple(t.shape)}")
    if keys.size(-2) != values.size(-2):
        raise ValueError(f"keys and values must pair up: keys have n_k={keys.size(-2)}, values have {values.size(-2)}")
    if keys.size(-2) == 0:
        raise ValueError("keys must hold at least one key (n_k=0)")
    if not (query.shape[:-2] == keys.shape[:-2] == values.shape[:-2]):
        raise ValueError(
            f"batch dims differ: query {tuple(query.shape[:-2])}, keys {tuple(keys.shape[:-2])}, "
            f"values {tuple(values.shape[:-2])}"
        )


if __name__ == "__main__":
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])  # three keys (rows)
    values = torch.tensor([[10.0, 1.0], [20.0, 2.0], [30.0, 3.0]])
    query = torch.tensor([[2.0, 0.0]])  # most similar to key 0
    for name, fn in (("dot", dot_score), ("gaussian", gaussian_score)):
        out, w = attention_pool(query, keys, values, fn)
        print(f"{name:8s} weights {[round(x, 3) for x in w[0].tolist()]} -> output {out[0].tolist()}")
    print("uniform  output", uniform_pooling(values, 1)[0].tolist())
    print("one-hot  output (index 2)", one_hot_attention(torch.tensor([2]), values)[0][0].tolist())
