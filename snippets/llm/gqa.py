"""Grouped-query attention (GQA): h query heads share g key/value heads; MQA is g = 1, MHA is g = h.

Reference: Shazeer 2019, "Fast Transformer Decoding: One Write-Head is All You Need" (MQA);
Ainslie et al. 2023, "GQA: Training Generalized Multi-Query Transformer Models", §2.
Query head ``i`` uses KV head ``i // (h/g)``: *contiguous* query heads form a group, which is
``repeat_interleave`` of the KV heads, not ``repeat`` (the convention of
``F.scaled_dot_product_attention(..., enable_gqa=True)``). The KV cache shrinks by ``h/g``.
Implementation: the ``h/g`` query heads of a group are stacked as extra query rows against the
group's single K/V, so K and V are never repeated or copied.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from snippets.attention.masking import causal_mask
from snippets.attention.multihead import merge_heads, split_heads
from snippets.attention.sdpa import scaled_dot_product_attention
from snippets.llm.kv_cache import KVCache, cached_causal_mask

__all__ = ["grouped_query_attention", "GroupedQueryAttention", "kv_projection_params", "mha_to_gqa"]


# --8<-- [start:gqa]
def grouped_query_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
) -> Tensor:
    """Attention where ``h`` query heads share ``g`` KV heads (``h % g == 0``).

    Shapes: ``query: (B, h, n_q, d)``, ``key: (B, g, n_k, d)``, ``value: (B, g, n_k, d_v)`` →
    ``(B, h, n_q, d_v)``. ``attn_mask`` broadcasts to ``(B, h, n_q, n_k)`` (True = attend, or
    additive); ``is_causal`` is aligned top-left like ``F.scaled_dot_product_attention``.
    """
    _check_gqa(query, key, value)
    b, h, n_q, d = query.shape
    g, n_k = key.size(1), key.size(2)
    r = h // g  # query heads per KV head; head i belongs to group i // r
    q = query.reshape(b, g, r * n_q, d)  # a group's r heads = r·n_q queries against ONE K/V
    if is_causal:
        if attn_mask is not None:
            raise ValueError("pass either attn_mask or is_causal=True, not both")
        attn_mask = causal_mask(n_q, n_k, device=query.device)  # top-left, like F.sdpa
    if attn_mask is not None and attn_mask.dim() <= 2:  # (n_q, n_k): the same for every head
        attn_mask = attn_mask.expand(n_q, n_k).repeat(r, 1)  # rows follow q: (r·n_q, n_k)
    elif attn_mask is not None:  # per-batch/per-head mask: fold its heads the same way as q
        attn_mask = torch.broadcast_to(attn_mask, (b, h, n_q, n_k)).reshape(b, g, r * n_q, n_k)
    out = scaled_dot_product_attention(q, key, value, attn_mask, scale=scale)  # (B, g, r·n_q, d_v)
    return out.reshape(b, h, n_q, -1)
# --8<-- [end:gqa]


def _check_gqa(query: Tensor, key: Tensor, value: Tensor) -> None:
    """Name the tensor and the rule when the shapes do not fit GQA."""
    for name, t in (("query", query), ("key", key), ("value", value)):
        if t.dim() != 4:
            raise ValueError(f"{name} must be 4-D (B, heads, L, d), got shape {tuple(t.shape)}")
    if key.shape[:3] != value.shape[:3]:
        raise ValueError(f"key {tuple(key.shape)} and value {tuple(value.shape)} differ in (B, g, n_k)")
    if query.size(0) != key.size(0):
        raise ValueError(f"batch sizes differ: query {query.size(0)}, key {key.size(0)}")
    if query.size(1) % key.size(1):
        raise ValueError(
            f"num_heads={query.size(1)} (query) is not divisible by num_kv_heads={key.size(1)} (key/value)"
        )


# --8<-- [start:params]
def kv_projection_params(d_model: int, num_heads: int, num_kv_heads: int, bias: bool = True) -> int:
    """Parameters of W^K and W^V: ``2 · d_model · g · d_head`` (+ ``2 · g · d_head`` biases)."""
    kv_width = num_kv_heads * (d_model // num_heads)
    return 2 * (d_model * kv_width + (kv_width if bias else 0))
# --8<-- [end:params]


class GroupedQueryAttention(nn.Module):
    """Self-attention with ``num_heads`` query heads and ``num_kv_heads`` key/value heads.

    ``x: (B, n, d_model)`` → ``(B, n, d_model)``. ``num_kv_heads == num_heads`` is ordinary
    multi-head attention, ``num_kv_heads == 1`` is multi-query attention. W^Q and W^O are
    ``d_model × d_model``; W^K and W^V are ``d_model × (num_kv_heads · d_head)``.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        num_kv_heads: int | None = None,
        *,
        bias: bool = True,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if min(d_model, num_heads, num_kv_heads) <= 0:
            raise ValueError(
                "d_model, num_heads, num_kv_heads must be positive, "
                f"got {d_model}, {num_heads}, {num_kv_heads}"
            )
        if d_model % num_heads:
            raise ValueError(f"d_model={d_model} is not divisible by num_heads={num_heads}")
        if num_heads % num_kv_heads:
            raise ValueError(f"num_heads={num_heads} is not divisible by num_kv_heads={num_kv_heads}")
        kw = {"device": device, "dtype": dtype}
        self.d_model, self.num_heads, self.num_kv_heads = d_model, num_heads, num_kv_heads
        self.head_dim = d_model // num_heads
        self.q_proj = nn.Linear(d_model, d_model, bias=bias, **kw)
        self.k_proj = nn.Linear(d_model, num_kv_heads * self.head_dim, bias=bias, **kw)
        self.v_proj = nn.Linear(d_model, num_kv_heads * self.head_dim, bias=bias, **kw)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias, **kw)

    # --8<-- [start:forward]
    def forward(
        self,
        x: Tensor,
        cache: KVCache | None = None,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
    ) -> Tensor:
        """``x: (B, n, d_model)``. With ``cache``, the new K/V are appended and the queries attend
        to every cached position; ``is_causal`` then aligns the mask bottom-right (new queries
        are the last ``n`` positions), which is also the ordinary causal mask without a cache."""
        if x.dim() != 3 or x.size(-1) != self.d_model:
            raise ValueError(f"x must be (B, n, d_model={self.d_model}), got {tuple(x.shape)}")
        if is_causal and attn_mask is not None:
            raise ValueError("pass either attn_mask or is_causal=True, not both")
        q = split_heads(self.q_proj(x), self.num_heads)  # (B, h, n, d_head)
        k = split_heads(self.k_proj(x), self.num_kv_heads)  # (B, g, n, d_head)
        v = split_heads(self.v_proj(x), self.num_kv_heads)
        if cache is not None:
            k, v = cache.append(k, v)  # (B, g, cached + n, d_head), views of the cache
        if is_causal and x.size(1) > 1:  # one new query may see every key: no mask needed
            attn_mask = cached_causal_mask(x.size(1), k.size(2), device=x.device)
        out = grouped_query_attention(q, k, v, attn_mask)  # (B, h, n, d_head)
        return self.out_proj(merge_heads(out))
    # --8<-- [end:forward]

    def new_cache(self, batch_size: int, max_len: int) -> KVCache:
        """An empty :class:`KVCache` of the right shape, dtype and device for this layer."""
        w = self.k_proj.weight
        return KVCache(batch_size, self.num_kv_heads, max_len, self.head_dim, dtype=w.dtype, device=w.device)


