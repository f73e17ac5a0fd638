"""One fused projection + split == h separate per-head projections (forward and backward)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from snippets.attention.multihead import merge_heads, split_heads
from snippets.attention.multihead_split import (
    batch_to_heads,
    count_matmuls,
    folded_multihead,
    fuse_head_weights,
    heads_to_batch,
    per_head_reference,
    split_input_heads,
    time_loop_vs_fused,
    to_multihead,
    unfuse,
)
from tests.conftest import assert_close

F64 = torch.float64


def _setup(seed: int, device: torch.device, *, cross: bool = False):
    """Random x (and kv), per-head weight lists and W^O, all leaf tensors requiring grad."""
    g = torch.Generator().manual_seed(seed)
    h, d_k, b, n_q, n_k = (int(t) for t in torch.randint(1, 5, (5,), generator=g))
    d = h * d_k
    d_kv = d + 3 if cross else d
    x = torch.randn(b, n_q, d, generator=g, dtype=F64)
    kv = torch.randn(b, n_k, d_kv, generator=g, dtype=F64) if cross else None
    wq = [torch.randn(d, d_k, generator=g, dtype=F64) for _ in range(h)]
    wk = [torch.randn(d_kv, d_k, generator=g, dtype=F64) for _ in range(h)]
    wv = [torch.randn(d_kv, d_k, generator=g, dtype=F64) for _ in range(h)]
    wo = torch.randn(d, d, generator=g, dtype=F64)
    leaves = [t.to(device).requires_grad_() for t in [x, *wq, *wk, *wv, wo]]
    x, wo = leaves[0], leaves[-1]
    wq, wk, wv = leaves[1 : 1 + h], leaves[1 + h : 1 + 2 * h], leaves[1 + 2 * h : 1 + 3 * h]
    kv = kv.to(device).requires_grad_() if cross else None
    return x, kv, wq, wk, wv, wo, g


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("cross", [False, True])
def test_matches_multiheadattention(seed: int, cross: bool, device: torch.device) -> None:
    """The per-head loop == nn.MultiheadAttention whose in_proj_weight is the fused matrices."""
    x, kv, wq, wk, wv, wo, _ = _setup(seed, device, cross=cross)
    h, d = len(wq), x.size(-1)
    src = x if kv is None else kv
    ref = nn.MultiheadAttention(
        d, h, bias=False, kdim=src.size(-1), vdim=src.size(-1), batch_first=True, dtype=F64, device=device
    )
    with torch.no_grad():
        fused = [fuse_head_weights([w.detach() for w in ws]).T for ws in (wq, wk, wv)]
        if ref.in_proj_weight is not None:
            ref.in_proj_weight.copy_(torch.cat(fused))
        else:
            ref.q_proj_weight.copy_(fused[0])
            ref.k_proj_weight.copy_(fused[1])
            ref.v_proj_weight.copy_(fused[2])
        ref.out_proj.weight.copy_(wo.detach().T)
    x_ref = x.detach().clone().requires_grad_()
    src_ref = x_ref if kv is None else kv.detach().clone().requires_grad_()
    out = per_head_reference(x, wq, wk, wv, wo, kv=kv)
    out_ref, _ = ref(x_ref, src_ref, src_ref, need_weights=False)
    assert_close(out, out_ref)
    grad = torch.randn_like(out)
    out.backward(grad)
    out_ref.backward(grad)
    assert_close(x.grad, x_ref.grad)
    if kv is not None:
        assert_close(kv.grad, src_ref.grad)
    ref_w = (
        ref.in_proj_weight.grad.chunk(3)
        if ref.in_proj_weight is not None
        else (ref.q_proj_weight.grad, ref.k_proj_weight.grad, ref.v_proj_weight.grad)
    )
    for ws, g_ref in zip((wq, wk, wv), ref_w):  # grad of each W_i = a column block of the fused grad
        for w, g_i in zip(ws, unfuse(g_ref.T, h)):
            assert_close(w.grad, g_i)
    assert_close(wo.grad, ref.out_proj.weight.grad.T)


@pytest.mark.parametrize("seed", range(4))
def test_fused_snippet_module_equals_per_head_loop(seed: int, device: torch.device) -> None:
    """Our MultiHeadAttention (9.09) built from the concatenated weights, with a causal mask."""
    x, _, wq, wk, wv, wo, _ = _setup(seed, device)
    n = x.size(1)
    keep = torch.ones(n, n, dtype=torch.bool, device=device).tril()
    mha = to_multihead(*([w.detach() for w in ws] for ws in (wq, wk, wv)), wo.detach())
    x2 = x.detach().clone().requires_grad_()
    out = per_head_reference(x, wq, wk, wv, wo, attn_mask=keep)
    out2, _ = mha(x2, x2, x2, is_causal=True)
    assert_close(out, out2)
    grad = torch.randn_like(out)
    out.backward(grad)
    out2.backward(grad)
    assert_close(x.grad, x2.grad)
    h = len(wq)
    for ws, lin in zip((wq, wk, wv), (mha.q_proj, mha.k_proj, mha.v_proj)):
        for w, g_i in zip(ws, unfuse(lin.weight.grad.T, h)):
            assert_close(w.grad, g_i)
    assert_close(wo.grad, mha.out_proj.weight.grad.T)


@pytest.mark.parametrize("seed", range(4))
def test_block_column_and_block_row_identities(seed: int, device: torch.device) -> None:
    x, _, wq, _, _, wo, g = _setup(seed, device)
    h = len(wq)
    with torch.no_grad():
        fused = fuse_head_weights(wq)
        parts = split_heads(x @ fused, h)  # (B, h, n, d_k)
        for i, w in enumerate(wq):  # splitting X [W_1|...|W_h] gives exactly X W_i
            assert_close(parts[:, i], x @ w)
        heads = torch.randn(h, *x.shape[:2], x.size(-1) // h, generator=g, dtype=F64).to(device)
        concat = torch.cat(list(heads), dim=-1)
        blocks = unfuse(wo, h, dim=0)  # row blocks W^O_i
        assert_close(concat @ wo, sum(hd @ b for hd, b in zip(heads, blocks)))
        assert all(torch.equal(a, b) for a, b in zip(unfuse(fused, h), wq))  # unfuse o fuse = id


def test_merge_split_roundtrip(device: torch.device) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 12, generator=g, dtype=F64).to(device)
    for h in (1, 2, 3, 4, 6, 12):
        assert torch.equal(merge_heads(split_heads(x, h)), x)
        y = torch.randn(3, h, 5, 12 // h, generator=g, dtype=F64).to(device)
        assert torch.equal(split_heads(merge_heads(y), h), y)


def test_heads_as_batch_layout(device: torch.device) -> None:
    """d2l's (B*h, n, d_k) layout: row b*h + i holds head i of sequence b."""
    x = torch.randn(2, 5, 12, dtype=F64, device=device)
    f = heads_to_batch(x, 3)
    assert f.shape == (6, 5, 4)
    for b in range(2):
        for i in range(3):
            assert torch.equal(f[b * 3 + i], x[b, :, 4 * i : 4 * (i + 1)])
    assert torch.equal(batch_to_heads(f, 3), x)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("cross", [False, True])
