"""Why one big projection + a split equals h separate per-head projections (exactly).

Reference: Vaswani et al. 2017, §3.2.2; d2l.ai §11.5 (``transpose_qkv``: heads folded into the
batch dim). Weights here follow the paper's right-multiplication convention ``X @ W`` with
``W_i^Q: (d_model, d_k)``; an ``nn.Linear`` stores the transpose, ``weight = W.T``.
Block-column identity: ``X [W_1 | ... | W_h] = [X W_1 | ... | X W_h]``, and with the row blocks
``W^O_i`` of ``W^O``: ``Concat(head_1..head_h) W^O = sum_i head_i W^O_i``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

from snippets.attention.multihead import MultiHeadAttention, merge_heads, split_heads
from snippets.attention.sdpa import scaled_dot_product_attention

__all__ = [
    "per_head_reference",
    "fuse_head_weights",
    "unfuse",
    "to_multihead",
    "heads_to_batch",
    "batch_to_heads",
    "folded_multihead",
    "split_input_heads",
    "count_matmuls",
    "time_loop_vs_fused",
]


# --8<-- [start:reference]
def per_head_reference(
    x: Tensor,
    wq_list: Sequence[Tensor],
    wk_list: Sequence[Tensor],
    wv_list: Sequence[Tensor],
    wo: Tensor,
    *,
    kv: Tensor | None = None,
    attn_mask: Tensor | None = None,
) -> Tensor:
    """The paper's formula, literally: h separate projections, h attentions, concat, ``W^O``.

    ``x: (B, n_q, d_model)``; ``kv: (B, n_k, d_kv)`` is where keys and values come from
    (default ``x``: self-attention); ``wq_list[i], wk_list[i]: (d_model or d_kv, d_k)``,
    ``wv_list[i]: (d_kv, d_v)``, ``wo: (h * d_v, d_out)`` → ``(B, n_q, d_out)``.
    ``attn_mask`` follows ``sdpa`` (True = keep). The loop over heads *is* the lesson.
    """
    _check_lists(wq_list, wk_list, wv_list)
    kv = x if kv is None else kv
    heads = []
    for wq, wk, wv in zip(wq_list, wk_list, wv_list):  # head_i = Attention(X W_i^Q, X W_i^K, X W_i^V)
        heads.append(scaled_dot_product_attention(x @ wq, kv @ wk, kv @ wv, attn_mask))
    concat = torch.cat(heads, dim=-1)  # (B, n_q, h * d_v)
    if concat.size(-1) != wo.size(0):
        raise ValueError(f"wo has {wo.size(0)} rows but the concatenated heads have width {concat.size(-1)}")
    return concat @ wo


# --8<-- [end:reference]


# --8<-- [start:fuse]
def fuse_head_weights(w_list: Sequence[Tensor]) -> Tensor:
    """``[W_1 | W_2 | ... | W_h]``: h matrices ``(d_in, d_k)`` side by side → ``(d_in, h * d_k)``."""
    if len(w_list) == 0:
        raise ValueError("w_list is empty: need at least one head's weight")
    shapes = {tuple(w.shape) for w in w_list}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(f"all head weights must be 2-D with the same shape, got {sorted(shapes)}")
    return torch.cat(list(w_list), dim=-1)


def unfuse(w: Tensor, num_heads: int, *, dim: int = -1) -> list[Tensor]:
    """Inverse of :func:`fuse_head_weights`: cut ``w`` into ``num_heads`` equal blocks along ``dim``.

    ``dim=-1`` recovers ``W_i^Q, W_i^K, W_i^V`` (column blocks); ``dim=0`` on ``W^O`` gives the
    row blocks ``W^O_i`` with ``Concat(head_i) W^O = sum_i head_i W^O_i``.
    """
    if num_heads <= 0 or w.size(dim) % num_heads:
        raise ValueError(f"w.size({dim})={w.size(dim)} is not divisible by num_heads={num_heads}")
    return list(w.chunk(num_heads, dim=dim))


# --8<-- [end:fuse]


@torch.no_grad()
def to_multihead(
    wq_list: Sequence[Tensor], wk_list: Sequence[Tensor], wv_list: Sequence[Tensor], wo: Tensor
) -> MultiHeadAttention:
    """A bias-free :class:`MultiHeadAttention` whose fused ``nn.Linear`` weights are the
    concatenated per-head matrices (transposed, since ``nn.Linear`` computes ``x @ weight.T``)."""
    _check_lists(wq_list, wk_list, wv_list)
    wq, wk, wv = (fuse_head_weights(ws) for ws in (wq_list, wk_list, wv_list))
    d_model, h = wq.size(0), len(wq_list)
    if not wq.size(1) == wk.size(1) == wv.size(1) == wo.size(0) == wo.size(1) == d_model:
        raise ValueError(
            "MultiHeadAttention needs h * d_k = h * d_v = d_out = d_model, got "
            f"W^Q {tuple(wq.shape)}, W^K {tuple(wk.shape)}, W^V {tuple(wv.shape)}, W^O {tuple(wo.shape)}"
        )
    mha = MultiHeadAttention(d_model, h, bias=False, kdim=wk.size(0), vdim=wv.size(0), dtype=wq.dtype, device=wq.device)
    for lin, w in ((mha.q_proj, wq), (mha.k_proj, wk), (mha.v_proj, wv), (mha.out_proj, wo)):
        lin.weight.copy_(w.T)
    return mha


# --8<-- [start:folded]
def heads_to_batch(x: Tensor, num_heads: int) -> Tensor:
    """d2l's ``transpose_qkv``: ``(B, n, h * d) -> (B * h, n, d)`` (heads folded into batch)."""
    s = split_heads(x, num_heads)  # (B, h, n, d)
    return s.reshape(-1, s.size(2), s.size(3))