# --8<-- [start:convert]
@torch.no_grad()
def mha_to_gqa(layer: GroupedQueryAttention, num_kv_heads: int) -> GroupedQueryAttention:
    """A layer with ``num_kv_heads`` KV heads whose K/V heads are the mean of each group of
    ``layer``'s KV heads (Ainslie et al. 2023, §2.1: mean pooling, then "uptraining").

    Groups are contiguous, as in :func:`grouped_query_attention`. W^Q and W^O are copied.
    """
    g0 = layer.num_kv_heads
    if num_kv_heads <= 0 or g0 % num_kv_heads:
        raise ValueError(f"the layer's num_kv_heads={g0} is not divisible by num_kv_heads={num_kv_heads}")
    w = layer.q_proj.weight
    bias = layer.q_proj.bias is not None
    out = GroupedQueryAttention(
        layer.d_model, layer.num_heads, num_kv_heads, bias=bias, device=w.device, dtype=w.dtype
    )
    out.q_proj.load_state_dict(layer.q_proj.state_dict())
    out.out_proj.load_state_dict(layer.out_proj.state_dict())
    for src, dst in ((layer.k_proj, out.k_proj), (layer.v_proj, out.v_proj)):
        pooled = src.weight.view(num_kv_heads, g0 // num_kv_heads, layer.head_dim, layer.d_model).mean(1)
        dst.weight.copy_(pooled.reshape_as(dst.weight))  # (g · d_head, d_model)
        if bias:
            dst.bias.copy_(src.bias.view(num_kv_heads, g0 // num_kv_heads, layer.head_dim).mean(1).flatten())
    return out
# --8<-- [end:convert]


if __name__ == "__main__":
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 8, 5, 4), torch.randn(1, 2, 5, 4), torch.randn(1, 2, 5, 4)
    ours = grouped_query_attention(q, k, v, is_causal=True)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    tiled = torch.nn.functional.scaled_dot_product_attention(
        q, k.repeat(1, 4, 1, 1), v.repeat(1, 4, 1, 1), is_causal=True
    )
    print("max |ours - F.sdpa(enable_gqa=True)| =", (ours - ref).abs().max().item())
    print("with repeat (tiling) instead:         ", (ours - tiled).abs().max().item())
    for g in (8, 2, 1):
        n = kv_projection_params(512, 8, g, bias=False)
        print(f"d_model=512, h=8, g={g}: W^K+W^V = {n} parameters, {2 * g * 64} cached values/token/layer")