def test_folded_layout_equals_per_head_loop(seed: int, cross: bool, device: torch.device) -> None:
    x, kv, wq, wk, wv, wo, _ = _setup(seed, device, cross=cross)
    out = per_head_reference(x, wq, wk, wv, wo, kv=kv)
    folded = folded_multihead(
        x, fuse_head_weights(wq), fuse_head_weights(wk), fuse_head_weights(wv), wo, len(wq), kv=kv
    )
    assert_close(folded, out)
    grad = torch.randn_like(out)
    loop_grads = torch.autograd.grad(out, [x, *wq, wo], grad)
    fold_grads = torch.autograd.grad(folded, [x, *wq, wo], grad)
    for a, b in zip(fold_grads, loop_grads):
        assert_close(a, b)


def test_splitting_the_raw_input_is_not_equivalent(device: torch.device) -> None:
    """Raw split: head 0 never sees features outside its chunk; a projected head 0 sees all of them."""
    g = torch.Generator().manual_seed(0)
    b, n, d, h = 2, 5, 8, 2
    x = torch.randn(b, n, d, generator=g, dtype=F64).to(device)
    x2 = x.clone()
    x2[..., d // h :] += torch.randn(b, n, d - d // h, generator=g, dtype=F64).to(device)  # other chunk only
    raw, raw2 = split_input_heads(x, h), split_input_heads(x2, h)
    assert torch.equal(raw[:, 0], raw2[:, 0])  # head 0 is blind to the change
    wq, wk, wv = ([torch.randn(d, d // h, generator=g, dtype=F64) for _ in range(h)] for _ in range(3))
    wq, wk, wv = ([w.to(device) for w in ws] for ws in (wq, wk, wv))
    eye = torch.eye(d, dtype=F64, device=device)
    proj = to_multihead(wq, wk, wv, eye)
    with torch.no_grad():
        p, p2 = (split_heads(proj(t, t, t)[0], h) for t in (x, x2))  # per-head outputs (W^O = I)
    assert (p[:, 0] - p2[:, 0]).abs().max() > 1e-3  # projected head 0 mixes all d_model features
    # The raw split is the special case W_i^Q = W_i^K = W_i^V = fixed 0/1 selector of chunk i.
    selectors = unfuse(eye, h)
    assert_close(merge_heads(raw), per_head_reference(x, selectors, selectors, selectors, eye))


def test_fused_is_a_constant_number_of_matrix_products() -> None:
    """Why the fused form parallelises: 6 products (4 projections + 2 batched attention
    products) whatever h is, instead of 5h + 1 small ones for the per-head loop."""
    torch.manual_seed(0)
    d = 16
    x = torch.randn(2, 5, d)
    for h in (1, 2, 4, 8, 16):
        ws = [[torch.randn(d, d // h) for _ in range(h)] for _ in range(3)]
        wo = torch.randn(d, d)
        mha = to_multihead(*ws, wo)
        assert count_matmuls(lambda: per_head_reference(x, *ws, wo)) == 5 * h + 1  # noqa: B023
        assert count_matmuls(lambda: mha(x, x, x)) == 6  # noqa: B023
        assert count_matmuls(lambda: folded_multihead(x, *(fuse_head_weights(w) for w in ws), wo, h)) == 6  # noqa: B023


def test_timing_demo_runs_the_same_function(device: torch.device) -> None:
    """The timing demo checks both forms agree before timing them; the times are printed on the
    page, not asserted (they depend on the machine)."""
    t_loop, t_fused = time_loop_vs_fused(4, 32, 8, 2, repeats=2, device=device)
    assert t_loop > 0 and t_fused > 0
    with pytest.raises(ValueError, match="d_model=30 is not divisible by num_heads=4"):
        time_loop_vs_fused(4, 30)


def test_rejects_bad_input() -> None:
    w = torch.randn(4, 2)
    with pytest.raises(ValueError, match="w_list is empty"):
        fuse_head_weights([])
    with pytest.raises(ValueError, match="same shape"):
        fuse_head_weights([w, torch.randn(4, 3)])
    with pytest.raises(ValueError, match="2-D"):
        fuse_head_weights([torch.randn(4)])
    with pytest.raises(ValueError, match=r"w.size\(-1\)=6 is not divisible by num_heads=4"):
        unfuse(torch.randn(4, 6), 4)
    with pytest.raises(ValueError, match="not divisible by num_heads=0"):
        unfuse(torch.randn(4, 6), 0)
    with pytest.raises(ValueError, match="same positive number of heads .* got 2, 1, 2"):
        per_head_reference(torch.randn(1, 3, 4), [w, w], [w], [w, w], torch.randn(4, 4))
    with pytest.raises(ValueError, match="same positive number of heads"):
        per_head_reference(torch.randn(1, 3, 4), [], [], [], torch.randn(4, 4))
    with pytest.raises(ValueError, match="wo has 3 rows but the concatenated heads have width 4"):
        per_head_reference(torch.randn(1, 3, 4), [w, w], [w, w], [w, w], torch.randn(3, 4))
    with pytest.raises(ValueError, match="h \\* d_k = h \\* d_v = d_out = d_model"):
        to_multihead([w], [w], [w], torch.randn(2, 2))
    with pytest.raises(ValueError, match="leading dim 5 is not divisible by num_heads=2"):
        batch_to_heads(torch.randn(5, 3, 2), 2)
    with pytest.raises(ValueError, match="not divisible by num_heads=3"):
        heads_to_batch(torch.randn(1, 3, 4), 3)
