"""AdditiveAttention vs a brute-force loop; DotProductAttention vs F.scaled_dot_product_attention."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from snippets.attention.scoring import AdditiveAttention, DotProductAttention, valid_lens_mask
from tests.conftest import assert_close

F64 = torch.float64


def _inputs(seed: int, device: torch.device, d_q: int | None = None, d_k: int | None = None):
    """Random queries (B, n_q, d_q), keys (B, n_k, d_k), values (B, n_k, d_v), valid_lens (B,)."""
    g = torch.Generator().manual_seed(seed)
    b, n_q, n_k, d, d_v = (int(x) for x in torch.randint(1, 6, (5,), generator=g))
    n_k += 1
    q = torch.randn(b, n_q, d_q or d, generator=g, dtype=F64)
    k = torch.randn(b, n_k, d_k or d, generator=g, dtype=F64)
    v = torch.randn(b, n_k, d_v, generator=g, dtype=F64)
    valid_lens = torch.randint(1, n_k + 1, (b,), generator=g)
    valid_2d = torch.randint(1, n_k + 1, (b, n_q), generator=g)
    keep = torch.rand(b, n_q, n_k, generator=g) > 0.3
    keep[..., 0] = True
    return [t.to(device) for t in (q, k, v, valid_lens, valid_2d, keep)]


def _run_both(ours_fn, ref_fn, tensors):
    """Forward both on separate leaf copies, backprop the same random gradient, compare."""
    a = [t.detach().clone().requires_grad_() for t in tensors]
    b = [t.detach().clone().requires_grad_() for t in tensors]
    out_a, out_b = ours_fn(*a), ref_fn(*b)
    assert_close(out_a, out_b)
    grad = torch.randn_like(out_a)
    out_a.backward(grad)
    out_b.backward(grad)
    for x, y in zip(a, b):
        assert_close(x.grad, y.grad)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("masking", ["none", "valid_lens", "valid_lens_2d", "mask", "both"])
def test_matches_scaled_dot_product_attention(seed: int, masking: str, device: torch.device) -> None:
    q, k, v, vl, vl2, keep = _inputs(seed, device)
    n_k = k.size(1)
    kwargs, attn_mask = {}, None
    if masking == "valid_lens":
        kwargs = {"valid_lens": vl}
        attn_mask = (torch.arange(n_k, device=device) < vl[:, None])[:, None, :]
    elif masking == "valid_lens_2d":
        kwargs = {"valid_lens": vl2}
        attn_mask = torch.arange(n_k, device=device) < vl2[..., None]
    elif masking == "mask":
        kwargs, attn_mask = {"mask": keep}, keep
    elif masking == "both":
        kwargs = {"valid_lens": vl, "mask": keep}
        attn_mask = keep & (torch.arange(n_k, device=device) < vl[:, None])[:, None, :]
    attn = DotProductAttention()  # train mode, dropout 0
    _run_both(
        lambda q, k, v: attn(q, k, v, **kwargs),
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask),
        (q, k, v),
    )
    w = attn.attention_weights
    assert_close(w.sum(-1), torch.ones_like(w.sum(-1)))
    if attn_mask is not None:
        assert bool((w.masked_select(~attn_mask.expand_as(w)) == 0).all())


def _additive_loop(q, k, v, wq, wk, wv, valid_lens):
    """score(b, i, j) = w_v . tanh(W_q q_bi + W_k k_bj), softmax over j < valid_len, sum_j a_j v_bj."""
    out = []
    for b in range(q.size(0)):
        rows = []
        for i in range(q.size(1)):
            n = int(valid_lens[b]) if valid_lens is not None else k.size(1)
            e = torch.stack([wv @ torch.tanh(wq @ q[b, i] + wk @ k[b, j]) for j in range(n)]).reshape(n)
            a = torch.exp(e - e.max()) / torch.exp(e - e.max()).sum()
            rows.append(sum(a[j] * v[b, j] for j in range(n)))
        out.append(torch.stack(rows))
    return torch.stack(out)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("use_lens", [False, True])
def test_additive_matches_brute_force_loop(seed: int, use_lens: bool, device: torch.device) -> None:
    """Different query and key sizes (5 vs 3); gradients w.r.t. inputs AND the three weight matrices."""
    q, k, v, vl, _, _ = _inputs(seed, device, d_q=5, d_k=3)
    torch.manual_seed(seed)
    attn = AdditiveAttention(key_size=3, query_size=5, num_hiddens=4, dtype=F64).to(device)
    params = [attn.W_q.weight, attn.W_k.weight, attn.w_v.weight]
    lens = vl if use_lens else None
    copies = [p.detach().clone().requires_grad_() for p in params]  # weights copied to the reference
    ins = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    ref_ins = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    ours = attn(*ins, valid_lens=lens)
    ref = _additive_loop(*ref_ins, *copies, lens)
    assert_close(ours, ref)
    grad = torch.randn_like(ours)
    ours.backward(grad)
    ref.backward(grad)
    for a, b in zip(ins + params, ref_ins + copies):
        assert_close(a.grad, b.grad)
    if use_lens:
        w = attn.attention_weights
        dead = torch.arange(k.size(1), device=device) >= vl[:, None, None]
        assert bool((w.masked_select(dead.expand_as(w)) == 0).all())


def test_additive_accepts_different_sizes_dot_product_refuses(device: torch.device) -> None:
    q, k, v, _, _, _ = _inputs(0, device, d_q=7, d_k=2)
    out = AdditiveAttention(2, 7, 6, dtype=F64).to(device)(q, k, v)
    assert out.shape == (q.size(0), q.size(1), v.size(-1))
    with pytest.raises(ValueError, match="d_k mismatch: query has d_k=7 but key has d_k=2"):
        DotProductAttention()(q, k, v)


def test_identical_keys_give_uniform_weights_over_valid_keys(device: torch.device) -> None:
    """d2l's demo: with all keys equal every score is equal, so the weights are 1/valid_len."""
    q = torch.randn(2, 1, 20, dtype=F64, device=device)
    k = torch.ones(2, 10, 2, dtype=F64, device=device)
    v = torch.arange(40, dtype=F64, device=device).reshape(1, 10, 4).repeat(2, 1, 1)
    attn = AdditiveAttention(2, 20, 8, dtype=F64).to(device)
    out = attn(q, k, v, torch.tensor([2, 6], device=device))
    assert_close(attn.attention_weights[0, 0, :2], torch.full((2,), 0.5, dtype=F64, device=device))
    assert_close(attn.attention_weights[1, 0, :6], torch.full((6,), 1 / 6, dtype=F64, device=device))
    assert_close(out[:, 0], torch.stack([v[0, :2].mean(0), v[1, :6].mean(0)]))