def batch_to_heads(x: Tensor, num_heads: int) -> Tensor:
    """d2l's ``transpose_output``: ``(B * h, n, d) -> (B, n, h * d)``."""
    bh, n, d = x.shape
    if bh % num_heads:
        raise ValueError(f"leading dim {bh} is not divisible by num_heads={num_heads}")
    return merge_heads(x.reshape(bh // num_heads, num_heads, n, d))


def folded_multihead(
    x: Tensor, wq: Tensor, wk: Tensor, wv: Tensor, wo: Tensor, num_heads: int, *, kv: Tensor | None = None
) -> Tensor:
    """Multi-head attention with fused weights ``(d_in, h * d_k)`` and the ``(B * h, n, d_k)`` layout:
    one GEMM per projection, then ONE batched attention over all ``B * h`` (batch, head) pairs."""
    kv = x if kv is None else kv
    q, k, v = (heads_to_batch(t @ w, num_heads) for t, w in ((x, wq), (kv, wk), (kv, wv)))
    return batch_to_heads(scaled_dot_product_attention(q, k, v), num_heads) @ wo


# --8<-- [end:folded]


# --8<-- [start:counter_demo]
def split_input_heads(x: Tensor, num_heads: int) -> Tensor:
    """Counter-demo: cut the *raw input* into h chunks and attend within each, no projection.

    ``x: (B, n, d_model) -> (B, h, n, d_model / h)``. Head i only ever sees input features
    ``i*d .. (i+1)*d - 1`` — unlike a projected head, which mixes all ``d_model`` features.
    """
    s = split_heads(x, num_heads)  # the same reshape, but of x instead of x @ W^Q
    return scaled_dot_product_attention(s, s, s)


# --8<-- [end:counter_demo]


class _MatmulCounter(TorchFunctionMode):
    """Counts the matrix products (``@``, ``torch.matmul``, ``F.linear``, ...) called inside it."""

    OPS = {"matmul", "linear", "bmm", "mm", "addmm", "baddbmm", "einsum"}

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.count += getattr(func, "__name__", "") in self.OPS
        return func(*args, **(kwargs or {}))


def count_matmuls(fn: Callable[[], object]) -> int:
    """How many matrix products ``fn()`` calls (each one a separate kernel launch)."""
    with _MatmulCounter() as counter:
        fn()
    return counter.count


# --8<-- [start:timing]
@torch.no_grad()
def time_loop_vs_fused(
    num_heads: int,
    d_model: int = 256,
    seq_len: int = 64,
    batch: int = 8,
    *,
    repeats: int = 5,
    device: torch.device | str = "cpu",
) -> tuple[float, float]:
    """Median seconds of one forward pass: ``(per-head loop, fused)`` with the *same* weights.

    The loop runs ``5h + 1`` small matrix products (3 projections and 2 attention products per
    head, then ``W^O``); the fused form runs 3 big projections, 2 batched products over the
    ``(B, h)`` dims and ``W^O`` — 6 kernels whatever ``h`` is. Timing is printed, never asserted.
    """
    if d_model % num_heads:
        raise ValueError(f"d_model={d_model} is not divisible by num_heads={num_heads}")
    g = torch.Generator().manual_seed(0)
    d_k = d_model // num_heads
    x = torch.randn(batch, seq_len, d_model, generator=g).to(device)
    ws = [
        [torch.randn(d_model, d_k, generator=g).to(device) / d_model**0.5 for _ in range(num_heads)] for _ in range(3)
    ]
    wo = torch.randn(d_model, d_model, generator=g).to(device) / d_model**0.5
    fused = [fuse_head_weights(w) for w in ws]
    loop = lambda: per_head_reference(x, *ws, wo)  # noqa: E731
    one = lambda: folded_multihead(x, *fused, wo, num_heads)  # noqa: E731
    torch.testing.assert_close(loop(), one(), rtol=1e-4, atol=1e-5)  # same function

    def median(fn: Callable[[], Tensor]) -> float:
        times = []
        for _ in range(repeats + 1):  # the first call warms up
            start = time.perf_counter()
            fn()
            if torch.device(device).type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        return statistics.median(times[1:])

    return median(loop), median(one)


# --8<-- [end:timing]


def _check_lists(wq_list: Sequence[Tensor], wk_list: Sequence[Tensor], wv_list: Sequence[Tensor]) -> None:
    if not len(wq_list) == len(wk_list) == len(wv_list) > 0:
        raise ValueError(
            "need the same positive number of heads in wq_list, wk_list, wv_list, got "
            f"{len(wq_list)}, {len(wk_list)}, {len(wv_list)}"
        )


if __name__ == "__main__":
    torch.manual_seed(0)
    d, h = 8, 2
    x = torch.randn(1, 4, d, dtype=torch.float64)
    wq, wk, wv = ([torch.randn(d, d // h, dtype=torch.float64) for _ in range(h)] for _ in range(3))
    wo = torch.randn(d, d, dtype=torch.float64)
    loop = per_head_reference(x, wq, wk, wv, wo)
    fused = to_multihead(wq, wk, wv, wo)(x, x, x)[0]
    print("max |per-head loop - fused MHA| =", (loop - fused).abs().max().item())
    xf = x.float()
    for heads in (1, 4, 8):
        ws = [[torch.randn(d, d // heads) for _ in range(heads)] for _ in range(3)]
        wo = torch.randn(d, d)
        mha = to_multihead(*ws, wo)
        n_loop = count_matmuls(lambda: per_head_reference(xf, *ws, wo))  # noqa: B023
        n_fused = count_matmuls(lambda: mha(xf, xf, xf))  # noqa: B023
        print(f"h={heads}: matrix products  per-head loop={n_loop:2d}  fused={n_fused}")
    t_loop, t_fused = time_loop_vs_fused(16, 128, 32, 4)
    print(f"h=16, d_model=128: per-head loop {t_loop * 1e3:.2f} ms, fused {t_fused * 1e3:.2f} ms")
