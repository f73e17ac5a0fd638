"""Attention scoring functions: additive (Bahdanau) and scaled dot-product attention as modules.

Reference: Bahdanau et al. 2015 (additive); Vaswani et al. 2017, §3.2.1 (scaled dot product);
d2l.ai §11.3. Additive: ``a(q, k) = w_v^T tanh(W_q q + W_k k)`` — queries and keys may have
different sizes. Scaled dot product: ``a(q, k) = q^T k / sqrt(d)`` — needs equal sizes, no
parameters, one matmul. Masks: boolean ``mask`` with True = keep (as in
``F.scaled_dot_product_attention``) and/or d2l-style ``valid_lens`` (``(B,)`` or ``(B, n_q)``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from snippets.attention.masking import masked_softmax, padding_mask
from snippets.attention.sdpa import attention_weights

__all__ = ["valid_lens_mask", "AdditiveAttention", "DotProductAttention"]


# --8<-- [start:valid_lens]
def valid_lens_mask(valid_lens: Tensor | None, mask: Tensor | None, n_q: int, n_k: int) -> Tensor | None:
    """Combine d2l's ``valid_lens`` with a boolean ``mask`` into one keep-mask (True = keep).

    ``valid_lens: (B,)`` keeps keys ``0 .. valid_lens[b] - 1`` for every query → ``(B, 1, n_k)``;
    ``valid_lens: (B, n_q)`` sets the length per query → ``(B, n_q, n_k)``. ``mask`` must be
    boolean and broadcast to ``(B, n_q, n_k)``; both given → their AND.
    """
    if mask is not None and mask.dtype != torch.bool:
        raise ValueError(f"mask must be boolean (True = keep), got dtype {mask.dtype}")
    if valid_lens is None:
        return mask
    if valid_lens.dim() == 1:
        keep = padding_mask(valid_lens, n_k)[:, None, :]  # (B, 1, n_k)
    elif valid_lens.dim() == 2 and valid_lens.size(1) == n_q:
        keep = padding_mask(valid_lens.reshape(-1), n_k).reshape(-1, n_q, n_k)  # (B, n_q, n_k)
    else:
        raise ValueError(f"valid_lens must be (B,) or (B, n_q={n_q}), got shape {tuple(valid_lens.shape)}")
    return keep if mask is None else keep & mask


# --8<-- [end:valid_lens]


class AdditiveAttention(nn.Module):
    """Additive attention: ``softmax_k(w_v^T tanh(W_q q + W_k k)) V``.

    ``queries: (B, n_q, query_size)``, ``keys: (B, n_k, key_size)``, ``values: (B, n_k, d_v)`` →
    ``(B, n_q, d_v)``. ``W_q: query_size → num_hiddens``, ``W_k: key_size → num_hiddens`` and
    ``w_v: num_hiddens → 1`` are bias-free ``nn.Linear`` layers (as in d2l). Dropout acts on the
    attention weights; the last weights ``(B, n_q, n_k)`` are kept in ``self.attention_weights``.
    """

    def __init__(
        self,
        key_size: int,
        query_size: int,
        num_hiddens: int,
        dropout: float = 0.0,
        *,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        for name, size in (("key_size", key_size), ("query_size", query_size), ("num_hiddens", num_hiddens)):
            if size <= 0:
                raise ValueError(f"{name} must be positive, got {name}={size}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        kw = {"device": device, "dtype": dtype}
        self.W_k = nn.Linear(key_size, num_hiddens, bias=False, **kw)
        self.W_q = nn.Linear(query_size, num_hiddens, bias=False, **kw)
        self.w_v = nn.Linear(num_hiddens, 1, bias=False, **kw)
        self.dropout = nn.Dropout(dropout)
        self.attention_weights: Tensor | None = None

    # --8<-- [start:additive]
    def forward(
        self,
        queries: Tensor,
        keys: Tensor,
        values: Tensor,
        valid_lens: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        _check_qkv(queries, keys, values, self.W_q.in_features, self.W_k.in_features)
        q, k = self.W_q(queries), self.W_k(keys)  # (B, n_q, h), (B, n_k, h)
        features = torch.tanh(q.unsqueeze(2) + k.unsqueeze(1))  # broadcast: (B, n_q, n_k, h)
        scores = self.w_v(features).squeeze(-1)  # (B, n_q, n_k)
        keep = valid_lens_mask(valid_lens, mask, queries.size(1), keys.size(1))
        self.attention_weights = masked_softmax(scores, keep)
        return self.dropout(self.attention_weights) @ values  # (B, n_q, d_v)

    # --8<-- [end:additive]


class DotProductAttention(nn.Module):
    """Scaled dot-product attention: ``softmax(Q K^T / sqrt(d)) V``, no parameters.

    ``queries: (B, n_q, d)``, ``keys: (B, n_k, d)``, ``values: (B, n_k, d_v)`` → ``(B, n_q, d_v)``.
    Query and key sizes must be equal (``ValueError`` otherwise — use :class:`AdditiveAttention`).
    Dropout acts on the weights; the last weights are kept in ``self.attention_weights``.
    """

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.dropout = nn.Dropout(dropout)
        self.attention_weights: Tensor | None = None

    # --8<-- [start:dot]
    def forward(
        self,
        queries: Tensor,
        keys: Tensor,
        values: Tensor,
        valid_lens: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        _check_qkv(queries, keys, values, None, None)
        keep = valid_lens_mask(valid_lens, mask, queries.size(1), keys.size(1))
        self.attention_weights = attention_weights(queries, keys, keep)  # checks d_q == d_k
        return self.dropout(self.attention_weights) @ values  # (B, n_q, d_v)

    # --8<-- [end:dot]


def _check_qkv(queries: Tensor, keys: Tensor, values: Tensor, query_size: int | None, key_size: int | None) -> None:
    """Name the offending tensor when the (B, n, d) layouts do not fit together."""
    for name, t in (("queries", queries), ("keys", keys), ("values", values)):
        if t.dim() != 3:
            raise ValueError(f"{name} must be (B, n, d), got shape {tuple(t.shape)}")
    if query_size is not None and queries.size(-1) != query_size:
        raise ValueError(f"queries have size {queries.size(-1)}, expected query_size={query_size}")
    if key_size is not None and keys.size(-1) != key_size:
        raise ValueError(f"keys have size {keys.size(-1)}, expected key_size={key_size}")
    if keys.size(1) != values.size(1):
        raise ValueError(f"keys and values must pair up: n_k={keys.size(1)} keys but {values.size(1)} values")
    if not (queries.size(0) == keys.size(0) == values.size(0)):
        raise ValueError(f"batch sizes differ: queries {queries.size(0)}, keys {keys.size(0)}, values {values.size(0)}")


if __name__ == "__main__":
    torch.manual_seed(0)
    queries, keys = torch.randn(2, 1, 20), torch.ones(2, 10, 2)  # query_size 20 != key_size 2
    values = torch.arange(40.0).reshape(1, 10, 4).repeat(2, 1, 1)
    valid_lens = torch.tensor([2, 6])
    additive = AdditiveAttention(key_size=2, query_size=20, num_hiddens=8).eval()
    with torch.no_grad():
        out = additive(queries, keys, values, valid_lens)
    print("additive, query_size 20 vs key_size 2 -> output", tuple(out.shape))
    print("weights (identical keys -> uniform over the valid ones):")
    for row in additive.attention_weights.squeeze(1):
        print("  ", [round(x, 3) for x in row.tolist()])
    try:
        DotProductAttention()(queries, keys, values, valid_lens)
    except ValueError as err:
        print("dot product refuses:", err)
