"""attention_pool vs a loop over queries and vs F.scaled_dot_product_attention; the two extremes."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F

from snippets.attention.masking import causal_mask
from snippets.attention.pooling import (
    attention_pool,
    attention_pool_loop,
    dot_score,
    gaussian_score,
    one_hot_attention,
    uniform_pooling,
)
from tests.conftest import assert_close

F64 = torch.float64


def _qkv(seed: int, device: torch.device, batch: tuple[int, ...] = (2, 3), same_d: bool = True):
    """Random query (..., n_q, d), keys (..., n_k, d or d+1), values (..., n_k, d_v)."""
    g = torch.Generator().manual_seed(seed)
    n_q, n_k, d, d_v = (int(x) for x in torch.randint(1, 6, (4,), generator=g))
    n_k += 1
    q = torch.randn(*batch, n_q, d, generator=g, dtype=F64)
    k = torch.randn(*batch, n_k, d if same_d else d + 1, generator=g, dtype=F64)
    v = torch.randn(*batch, n_k, d_v, generator=g, dtype=F64)
    return [t.to(device) for t in (q, k, v)]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("where", ["self", "causal self", "cross"])
def test_matches_scaled_dot_product_attention(seed: int, where: str, device: torch.device) -> None:
    """With the scaled dot score, attention_pool *is* SDPA — in each place a Transformer uses it."""
    q, k, v = _qkv(seed, device)
    mask = None
    if where != "cross":  # self-attention: queries, keys and values are the same sequence
        k = v = q
    if where == "causal self":
        mask = causal_mask(q.size(-2), device=device)
    ours_in = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    ref_in = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    ours, w = attention_pool(*ours_in, dot_score, mask)
    ref = F.scaled_dot_product_attention(*ref_in, attn_mask=mask)
    assert_close(ours, ref)
    grad = torch.randn_like(ours)
    ours.backward(grad)
    ref.backward(grad)
    for a, b in zip(ours_in, ref_in):
        assert_close(a.grad, b.grad)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("score_name", ["dot", "gaussian"])
def test_batched_matches_loop_over_queries(seed: int, score_name: str, device: torch.device) -> None:
    score_fn = {"dot": dot_score, "gaussian": functools.partial(gaussian_score, w=0.7)}[score_name]
    q, k, v = _qkv(seed, device, batch=())
    qa, ka, va = (t.clone().requires_grad_() for t in (q, k, v))
    qb, kb, vb = (t.clone().requires_grad_() for t in (q, k, v))
    batched, _ = attention_pool(qa, ka, va, score_fn)
    looped = attention_pool_loop(qb, kb, vb, score_fn)
    assert_close(batched, looped)
    grad = torch.randn_like(batched)
    batched.backward(grad)
    looped.backward(grad)
    for a, b in ((qa, qb), (ka, kb), (va, vb)):
        assert_close(a.grad, b.grad)


def test_keys_are_rows_and_score_is_a_similarity(device: torch.device) -> None:
    """e_l is scored against *row* l of K, and a larger dot product gives a larger weight;
    feeding a distance as the score (002 L446) would favour the *farthest* key instead."""
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], dtype=F64, device=device)
    values = torch.eye(3, dtype=F64, device=device)
    query = torch.tensor([[3.0, 0.5]], dtype=F64, device=device)  # close to row 0, far from row 2
    _, w = attention_pool(query, keys, values, functools.partial(dot_score, scale=1.0))
    assert_close(w[0].log() - w[0].log()[0], (query @ keys.T)[0] - (query @ keys.T)[0, 0])
    assert w[0].argmax() == 0 and w[0].argmin() == 2
    _, w_near = attention_pool(query, keys, values, gaussian_score)  # -distance^2: similarity
    assert w_near[0].argmax() == 0
    _, w_far = attention_pool(query, keys, values, lambda q, k: -gaussian_score(q, k))  # +distance^2
    assert w_far[0].argmax() == 2


@pytest.mark.parametrize("seed", range(3))
def test_rows_sum_to_one_and_are_non_negative(seed: int, device: torch.device) -> None:
    q, k, v = _qkv(seed, device)
    keep = torch.rand(q.size(-2), k.size(-2), generator=torch.Generator().manual_seed(seed)) > 0.4
    keep[:, 0] = True
    for mask in (None, keep.to(device)):
        out, w = attention_pool(q, k, v, dot_score, mask)
        assert_close(w.sum(-1), torch.ones_like(w.sum(-1)))
        assert bool((w >= 0).all())
        if mask is not None:
            assert bool((w[..., ~mask.bool()] == 0).all())
        # each output lies inside the box spanned by the values (a convex combination)
        assert bool((out <= v.amax(-2, keepdim=True) + 1e-12).all())
        assert bool((out >= v.amin(-2, keepdim=True) - 1e-12).all())


@pytest.mark.parametrize("seed", range(3))
def test_each_value_column_pooled_with_the_same_weights(seed: int, device: torch.device) -> None:
    """003 L342–345: d_v-dimensional values = d_v one-dimensional poolings sharing one weight row."""
    q, k, v = _qkv(seed, device)
    out, w = attention_pool(q, k, v, dot_score)
    for j in range(v.size(-1)):  # one column at a time
        col, w_j = attention_pool(q, k, v[..., j : j + 1], dot_score)
        assert_close(w_j, w)
        assert_close(col[..., 0], out[..., j])


def test_uniform_pooling_is_a_constant_score(device: torch.device) -> None:
    q, k, v = _qkv(0, device)
    out, w = attention_pool(q, k, v, lambda q, k: 0.0 * dot_score(q, k))  # every score equal
    assert_close(w, torch.full_like(w, 1.0 / k.size(-2)))
    assert_close(out, uniform_pooling(v, q.size(-2)))
    assert_close(uniform_pooling(v, 1)[..., 0, :], v.mean(-2))


def test_one_hot_attention_selects_values_exactly(device: torch.device) -> None:
    g = torch.Generator().manual_seed(0)
    v = torch.randn(2, 3, 7, 5, generator=g, dtype=F64).to(device)
    index = torch.randint(0, 7, (2, 3, 4), generator=g).to(device)
    out, w = one_hot_attention(index, v)
    assert torch.equal(out, torch.gather(v, -2, index[..., None].expand(-1, -1, -1, 5)))  # bit-exact
    assert torch.equal(w.sum(-1), torch.ones_like(w.sum(-1)))
    assert torch.equal(w.argmax(-1), index)


def test_hard_lookup_is_the_limit_of_sharpened_soft_attention(device: torch.device) -> None:
    """Scaling the scores by beta -> infinity turns softmax attention into the one-hot lookup."""
    q, k, v = _qkv(5, device, batch=(4,))
    hard, _ = one_hot_attention((q @ k.transpose(-2, -1)).argmax(-1), v)
    errors = [
        (attention_pool(q, k, v, functools.partial(dot_score, scale=beta))[0] - hard).abs().max().item()
        for beta in (1.0, 10.0, 100.0, 1e4)
    ]
    assert errors[0] > 1e-2  # soft attention is a genuine mixture ...
    assert all(a > b for a, b in zip(errors, errors[1:]))  # ... that sharpens monotonically ...
    assert errors[-1] < 1e-12  # ... into the exact dictionary lookup


@pytest.mark.parametrize(
    ("shapes", "match"),
    [
        (((3, 4), (5, 4), (6, 2)), "keys and values must pair up: keys have n_k=5, values have 6"),
        (((2, 3, 4), (3, 5, 4), (3, 5, 2)), r"batch dims differ: query \(2,\)"),
        (((4,), (5, 4), (5, 2)), r"query must be \(\.\.\., n, d\)"),
        (((3, 4), (0, 4), (0, 2)), "n_k=0"),
    ],
)
def test_rejects_bad_shapes(shapes, match) -> None:
    q, k, v = (torch.randn(s) for s in shapes)
    with pytest.raises(ValueError, match=match):
        attention_pool(q, k, v, dot_score)


def test_rejects_bad_score_fn_and_arguments() -> None:
    q, k, v = torch.randn(3, 4), torch.randn(5, 4), torch.randn(5, 2)
    with pytest.raises(ValueError, match=r"score_fn must return shape \(3, 5\)"):
        attention_pool(q, k, v, lambda q, k: k @ q.T)
    with pytest.raises(ValueError, match="unbatched 2-D"):
        attention_pool_loop(q[None], k[None], v[None], dot_score)
    with pytest.raises(ValueError, match="n_q must be positive, got n_q=0"):
        uniform_pooling(v, 0)
    with pytest.raises(ValueError, match=r"index must lie in \[0, n_k=5\)"):
        one_hot_attention(torch.tensor([5]), v)
    with pytest.raises(ValueError, match="index must be an integer tensor"):
        one_hot_attention(torch.tensor([0.0]), v)
    with pytest.raises(ValueError, match="every key masked"):
        attention_pool(q, k, v, dot_score, torch.zeros(3, 5, dtype=torch.bool))


@pytest.mark.parametrize("seed", range(3))
def test_uniform_pooling_matches_adaptive_avg_pool1d(seed: int, device: torch.device) -> None:
    """No cue = PyTorch's average pooling over the keys, forward and backward."""
    _, _, v = _qkv(seed, device)
    ours_v, ref_v = v.clone().requires_grad_(), v.clone().requires_grad_()
    ours = uniform_pooling(ours_v, 1)  # (..., 1, d_v)
    ref = F.adaptive_avg_pool1d(ref_v.flatten(0, -3).transpose(-1, -2), 1).transpose(-1, -2).reshape(ours.shape)
    assert_close(ours, ref)
    grad = torch.randn_like(ours)
    ours.backward(grad)
    ref.backward(grad)
    assert_close(ours_v.grad, ref_v.grad)