def test_zero_valid_len_raises_where_d2l_returns_uniform_weights(device: torch.device) -> None:
    """d2l masks with -1e6, so valid_len = 0 silently averages the padding (uniform weights);
    ours refuses because softmax over no keys is undefined."""
    q, k, v, _, _, _ = _inputs(1, device)
    zero = torch.zeros(q.size(0), dtype=torch.long, device=device)
    with pytest.raises(ValueError, match="every key masked"):
        DotProductAttention()(q, k, v, zero)


def test_dropout_acts_on_the_weights_only_in_training(device: torch.device) -> None:
    q, k, v, _, _, _ = _inputs(2, device)
    attn = DotProductAttention(dropout=0.5)
    clean = DotProductAttention()(q, k, v)
    assert_close(attn.eval()(q, k, v), clean)
    torch.manual_seed(0)
    noisy = attn.train()(q, k, v, mask=torch.ones(1, 1, k.size(1), dtype=torch.bool, device=device))
    assert not torch.allclose(noisy, clean)


def test_valid_lens_mask_shapes(device: torch.device) -> None:
    vl = torch.tensor([1, 3], device=device)
    expected = [[[True, False, False, False]], [[True, True, True, False]]]
    assert valid_lens_mask(vl, None, 2, 4).tolist() == expected
    vl2 = torch.tensor([[1, 2], [4, 3]], device=device)
    assert valid_lens_mask(vl2, None, 2, 4).sum(-1).tolist() == [[1, 2], [4, 3]]
    assert valid_lens_mask(None, None, 2, 4) is None


