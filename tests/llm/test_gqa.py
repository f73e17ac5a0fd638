"""Grouped-query attention vs F.scaled_dot_product_attention(enable_gqa=True), MHA and MQA."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from snippets.attention.multihead import MultiHeadAttention
from snippets.llm.gqa import GroupedQueryAttention, grouped_query_attention, kv_projection_params, mha_to_gqa
from snippets.llm.kv_cache import kv_cache_bytes
from tests.conftest import assert_close

F64 = torch.float64
HEADS = [(4, 4), (4, 2), (6, 3), (8, 2), (4, 1)]  # (h, g): MHA, GQA, GQA, GQA, MQA


def _qkv(seed: int, h: int, g: int, device: torch.device):
    gen = torch.Generator().manual_seed(seed)
    b, n_q, n_k, d = (int(x) for x in torch.randint(1, 6, (4,), generator=gen))
    n_k += n_q  # n_k >= n_q + 1 so a causal mask keeps at least one key per row
    q = torch.randn(b, h, n_q, d, generator=gen, dtype=F64)
    k = torch.randn(b, g, n_k, d, generator=gen, dtype=F64)
    v = torch.randn(b, g, n_k, d + 1, generator=gen, dtype=F64)
    return [t.to(device) for t in (q, k, v)], gen


def _fwd_bwd(fn, inputs, grad_seed: int = 0):
    inputs = [t.detach().clone().requires_grad_() for t in inputs]
    out = fn(*inputs)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_seed), dtype=out.dtype)
    out.backward(grad.to(out.device))
    return out, [t.grad for t in inputs]


@pytest.mark.parametrize("h,g", HEADS)
@pytest.mark.parametrize("seed", range(3))
def test_matches_sdpa_enable_gqa(h: int, g: int, seed: int, device: torch.device) -> None:
    qkv, gen = _qkv(seed, h, g, device)
    b, n_q, n_k = qkv[0].size(0), qkv[0].size(2), qkv[1].size(2)
    keep = torch.rand(b, h, n_q, n_k, generator=gen) > 0.3
    keep[..., 0] = True
    bias = torch.randn(n_q, n_k, generator=gen, dtype=F64)
    for kw in [
        {},
        {"is_causal": True},
        {"attn_mask": keep.to(device)},
        {"attn_mask": keep[:, :1, :1].to(device)},
        {"attn_mask": bias.to(device)},
        {"scale": 0.3},
    ]:
        ours, ours_grads = _fwd_bwd(lambda q, k, v, kw=kw: grouped_query_attention(q, k, v, **kw), qkv)
        ref, ref_grads = _fwd_bwd(
            lambda q, k, v, kw=kw: F.scaled_dot_product_attention(q, k, v, enable_gqa=True, **kw), qkv
        )
        assert_close(ours, ref)
        for a, r in zip(ours_grads, ref_grads):
            assert_close(a, r)


@pytest.mark.parametrize("h,g", [(4, 2), (8, 2), (6, 3)])
def test_contiguous_heads_share_kv_repeat_interleave_not_repeat(h: int, g: int, device: torch.device) -> None:
    """Query head i uses KV head i // (h/g): GQA = MHA on ``repeat_interleave``d K/V; tiling
    them with ``repeat`` pairs the heads differently and gives another result."""
    (q, k, v), _ = _qkv(7, h, g, device)
    r = h // g
    ours, ours_grads = _fwd_bwd(lambda q, k, v: grouped_query_attention(q, k, v, is_causal=True), (q, k, v))
    mha, mha_grads = _fwd_bwd(
        lambda q, k, v: F.scaled_dot_product_attention(
            q, k.repeat_interleave(r, dim=1), v.repeat_interleave(r, dim=1), is_causal=True
        ),
        (q, k, v),
    )
    assert_close(ours, mha)
    for a, m in zip(ours_grads, mha_grads):
        assert_close(a, m)
    tiled = F.scaled_dot_product_attention(q, k.repeat(1, r, 1, 1), v.repeat(1, r, 1, 1), is_causal=True)
    assert (tiled - ours).abs().max() > 1e-3
    head_of = torch.arange(h) // r
    for i in range(h):  # brute force, one head at a time
        one = F.scaled_dot_product_attention(q[:, i], k[:, head_of[i]], v[:, head_of[i]], is_causal=True)
        assert_close(ours[:, i], one)


def _reference_module(mod: GroupedQueryAttention, x: torch.Tensor, is_causal: bool) -> torch.Tensor:
    """The same layer from PyTorch built-ins: F.linear + F.scaled_dot_product_attention(enable_gqa)."""
    b, n, _ = x.shape
    h, g, d = mod.num_heads, mod.num_kv_heads, mod.head_dim
    q = F.linear(x, mod.q_proj.weight, mod.q_proj.bias).view(b, n, h, d).transpose(1, 2)
    k = F.linear(x, mod.k_proj.weight, mod.k_proj.bias).view(b, n, g, d).transpose(1, 2)
    v = F.linear(x, mod.v_proj.weight, mod.v_proj.bias).view(b, n, g, d).transpose(1, 2)
    out = F.scaled_dot_product_attention(q, k, v, is_causal=is_causal, enable_gqa=True)
    return F.linear(out.transpose(1, 2).reshape(b, n, h * d), mod.out_proj.weight, mod.out_proj.bias)


def _param_grads(mod: nn.Module) -> dict[str, torch.Tensor]:
    grads = {name: p.grad.clone() for name, p in mod.named_parameters()}
    mod.zero_grad()
    return grads


@pytest.mark.parametrize("h,g", HEADS)
def test_module_matches_builtin_ops(h: int, g: int, device: torch.device) -> None:
    """Forward and gradients (input and every parameter) vs the built-in ops with the same weights."""
    torch.manual_seed(h * 10 + g)
    mod = GroupedQueryAttention(2 * h * 3, h, g, dtype=F64, device=device)
    for is_causal in (False, True):
        x = torch.randn(2, 5, mod.d_model, dtype=F64, device=device)
        ours, (gx_ours,) = _fwd_bwd(lambda x, c=is_causal: mod(x, is_causal=c), [x])
        p_ours = _param_grads(mod)
        ref, (gx_ref,) = _fwd_bwd(lambda x, c=is_causal: _reference_module(mod, x, c), [x])
        p_ref = _param_grads(mod)
        assert_close(ours, ref)
        assert_close(gx_ours, gx_ref)
        for name in p_ours:
            assert_close(p_ours[name], p_ref[name])


def test_equal_heads_is_multi_head_attention(device: torch.device) -> None:
    """num_kv_heads == num_heads: the same function as MultiHeadAttention / nn.MultiheadAttention."""
    torch.manual_seed(0)
    ref = nn.MultiheadAttention(12, 3, batch_first=True, dtype=F64, device=device)
    mha = MultiHeadAttention(12, 3, dtype=F64, device=device).load_from_torch(ref)
    gqa = GroupedQueryAttention(12, 3, 3, dtype=F64, device=device)
    gqa.load_state_dict(mha.state_dict())  # same parameter names: q/k/v/out_proj
    x = torch.randn(2, 6, 12, dtype=F64, device=device)
    causal = torch.ones(6, 6, dtype=torch.bool, device=device).triu(1)  # nn.MHA: True = masked out
    outs = {
        "gqa": _fwd_bwd(lambda x: gqa(x, is_causal=True), [x]),
        "mha": _fwd_bwd(lambda x: mha(x, x, x, is_causal=True)[0], [x]),
        "torch": _fwd_bwd(lambda x: ref(x, x, x, attn_mask=causal, need_weights=False)[0], [x]),
    }
    for name in ("mha", "torch"):
        assert_close(outs["gqa"][0], outs[name][0])
        assert_close(outs["gqa"][1][0], outs[name][1][0])
    for (n1, p1), (n2, p2) in zip(gqa.named_parameters(), mha.named_parameters()):
        assert n1 == n2
        assert_close(p1.grad, p2.grad)


@pytest.mark.parametrize("bias", [True, False])
def test_parameter_and_cache_formulas(bias: bool, device: torch.device) -> None:
    """W^K + W^V hold 2·d_model·g·d_head parameters; the cache shrinks by h/g."""
    d_model, h = 64, 8
    sizes = {}
    for g in (8, 4, 2, 1):
        mod = GroupedQueryAttention(d_model, h, g, bias=bias, device=device)
        n_kv = sum(p.numel() for p in (*mod.k_proj.parameters(), *mod.v_proj.parameters()))
        assert n_kv == kv_projection_params(d_model, h, g, bias)
        assert n_kv == 2 * d_model * g * (d_model // h) + (2 * g * (d_model // h) if bias else 0)
        cache = mod.new_cache(batch_size=3, max_len=10)
        assert cache.k.device.type == device.type
        assert cache.nbytes == kv_cache_bytes(1, 3, g, 10, d_model // h, torch.float32)
        sizes[g] = cache.nbytes
    assert sizes[8] == 4 * sizes[2] == 8 * sizes[1]


@pytest.mark.parametrize("h,g", [(4, 4), (4, 2), (4, 1)])
def test_cached_forward_matches_full_forward(h: int, g: int, device: torch.device) -> None:
    torch.manual_seed(1)
    mod = GroupedQueryAttention(16, h, g, dtype=F64, device=device)
    x = torch.randn(2, 9, 16, dtype=F64, device=device)
    full = mod(x, is_causal=True)
    cache = mod.new_cache(2, 9)
    start = 0
    for n in (4, 1, 3, 1):  # a prefill chunk, then single tokens and another chunk
        assert_close(mod(x[:, start : start + n], cache=cache, is_causal=True), full[:, start : start + n])
        start += n


def test_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="d_model=10 is not divisible by num_heads=4"):
        GroupedQueryAttention(10, 4, 2)
    with pytest.raises(ValueError, match="num_heads=6 is not divisible by num_kv_heads=4"):
        GroupedQueryAttention(12, 6, 4)
    with pytest.raises(ValueError, match="must be positive"):
        GroupedQueryAttention(12, 6, 0)
    q, k = torch.randn(1, 6, 3, 2), torch.randn(1, 4, 3, 2)
    with pytest.raises(ValueError, match=r"num_heads=6 \(query\) is not divisible by num_kv_heads=4"):
        grouped_query_attention(q, k, k)
    with pytest.raises(ValueError, match="query must be 4-D"):
        grouped_query_attention(q[0], k, k)
    with pytest.raises(ValueError, match="differ in"):
        grouped_query_attention(q, k[:, :2], k)
    mod = GroupedQueryAttention(8, 4, 2)
    with pytest.raises(ValueError, match=r"x must be \(B, n, d_model=8\)"):
        mod(torch.randn(2, 3, 7))
    with pytest.raises(ValueError, match="either attn_mask or is_causal"):
        mod(torch.randn(2, 3, 8), attn_mask=torch.ones(3, 3, dtype=torch.bool), is_causal=True)


class _ShapeLog(torch.overrides.TorchFunctionMode):
    """Records the shape of every tensor a torch function returns."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.shapes.append(tuple(t.shape))
        return out


