"""Padding and causal masks vs nn.Transformer / nn.MultiheadAttention / SDPA, and the page's claims."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention.bias import causal_lower_right

from snippets.attention import masking
from snippets.attention.multihead import MultiHeadAttention
from snippets.transformer.attention_types import global_self_attention
from snippets.transformer.masks import (
    causal_mask,
    combine_masks,
    ignore_to_keep,
    keep_to_ignore,
    padding_mask,
    to_additive,
)
from tests.conftest import assert_close

F64 = torch.float64


def _weights_sdpa(n_q: int, n_k: int, device: torch.device, **kw) -> torch.Tensor:
    """The weights F.scaled_dot_product_attention uses: with V = I its output *is* the weight matrix."""
    g = torch.Generator().manual_seed(n_q * 31 + n_k)
    q = torch.randn(1, 1, n_q, 4, generator=g, dtype=F64).to(device)
    k = torch.randn(1, 1, n_k, 4, generator=g, dtype=F64).to(device)
    return F.scaled_dot_product_attention(q, k, torch.eye(n_k, dtype=F64, device=device)[None, None], **kw)[0, 0]


def test_reuses_the_attention_chapter_masks() -> None:
    assert causal_mask is masking.causal_mask and padding_mask is masking.padding_mask


@pytest.mark.parametrize("n", [1, 2, 5, 9])
def test_causal_mask_matches_generate_square_subsequent_mask(n: int, device: torch.device) -> None:
    for dtype in (torch.float32, F64):
        ref = nn.Transformer.generate_square_subsequent_mask(n, device=device, dtype=dtype)
        assert torch.equal(to_additive(causal_mask(n, device=device), dtype), ref)
    assert torch.equal(keep_to_ignore(causal_mask(n, device=device)), torch.isneginf(ref))  # bool form: True = future


@pytest.mark.parametrize(("n_q", "n_k"), [(1, 1), (3, 3), (2, 5), (5, 2), (4, 7)])
def test_causal_mask_matches_sdpa_is_causal_top_left(n_q: int, n_k: int, device: torch.device) -> None:
    ours = _weights_sdpa(n_q, n_k, device, attn_mask=causal_mask(n_q, n_k, device=device))
    assert_close(ours, _weights_sdpa(n_q, n_k, device, is_causal=True))


@pytest.mark.parametrize(("n_q", "n_k"), [(1, 1), (1, 6), (2, 5), (3, 3), (4, 9)])
def test_offset_matches_causal_lower_right(n_q: int, n_k: int, device: torch.device) -> None:
    ours = causal_mask(n_q, n_k, offset=n_k - n_q, device=device)
    assert torch.equal(ours, causal_lower_right(n_q, n_k)._materialize(device))
    assert torch.equal(ours, causal_mask(n_k, device=device)[-n_q:])  # the last n_q rows of the full mask
    w = _weights_sdpa(n_q, n_k, device, attn_mask=ours)
    assert_close(w, _weights_sdpa(n_q, n_k, device, attn_mask=causal_lower_right(n_q, n_k)))


@pytest.mark.parametrize("seed", range(3))
def test_is_causal_masks_the_wrong_keys_for_cached_queries(seed: int, device: torch.device) -> None:
    """2 new queries after 4 cached positions: top-left is_causal hides keys they are allowed to see."""
    g = torch.Generator().manual_seed(seed)
    n, n_new = 6, 2
    q, k, v = (torch.randn(1, 2, n, 8, generator=g, dtype=F64).to(device) for _ in range(3))
    full = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # all 6 queries at once
    q_new = q[:, :, -n_new:]
    top_left = F.scaled_dot_product_attention(q_new, k, v, is_causal=True)
    offset = F.scaled_dot_product_attention(
        q_new, k, v, attn_mask=causal_mask(n_new, n, offset=n - n_new, device=device)
    )
    lower_right = F.scaled_dot_product_attention(q_new, k, v, attn_mask=causal_lower_right(n_new, n))
    assert_close(offset, full[:, :, -n_new:])
    assert_close(lower_right, full[:, :, -n_new:])
    assert not torch.allclose(top_left, full[:, :, -n_new:])
    assert causal_mask(n_new, n).sum() == 1 + 2  # top-left: query 0 sees 1 key, query 1 sees 2


def test_single_new_query_needs_no_mask(device: torch.device) -> None:
    """With a KV cache the one new query is the last position: every cached key is in its past."""
    for n in (1, 3, 8):
        assert causal_mask(1, n, offset=n - 1, device=device).all()
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 1, 7, 4, generator=g, dtype=F64).to(device) for _ in range(3))
    full = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert_close(F.scaled_dot_product_attention(q[:, :, -1:], k, v), full[:, :, -1:])  # no mask at all
    assert not torch.allclose(F.scaled_dot_product_attention(q[:, :, -1:], k, v, is_causal=True), full[:, :, -1:])


def test_same_bool_tensor_has_opposite_meanings(device: torch.device) -> None:
    """nn.MultiheadAttention: True = masked out. F.scaled_dot_product_attention: True = attend."""
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(4, 1, batch_first=True, dtype=F64, device=device)
    x = torch.randn(1, 4, 4, dtype=F64, device=device)
    m = torch.tensor([True, False, True, False], device=device).expand(4, 4)  # keys 0 and 2 True
    _, w_mha = mha(x, x, x, attn_mask=m)
    w_sdpa = _weights_sdpa(4, 4, device, attn_mask=m)
    assert torch.all(w_mha[0][m] == 0) and torch.all(w_mha[0][~m] > 0)  # hides keys 0 and 2
    assert torch.all(w_sdpa[~m] == 0) and torch.all(w_sdpa[m] > 0)  # keeps keys 0 and 2
    _, w_fixed = mha(x, x, x, attn_mask=keep_to_ignore(m))
    assert torch.all(w_fixed[0][~m] == 0) and torch.all(w_fixed[0][m] > 0)  # converted: same meaning as SDPA
    with pytest.raises(ValueError, match="every key masked"):  # the lower triangle as "ignore" hides row 3
        MultiHeadAttention(4, 1, dtype=F64, device=device)(x, x, x, attn_mask=causal_mask(4, device=device))


@pytest.mark.parametrize("seed", range(4))
def test_matches_multiheadattention_with_combined_masks(seed: int, device: torch.device) -> None:
    """nn.MultiheadAttention(key_padding_mask, attn_mask) == SDPA on the same projections with
    combine_masks(keep, causal) — forward and backward, bool and additive forms."""
    g = torch.Generator().manual_seed(seed)
    b, n, h = int(torch.randint(1, 4, (1,), generator=g)), int(torch.randint(2, 7, (1,), generator=g)), 2
    d = 4 * h
    torch.manual_seed(seed)
    ref = nn.MultiheadAttention(d, h, batch_first=True, dtype=F64, device=device).train()
    ours = MultiHeadAttention(d, h, dtype=F64, device=device).load_from_torch(ref)
    valid = torch.randint(1, n + 1, (b,), generator=g).to(device)
    keep = padding_mask(valid, n)
    x = torch.randn(b, n, d, generator=g, dtype=F64).to(device)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_ref, _ = ref(
        x1, x1, x1, key_padding_mask=keep_to_ignore(keep), attn_mask=keep_to_ignore(causal_mask(n).to(device))
    )
    for additive in (False, True):
        mask = combine_masks(keep, causal_mask(n, device=device))
        if additive:
            mask = combine_masks(to_additive(keep, F64), to_additive(causal_mask(n, device=device), F64))
        assert mask.shape == (b, 1, n, n)
        split = [lin(x2).reshape(b, n, h, d // h).transpose(1, 2) for lin in (ours.q_proj, ours.k_proj, ours.v_proj)]
        o = F.scaled_dot_product_attention(*split, attn_mask=mask)
        out = ours.out_proj(o.transpose(1, 2).reshape(b, n, d))
        assert_close(out, out_ref)
    gr = torch.randn_like(out)
    (out_ref * gr).sum().backward()
    (out * gr).sum().backward()
    assert_close(x2.grad, x1.grad)


@pytest.mark.parametrize("seed", range(3))
def test_combine_masks_is_elementwise_and(seed: int, device: torch.device) -> None:
    g = torch.Generator().manual_seed(seed)
    b, h, n_q, n_k = 3, 2, 4, 5
    key = (torch.rand(b, n_k, generator=g) > 0.3).to(device)
    for attn_shape in [(n_q, n_k), (b, n_q, n_k), (b, h, n_q, n_k)]:
        attn = (torch.rand(attn_shape, generator=g) > 0.3).to(device)
        both = combine_masks(key, attn)
        full = both.expand(b, h, n_q, n_k)
        a4 = attn.reshape((1,) * (4 - attn.dim()) + attn_shape) if attn.dim() == 2 else attn
        a4 = a4[:, None] if a4.dim() == 3 else a4
        for bi, hi, i, j in itertools.product(range(b), range(h), range(n_q), range(n_k)):  # brute force
            expected = bool(key[bi, j]) and bool(a4[min(bi, a4.size(0) - 1), min(hi, a4.size(1) - 1), i, j])
            assert bool(full[bi, hi, i, j]) == expected
        additive = combine_masks(to_additive(key, F64), attn)  # mixed: bool made additive, then summed
        assert torch.equal(torch.isneginf(additive), ~both)
        assert torch.equal(additive, to_additive(both, F64))


def test_combine_masks_keeps_finite_biases_and_skips_none(device: torch.device) -> None:
    bias = torch.randn(3, 4, dtype=F64, device=device)
    key = torch.tensor([[True, True, False, True]], device=device)
    out = combine_masks(key, bias)
    assert out.shape == (1, 1, 3, 4)
    assert torch.equal(out[0, 0, :, [0, 1, 3]], bias[:, [0, 1, 3]]) and torch.isneginf(out[..., 2]).all()
    assert combine_masks() is None
    assert torch.equal(combine_masks(key), key[:, None, None, :])
    assert torch.equal(combine_masks(attn_keep=causal_mask(3)), causal_mask(3)[None, None])


def test_naive_broadcast_of_a_padding_mask_is_wrong() -> None:
    """(B, n_k) & (n_q, n_k) broadcasts when B == n_q — row b of the padding mask lands on *query* b."""
    keep = padding_mask(torch.tensor([4, 2, 1, 3]), 4)  # B = 4 = n_q
    causal = causal_mask(4)
    naive = keep & causal  # (4, 4): no error, wrong meaning
    right = combine_masks(keep, causal)  # (4, 1, 4, 4)
    assert naive.shape == (4, 4) and right.shape == (4, 1, 4, 4)
    assert not torch.equal(naive, right[1, 0])  # sequence 1's mask is not the naive one


def test_conversions_are_inverse_and_to_additive_values() -> None:
    m = torch.tensor([[True, False], [False, True]])
    assert torch.equal(ignore_to_keep(keep_to_ignore(m)), m)
    assert torch.equal(keep_to_ignore(m), ~m)
    add = to_additive(m, F64)
    assert add.dtype == F64 and torch.equal(add, torch.tensor([[0.0, float("-inf")], [float("-inf"), 0.0]], dtype=F64))


def test_encoder_needs_the_padding_mask_too(device: torch.device) -> None:
    """A sentence encoded alone == the same sentence padded in a batch, only with the padding mask."""
    torch.manual_seed(0)
    mha = MultiHeadAttention(8, 2, dtype=F64, device=device)
    x = torch.randn(1, 3, 8, dtype=F64, device=device)
    padded = torch.cat([x, torch.randn(1, 2, 8, dtype=F64, device=device)], dim=1)  # 2 pad positions
    pad = keep_to_ignore(padding_mask(torch.tensor([3], device=device), 5))
    with torch.no_grad():
        alone, _ = global_self_attention(mha, x)
        masked, _ = global_self_attention(mha, padded, pad)
        unmasked, _ = global_self_attention(mha, padded)
    assert_close(masked[:, :3], alone)
    assert not torch.allclose(unmasked[:, :3], alone)


def test_mask_acts_in_the_forward_pass_not_on_parameter_updates(device: torch.device) -> None:
    """Padded positions get zero gradient (loss over real positions only); every parameter still learns."""
    torch.manual_seed(0)
    mha = MultiHeadAttention(8, 2, dtype=F64, device=device)
    x = torch.randn(2, 5, 8, dtype=F64, device=device, requires_grad=True)
    keep = padding_mask(torch.tensor([5, 3], device=device), 5)
    out, w = global_self_attention(mha, x, keep_to_ignore(keep), need_weights=True)
    assert torch.all(w.detach()[1, :, :, 3:] == 0)  # masked keys: weight exactly 0
    (out * keep[..., None]).sum().backward()  # a loss mask: padded queries do not count
    assert torch.all(x.grad[1, 3:] == 0)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in mha.parameters())


def test_padded_queries_are_computed_but_do_not_leak(device: torch.device) -> None:
    """Key padding hides columns; padded *queries* still get a (meaningless) output row, which the
    real positions never read. Masking the padded query rows instead would leave rows with no key."""
    torch.manual_seed(0)
    mha = MultiHeadAttention(8, 2, dtype=F64, device=device)
    x = torch.randn(1, 4, 8, dtype=F64, device=device)
    keep = padding_mask(torch.tensor([2], device=device), 4)
    with torch.no_grad():
        out, w = global_self_attention(mha, x, keep_to_ignore(keep), need_weights=True)
        x2 = x.clone()
        x2[:, 2:] = 100.0
        out2, _ = global_self_attention(mha, x2, keep_to_ignore(keep))
    assert torch.isfinite(out).all() and torch.all(w[0, :, 2:].sum(-1) > 0.99)  # padded queries: real rows
    assert_close(out2[:, :2], out[:, :2])  # the real positions do not see the padded ones at all
    query_and_key = combine_masks(keep, keep[:, :, None].expand(1, 4, 4))  # also hide padded query rows
    with pytest.raises(ValueError, match="every key masked"):
        mha(x, x, x, attn_mask=keep_to_ignore(query_and_key[:, 0]).repeat_interleave(2, 0))


@pytest.mark.parametrize(
    ("fn", "args", "match"),
    [
        (keep_to_ignore, (torch.zeros(2, 2),), "keep must be a boolean mask, got dtype=torch.float32"),
        (ignore_to_keep, (torch.zeros(2, 2, dtype=torch.long),), "ignore must be a boolean mask"),
        (to_additive, (torch.zeros(2, 2),), "keep must be a boolean mask"),
        (
            to_additive,
            (torch.ones(2, 2, dtype=torch.bool), torch.int64),
            "needs a floating dtype, got dtype=torch.int64",
        ),
        (
            combine_masks,
            (torch.ones(2, 3, 4, dtype=torch.bool),),
            r"key_keep must be \(B, n_k\), got shape \(2, 3, 4\)",
        ),
        (combine_masks, (None, torch.ones(4, dtype=torch.bool)), "attn_keep must be .* got 1-D"),
        (combine_masks, (torch.ones(2, 4, dtype=torch.int32),), "key_keep must be bool .* got dtype=torch.int32"),
        (
            combine_masks,
            (torch.ones(2, 4, dtype=torch.bool), torch.ones(3, 5, dtype=torch.bool)),
            "key_keep has n_k=4 but attn_keep has n_k=5",
        ),
        (
            combine_masks,
            (torch.ones(2, 4, dtype=torch.bool), torch.ones(3, 3, 4, dtype=torch.bool)),
            "key_keep has batch B=2 but attn_keep has batch 3",
        ),
    ],
)
def test_rejects_bad_input(fn, args, match) -> None:
    with pytest.raises(ValueError, match=match):
        fn(*args)


def test_causal_mask_offset_keeps_default_and_rejects_negative() -> None:
    assert torch.equal(causal_mask(3, 4), causal_mask(3, 4, offset=0))
    assert torch.equal(causal_mask(3, 4, offset=1), torch.ones(3, 4, dtype=torch.bool).tril(1))
    with pytest.raises(ValueError, match="offset must be >= 0 .* got offset=-1"):
        causal_mask(3, offset=-1)