OK = ((2, 3, 6), (2, 4, 4), (2, 4, 6))  # fits AdditiveAttention(key_size=4, query_size=6, ...)


@pytest.mark.parametrize(
    ("shapes", "kwargs", "match"),
    [
        (((2, 3, 5), (2, 4, 4), (2, 4, 6)), {}, "queries have size 5, expected query_size=6"),
        (((2, 3, 6), (2, 4, 5), (2, 4, 6)), {}, "keys have size 5, expected key_size=4"),
        (((2, 3, 6), (2, 4, 4), (2, 5, 6)), {}, "keys and values must pair up: n_k=4 keys but 5 values"),
        (((2, 3, 6), (3, 4, 4), (3, 4, 6)), {}, "batch sizes differ: queries 2, keys 3"),
        (((3, 6), (4, 4), (4, 6)), {}, r"queries must be \(B, n, d\)"),
        (OK, {"valid_lens": torch.tensor([1, 5])}, r"valid_lens must lie in \[0, n_k=4\]"),
        (OK, {"valid_lens": torch.ones(2, 2, dtype=torch.long)}, r"\(B,\) or \(B, n_q=3\)"),
        (OK, {"valid_lens": torch.tensor([1.0, 2.0])}, "integer tensor"),
        (OK, {"mask": torch.ones(2, 3, 4)}, "mask must be boolean"),
        (OK, {"mask": torch.ones(3, 3, dtype=torch.bool)}, "not broadcastable"),
    ],
)
def test_additive_rejects_bad_input(shapes, kwargs, match) -> None:
    q, k, v = (torch.randn(s) for s in shapes)
    with pytest.raises(ValueError, match=match):
        AdditiveAttention(key_size=4, query_size=6, num_hiddens=3)(q, k, v, **kwargs)


def test_rejects_bad_constructor_arguments() -> None:
    with pytest.raises(ValueError, match="num_hiddens must be positive, got num_hiddens=0"):
        AdditiveAttention(2, 3, 0)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got 1.0"):
        AdditiveAttention(2, 3, 4, dropout=1.0)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got -0.1"):
        DotProductAttention(-0.1)


def test_sequence_lengths_may_differ_only_feature_sizes_matter(device: torch.device) -> None:
    """004 L364 "不同长度的矢量" means vectors of different *sizes* (d_q != d_k); the numbers of
    queries and keys (n_q, n_k) may differ for both scoring functions."""
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 3, 4, generator=g, dtype=F64).to(device)  # n_q = 3
    k = torch.randn(2, 9, 4, generator=g, dtype=F64).to(device)  # n_k = 9, same d = 4
    v = torch.randn(2, 9, 5, generator=g, dtype=F64).to(device)
    assert DotProductAttention()(q, k, v).shape == (2, 3, 5)
    assert AdditiveAttention(4, 4, 6, dtype=F64).to(device)(q, k, v).shape == (2, 3, 5)
    with pytest.raises(ValueError, match="d_k mismatch"):
        DotProductAttention()(q, k[..., :3], v)
    assert AdditiveAttention(3, 4, 6, dtype=F64).to(device)(q, k[..., :3], v).shape == (2, 3, 5)


def test_parameters_and_intermediate_sizes(device: torch.device) -> None:
    """Why the dot product is cheaper: no parameters and a (B, n_q, n_k) score tensor, while the
    additive score builds a (B, n_q, n_k, h) tensor of tanh features and has h (d_q + d_k + 1) weights."""
    b, n_q, n_k, d_q, d_k, h = 2, 3, 7, 5, 4, 6
    additive = AdditiveAttention(d_k, d_q, h, dtype=F64).to(device)
    assert sum(p.numel() for p in additive.parameters()) == h * (d_q + d_k + 1)
    assert sum(p.numel() for p in DotProductAttention().parameters()) == 0
    seen = []
    additive.w_v.register_forward_hook(lambda mod, inp, out: seen.append(tuple(inp[0].shape)))
    q = torch.randn(b, n_q, d_q, dtype=F64, device=device)
    k = torch.randn(b, n_k, d_k, dtype=F64, device=device)
    additive(q, k, torch.randn(b, n_k, 2, dtype=F64, device=device))
    assert seen == [(b, n_q, n_k, h)]