def test_kv_heads_are_never_repeated(device: torch.device) -> None:
    """Our GQA folds a group's query heads into rows against ONE K/V: no (B, h, n_k, d) copy of K or V
    is ever created, unlike the repeat_interleave reference."""
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(2, 8, 3, 4, generator=gen, dtype=F64).to(device)
    k, v = (torch.randn(2, 2, 7, 4, generator=gen, dtype=F64).to(device) for _ in range(2))
    repeated = (2, 8, 7, 4)
    with _ShapeLog() as ours:
        grouped_query_attention(q, k, v)
    with _ShapeLog() as ref:
        F.scaled_dot_product_attention(q, k.repeat_interleave(4, dim=1), v.repeat_interleave(4, dim=1))
    assert repeated not in ours.shapes and ours.shapes  # the log did record our ops
    assert repeated in ref.shapes


def test_mha_to_gqa_mean_pools_contiguous_groups(device: torch.device) -> None:
    """Exact when the KV heads of each group are already equal; otherwise a different layer whose
    K/V heads are the group means (checked head by head)."""
    torch.manual_seed(0)
    mha = GroupedQueryAttention(16, 4, 4, dtype=F64, device=device)
    x = torch.randn(2, 5, 16, dtype=F64, device=device)
    gqa = mha_to_gqa(mha, 2)
    assert gqa.num_kv_heads == 2 and gqa.k_proj.weight.shape == (8, 16)
    wk = mha.k_proj.weight.view(4, 4, 16)  # (heads, d_head, d_model)
    assert_close(gqa.k_proj.weight.view(2, 4, 16)[1], (wk[2] + wk[3]) / 2)  # heads 2, 3 form group 1
    assert_close(gqa.v_proj.bias.view(2, 4)[0], mha.v_proj.bias.view(4, 4)[:2].mean(0))
    assert (gqa(x, is_causal=True) - mha(x, is_causal=True)).abs().max() > 1e-3  # an approximation
    with torch.no_grad():  # make heads (0, 1) and (2, 3) share their K/V: then the conversion is exact
        for proj in (mha.k_proj, mha.v_proj):
            proj.weight.view(2, 2, 4, 16)[:, 1] = proj.weight.view(2, 2, 4, 16)[:, 0]
            proj.bias.view(2, 2, 4)[:, 1] = proj.bias.view(2, 2, 4)[:, 0]
    assert_close(mha_to_gqa(mha, 2)(x, is_causal=True), mha(x, is_causal=True))
    mqa = mha_to_gqa(mha, 1)
    assert_close(mqa.k_proj.weight, mha.k_proj.weight.view(4, 4, 16).mean(0))
    with pytest.raises(ValueError, match="num_kv_heads=4 is not divisible by num_kv_heads=3"):
        mha_to_gqa(mha, 3)