@pytest.mark.parametrize("seed", range(3))
def test_one_hot_attention_matches_embedding_lookup(seed: int, device: torch.device) -> None:
    """A hard dictionary lookup is F.embedding: one-hot weights @ values = row selection (fwd + bwd)."""
    g = torch.Generator().manual_seed(seed)
    n_k, d_v = int(torch.randint(2, 9, (1,), generator=g)), int(torch.randint(1, 5, (1,), generator=g))
    table = torch.randn(n_k, d_v, generator=g, dtype=F64).to(device)
    index = torch.randint(0, n_k, (3, 4), generator=g).to(device)  # repeated keys are allowed
    ours_t, ref_t = table.clone().requires_grad_(), table.clone().requires_grad_()
    ours, _ = one_hot_attention(index, ours_t)
    ref = F.embedding(index, ref_t)
    assert torch.equal(ours, ref)
    grad = torch.randn_like(ours)
    ours.backward(grad)
    ref.backward(grad)
    assert_close(ours_t.grad, ref_t.grad)


def test_attention_weights_follow_the_query_pooling_weights_do_not(device: torch.device) -> None:
    """004 L352–353 (one claim, written twice): the volitional cue (the query) is what separates
    attention from a pooling or fully connected layer, whose weights are fixed for every input."""
    q, k, v = _qkv(3, device, batch=())
    q2 = torch.randn_like(q)
    _, w1 = attention_pool(q, k, v, dot_score)
    _, w2 = attention_pool(q2, k, v, dot_score)
    assert not torch.allclose(w1, w2)  # another query, other weights over the same keys
    n_k = k.size(-2)
    pool = torch.nn.AvgPool1d(kernel_size=n_k)  # weights 1/n_k, whatever the input
    fc = torch.nn.Linear(n_k, 1, bias=False, dtype=F64, device=device)  # learned weights, then fixed
    for values in (v, torch.randn_like(v)):
        assert_close(pool(values.T).T, torch.full((1, n_k), 1.0 / n_k, dtype=F64, device=device) @ values)
        assert_close(fc(values.T).T, fc.weight @ values)  # the same mixing row for every input
    assert_close(pool(v.T).T, uniform_pooling(v, 1))


