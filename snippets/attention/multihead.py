"""Multi-head attention from scratch: h scaled dot-product attentions in parallel subspaces.

Reference: Vaswani et al. 2017, §3.2.2; d2l.ai §11.5. A drop-in for
``torch.nn.MultiheadAttention(batch_first=True)`` with the same mask conventions:
``key_padding_mask: (B, n_k)`` True = *ignore* that key; ``attn_mask: (n_q, n_k)`` or
``(B*h, n_q, n_k)`` boolean True = *not allowed*, or floating = added to the scores.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from snippets.attention.masking import FullyMasked
from snippets.attention.sdpa import attention_weights

__all__ = ["split_heads", "merge_heads", "MultiHeadAttention"]


# --8<-- [start:split_merge]
def split_heads(x: Tensor, num_heads: int) -> Tensor:
    """``(B, L, h * d) -> (B, h, L, d)``: a reshape and a transpose, no copy of the weights."""
    b, n, e = x.shape
    if e % num_heads:
        raise ValueError(f"feature dim {e} is not divisible by num_heads={num_heads}")
    return x.reshape(b, n, num_heads, e // num_heads).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """``(B, h, L, d) -> (B, L, h * d)``: the inverse of :func:`split_heads` (concat heads)."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)
# --8<-- [end:split_merge]


