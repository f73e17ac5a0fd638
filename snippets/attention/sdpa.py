"""Scaled dot-product attention from scratch: softmax(Q K^T / sqrt(d_k) + M) V.

Reference: Vaswani et al. 2017, "Attention Is All You Need", §3.2.1; d2l.ai §11.3.
Same signature and mask convention as ``torch.nn.functional.scaled_dot_product_attention``
(boolean ``attn_mask``: True = take part in attention; floating ``attn_mask``: added to scores).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from snippets.attention.masking import FullyMasked, causal_mask, masked_softmax

__all__ = ["attention_weights", "scaled_dot_product_attention"]


# --8<-- [start:attention_weights]
def attention_weights(
    query: Tensor,
    key: Tensor,
    attn_mask: Tensor | None = None,
    *,
    is_causal: bool = False,
    scale: float | None = None,
    fully_masked: FullyMasked = "raise",
) -> Tensor:
    """Attention probabilities ``softmax(Q K^T * scale + M)``.

    Shapes: ``query: (..., n_q, d_k)``, ``key: (..., n_k, d_k)`` → ``(..., n_q, n_k)``;
    ``...`` is any batch shape (typically ``(B, h)``), identical for both.
    ``scale`` defaults to ``1 / sqrt(d_k)``.
    """
    _check_qk(query, key)
    if is_causal and attn_mask is not None:
        raise ValueError("pass either attn_mask or is_causal=True, not both")
    scale = 1.0 / math.sqrt(query.size(-1)) if scale is None else scale
    scores = query @ key.transpose(-2, -1) * scale  # (..., n_q, n_k)
    if is_causal:
        attn_mask = causal_mask(query.size(-2), key.size(-2), device=query.device)
    return masked_softmax(scores, attn_mask, fully_masked=fully_masked)
# --8<-- [end:attention_weights]


# --8<-- [start:sdpa]
def scaled_dot_product_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    *,
    fully_masked: FullyMasked = "raise",
    generator: torch.Generator | None = None,
) -> Tensor:
    """``softmax(Q K^T / sqrt(d_k) + M) V`` — drop-in for ``F.scaled_dot_product_attention``.

    Shapes: ``query: (..., n_q, d_k)``, ``key: (..., n_k, d_k)``, ``value: (..., n_k, d_v)``
    → ``(..., n_q, d_v)``. ``attn_mask`` broadcasts to ``(..., n_q, n_k)``. Dropout (on the
    weights, as in the paper's implementation) is applied only when ``dropout_p > 0``.
    """
    if value.dim() != key.dim() or value.shape[:-1] != key.shape[:-1]:
        raise ValueError(
            f"value must match key in every dim but the last: key {tuple(key.shape)}, "
            f"value {tuple(value.shape)}"
        )
    if value.dtype != query.dtype or value.device != query.device:
        raise ValueError(
            f"value ({value.dtype}, {value.device}) must match query ({query.dtype}, {query.device})"
        )
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")
    weights = attention_weights(
        query, key, attn_mask, is_causal=is_causal, scale=scale, fully_masked=fully_masked
    )
    if dropout_p > 0.0:
        keep = torch.rand(weights.shape, generator=generator, device=weights.device) >= dropout_p
        weights = weights * keep / (1.0 - dropout_p)
    return weights @ value  # (..., n_q, n_k) @ (..., n_k, d_v) -> (..., n_q, d_v)
# --8<-- [end:sdpa]


def _check_qk(query: Tensor, key: Tensor) -> None:
    """Validate the query/key pair, naming the offending dimension."""
    if query.dim() < 2 or key.dim() < 2:
        raise ValueError(
            f"query and key need at least 2 dims (..., n, d_k), got {query.dim()} and {key.dim()}"
        )
    if query.shape[:-2] != key.shape[:-2]:
        raise ValueError(
            f"batch/head dims differ: query {tuple(query.shape[:-2])}, key {tuple(key.shape[:-2])}"
        )
    if query.size(-1) != key.size(-1):
        raise ValueError(
            f"d_k mismatch: query has d_k={query.size(-1)} but key has d_k={key.size(-1)}"
        )
    if query.size(-2) == 0 or key.size(-2) == 0:
        raise ValueError(
            f"empty sequence: n_q={query.size(-2)}, n_k={key.size(-2)} (both must be positive)"
        )
    if query.dtype != key.dtype or query.device != key.device:
        raise ValueError(
            f"query ({query.dtype}, {query.device}) and key ({key.dtype}, {key.device}) differ"
        )
    if not query.dtype.is_floating_point:
        raise ValueError(f"attention needs floating-point inputs, got {query.dtype}")


if __name__ == "__main__":
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 3, 4), torch.randn(1, 3, 4), torch.randn(1, 3, 2)
    print("causal weights:\n", attention_weights(q, k, is_causal=True).squeeze(0))
    ours = scaled_dot_product_attention(q, k, v, is_causal=True)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    print("max |ours - torch| =", (ours - ref).abs().max().item())