def test_shape_walk_through_of_the_notes(device: torch.device) -> None:
    """002 L440–452: k = v of shape (10, 1); one query (1, 1) gives weights (1, 10) and output (1, 1);
    self-attention (q = k = v) gives a (10, 10) weight matrix whose row i belongs to q[i]."""
    g = torch.Generator().manual_seed(0)
    k = v = torch.randn(10, 1, generator=g, dtype=F64).to(device)
    q = torch.randn(1, 1, generator=g, dtype=F64).to(device)
    out, w = attention_pool(q, k, v, gaussian_score)
    assert w.shape == (1, 10) and out.shape == (1, 1)
    assert_close(out, w @ v)
    out_self, w_self = attention_pool(k, k, v, gaussian_score)
    assert w_self.shape == (10, 10) and out_self.shape == (10, 1)
    for i in range(10):
        assert_close(w_self[i], attention_pool(k[i : i + 1], k, v, gaussian_score)[1][0])
    assert torch.equal(w_self.argmax(-1), torch.arange(10, device=device))  # most similar to itself


def test_keys_as_columns_is_the_same_computation_transposed(device: torch.device) -> None:
    """001 L72 stores keys as the *columns* of K; code stores them as rows. Same scores, other layout."""
    q, k, _ = _qkv(1, device, batch=())
    k_cols = k.T.contiguous()  # (d, n_k): column l is key l
    e_cols = q @ k_cols  # e_l = q · (column l)
    assert_close(e_cols, dot_score(q, k, scale=1.0))
    assert_close(e_cols[:, 0], q @ k_cols[:, 0])