class MultiHeadAttention(nn.Module):
    """``Concat(head_1..head_h) W^O`` with ``head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V)``.

    Inputs are batch-first: ``query: (B, n_q, d_model)``, ``key: (B, n_k, kdim)``,
    ``value: (B, n_k, vdim)``; output ``(B, n_q, d_model)``. Each head has width
    ``d_model // num_heads``; the h per-head projections are stored as one fused
    ``nn.Linear`` per role (see the page "one big projection + split").
    ``is_causal=True`` without ``attn_mask`` applies a top-left causal mask; with an
    ``attn_mask`` it is only a hint and the mask wins (as in ``nn.MultiheadAttention``).
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        *,
        bias: bool = True,
        dropout: float = 0.0,
        kdim: int | None = None,
        vdim: int | None = None,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if d_model <= 0 or num_heads <= 0:
            raise ValueError(f"d_model and num_heads must be positive, got {d_model}, {num_heads}")
        if d_model % num_heads:
            raise ValueError(f"d_model={d_model} is not divisible by num_heads={num_heads}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        kdim = d_model if kdim is None else kdim
        vdim = d_model if vdim is None else vdim
        if kdim <= 0 or vdim <= 0:
            raise ValueError(f"kdim and vdim must be positive, got kdim={kdim}, vdim={vdim}")
        kw = {"device": device, "dtype": dtype}
        self.d_model, self.num_heads, self.dropout = d_model, num_heads, dropout
        self.q_proj = nn.Linear(d_model, d_model, bias=bias, **kw)
        self.k_proj = nn.Linear(kdim, d_model, bias=bias, **kw)
        self.v_proj = nn.Linear(vdim, d_model, bias=bias, **kw)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias, **kw)

    # --8<-- [start:forward]
    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = False,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
        *,
        fully_masked: FullyMasked = "raise",
    ) -> tuple[Tensor, Tensor | None]:
        """Return ``(output (B, n_q, d_model), weights or None)``; weights are
        ``(B, n_q, n_k)`` averaged over heads or ``(B, h, n_q, n_k)`` per head."""
        self._check_inputs(query, key, value)
        h = self.num_heads
        q = split_heads(self.q_proj(query), h)  # (B, h, n_q, d)
        k = split_heads(self.k_proj(key), h)  # (B, h, n_k, d)
        v = split_heads(self.v_proj(value), h)  # (B, h, n_k, d)
        keep = self._keep_mask(key_padding_mask, attn_mask, query.shape[:2], key.size(1), is_causal)
        w = attention_weights(q, k, keep, fully_masked=fully_masked)  # (B, h, n_q, n_k)
        if self.training and self.dropout > 0:
            w = nn.functional.dropout(w, self.dropout)
        out = self.out_proj(merge_heads(w @ v))  # concat heads, then W^O
        if not need_weights:
            return out, None
        return out, (w.mean(dim=1) if average_attn_weights else w)
    # --8<-- [end:forward]

    def _keep_mask(
        self,
        key_padding_mask: Tensor | None,
        attn_mask: Tensor | None,
        bq: torch.Size,
        n_k: int,
        is_causal: bool,
    ) -> Tensor | None:
        """Combine nn.MultiheadAttention-style masks into one mask broadcastable to
        ``(B, h, n_q, n_k)``: boolean with True = keep, or additive float if any mask is float."""
        b, n_q = bq
        dev, dt = self.q_proj.weight.device, self.q_proj.weight.dtype
        for name, m in (("attn_mask", attn_mask), ("key_padding_mask", key_padding_mask)):
            if m is not None and m.dtype != torch.bool and not m.dtype.is_floating_point:
                raise ValueError(f"{name} must be bool (True = masked out) or floating, got {m.dtype}")
        parts: list[Tensor] = []
        if is_causal and attn_mask is None:
            parts.append(torch.ones(n_q, n_k, dtype=torch.bool, device=dev).tril())
        if attn_mask is not None:
            if attn_mask.shape == (b * self.num_heads, n_q, n_k):
                attn_mask = attn_mask.reshape(b, self.num_heads, n_q, n_k)
            elif attn_mask.shape != (n_q, n_k):
                raise ValueError(
                    f"attn_mask must have shape ({n_q}, {n_k}) or "
                    f"({b * self.num_heads}, {n_q}, {n_k}), got {tuple(attn_mask.shape)}"
                )
            parts.append(~attn_mask if attn_mask.dtype == torch.bool else attn_mask.to(dt))
        if key_padding_mask is not None:
            if key_padding_mask.shape != (b, n_k):
                raise ValueError(
                    f"key_padding_mask must have shape (B, n_k) = ({b}, {n_k}), "
                    f"got {tuple(key_padding_mask.shape)}"
                )
            kpm = key_padding_mask[:, None, None, :]  # (B, 1, 1, n_k), True = padding
            parts.append(~kpm if kpm.dtype == torch.bool else kpm.to(dt))
        if not parts:
            return None
        if all(p.dtype == torch.bool for p in parts):
            keep = parts[0]
            for p in parts[1:]:
                keep = keep & p
            return keep
        additive = [
            torch.zeros(p.shape, dtype=dt, device=dev).masked_fill(~p, float("-inf"))
            if p.dtype == torch.bool
            else p
            for p in parts
        ]
        total = additive[0]
        for p in additive[1:]:
            total = total + p
        return total

    def _check_inputs(self, query: Tensor, key: Tensor, value: Tensor) -> None:
        """Name the offending tensor when shapes do not fit (batch-first layout)."""
        for name, t in (("query", query), ("key", key), ("value", value)):
            if t.dim() != 3:
                raise ValueError(f"{name} must be (B, L, E) with batch_first layout, got {tuple(t.shape)}")
        if query.size(-1) != self.d_model:
            raise ValueError(f"query has E={query.size(-1)} but d_model={self.d_model}")
        if key.size(-1) != self.k_proj.in_features or value.size(-1) != self.v_proj.in_features:
            raise ValueError(
                f"key/value feature dims ({key.size(-1)}, {value.size(-1)}) do not match "
                f"kdim={self.k_proj.in_features}, vdim={self.v_proj.in_features}"
            )
        if not (query.size(0) == key.size(0) == value.size(0)):
            raise ValueError(
                f"batch sizes differ: query {query.size(0)}, key {key.size(0)}, value {value.size(0)}"
            )
        if key.size(1) != value.size(1):
            raise ValueError(f"key and value lengths differ: {key.size(1)} vs {value.size(1)}")

    @torch.no_grad()
    def load_from_torch(self, ref: nn.MultiheadAttention) -> MultiHeadAttention:
        """Copy the weights of a ``nn.MultiheadAttention`` with the same sizes into this module."""
        if ref.embed_dim != self.d_model or ref.num_heads != self.num_heads:
            raise ValueError(
                f"size mismatch: ours (d_model={self.d_model}, h={self.num_heads}), "
                f"theirs (embed_dim={ref.embed_dim}, num_heads={ref.num_heads})"
            )
        if ref.in_proj_weight is not None:
            wq, wk, wv = ref.in_proj_weight.chunk(3)
        else:
            wq, wk, wv = ref.q_proj_weight, ref.k_proj_weight, ref.v_proj_weight
        for lin, w in ((self.q_proj, wq), (self.k_proj, wk), (self.v_proj, wv)):
            lin.weight.copy_(w)
        if ref.in_proj_bias is not None and self.q_proj.bias is not None:
            for lin, b in zip((self.q_proj, self.k_proj, self.v_proj), ref.in_proj_bias.chunk(3)):
                lin.bias.copy_(b)
        self.out_proj.weight.copy_(ref.out_proj.weight)
        if ref.out_proj.bias is not None and self.out_proj.bias is not None:
            self.out_proj.bias.copy_(ref.out_proj.bias)
        return self


if __name__ == "__main__":
    torch.manual_seed(0)
    ref = nn.MultiheadAttention(8, 2, batch_first=True)
    ours = MultiHeadAttention(8, 2).load_from_torch(ref)
    x = torch.randn(2, 5, 8)
    pad = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])
    a, _ = ours(x, x, x, key_padding_mask=pad)
    b, _ = ref(x, x, x, key_padding_mask=pad)
    print("parameters:", sum(p.numel() for p in ours.parameters()), "= 4*8*8 + 4*8")
    print("max |ours - nn.MultiheadAttention| =", (a - b).abs().max().item())
