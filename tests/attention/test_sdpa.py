"""scaled_dot_product_attention vs torch.nn.functional.scaled_dot_product_attention."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from snippets.attention.sdpa import attention_weights, scaled_dot_product_attention
from tests.conftest import assert_close

F64 = torch.float64


def _qkv(seed: int, device: torch.device):
    """Random (B, h, n_q, d_k), (B, h, n_k, d_k), (B, h, n_k, d_v) with n_q != n_k, d_v != d_k."""
    g = torch.Generator().manual_seed(seed)
    b, h, n_q, n_k, d_k, d_v = (int(x) for x in torch.randint(1, 7, (6,), generator=g))
    n_k += 1  # at least 2 keys so masks can drop one
    q = torch.randn(b, h, n_q, d_k, generator=g, dtype=F64)
    k = torch.randn(b, h, n_k, d_k, generator=g, dtype=F64)
    v = torch.randn(b, h, n_k, d_v, generator=g, dtype=F64)
    return [t.to(device).requires_grad_() for t in (q, k, v)], g


def _compare(qkv, **kw) -> None:
    ours_in = [t.detach().clone().requires_grad_() for t in qkv]
    ref_in = [t.detach().clone().requires_grad_() for t in qkv]
    ours = scaled_dot_product_attention(*ours_in, **kw)
    ref = F.scaled_dot_product_attention(*ref_in, **kw)
    assert_close(ours, ref)
    grad = torch.randn_like(ours)
    ours.backward(grad)
    ref.backward(grad)
    for a, b in zip(ours_in, ref_in):
        assert_close(a.grad, b.grad)


@pytest.mark.parametrize("seed", range(6))
def test_matches_sdpa_unmasked(seed: int, device: torch.device) -> None:
    qkv, _ = _qkv(seed, device)
    _compare(qkv)
    _compare(qkv, scale=0.37)


@pytest.mark.parametrize("seed", range(6))
def test_matches_sdpa_causal(seed: int, device: torch.device) -> None:
    qkv, _ = _qkv(seed, device)
    _compare(qkv, is_causal=True)


@pytest.mark.parametrize("seed", range(6))
def test_matches_sdpa_boolean_broadcast_masks(seed: int, device: torch.device) -> None:
    qkv, g = _qkv(seed, device)
    b, h, n_q, n_k = qkv[0].shape[0], qkv[0].shape[1], qkv[0].shape[2], qkv[1].shape[2]
    for shape in [(b, h, n_q, n_k), (b, 1, 1, n_k), (n_q, n_k), (1, h, n_q, 1)]:
        keep = torch.rand(shape, generator=g) > 0.3
        keep[..., 0] = True  # every row keeps key 0
        _compare(qkv, attn_mask=keep.to(device))


@pytest.mark.parametrize("seed", range(6))
def test_matches_sdpa_additive_masks(seed: int, device: torch.device) -> None:
    qkv, g = _qkv(seed, device)
    n_q, n_k = qkv[0].shape[2], qkv[1].shape[2]
    bias = torch.randn(n_q, n_k, generator=g, dtype=F64)  # e.g. a relative-position bias
    bias[:, 1:] = bias[:, 1:].masked_fill(torch.rand(n_q, n_k - 1, generator=g) > 0.5, float("-inf"))
    _compare(qkv, attn_mask=bias.to(device))


def test_fully_masked_rows_zero_matches_sdpa(device: torch.device) -> None:
    qkv, _ = _qkv(1, device)
    n_q, n_k = qkv[0].shape[2], qkv[1].shape[2]
    keep = torch.ones(n_q, n_k, dtype=torch.bool, device=device)
    keep[0] = False
    out = scaled_dot_product_attention(*qkv, attn_mask=keep, fully_masked="zero")
    ref = F.scaled_dot_product_attention(*qkv, attn_mask=keep)
    assert_close(out, ref)
    assert torch.all(out[..., 0, :] == 0)
    with pytest.raises(ValueError, match="every key masked"):
        scaled_dot_product_attention(*qkv, attn_mask=keep)


def test_weights_rows_sum_to_one_and_causal_upper_triangle_zero(device: torch.device) -> None:
    (q, k, _), _ = _qkv(2, device)
    w = attention_weights(q, k[..., : q.shape[2], :], is_causal=True)
    assert_close(w.sum(-1), torch.ones_like(w.sum(-1)))
    assert torch.all(w.triu(1) == 0)


def test_dropout_is_inverted_and_unbiased() -> None:
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 4, 8, dtype=F64), torch.randn(1, 5, 8, dtype=F64)
    v = torch.eye(5, dtype=F64).unsqueeze(0)  # output rows = (dropped) weights
    clean = scaled_dot_product_attention(q, k, v)
    runs = torch.stack(
        [scaled_dot_product_attention(q, k, v, dropout_p=0.25, generator=g) for _ in range(4000)]
    )
    kept = runs != 0
    assert abs(1 - kept.double().mean().item() - 0.25) < 0.01  # about a quarter dropped
    assert_close(runs[kept], (clean.expand_as(runs) / 0.75)[kept])  # survivors scaled by 1/(1-p)
    assert_close(runs.mean(0), clean, rtol=0, atol=0.02)  # unbiased in expectation


@pytest.mark.parametrize(
    ("shapes", "kwargs", "match"),
    [
        (((2, 3, 4), (3, 5, 4), (3, 5, 6)), {}, r"batch/head dims differ: query \(2,\), key \(3,\)"),
        (((2, 3, 4), (2, 5, 8), (2, 5, 6)), {}, "d_k mismatch: query has d_k=4 but key has d_k=8"),
        (((2, 3, 4), (2, 5, 4), (2, 6, 6)), {}, "value must match key"),
        (((2, 0, 4), (2, 5, 4), (2, 5, 6)), {}, "empty sequence: n_q=0"),
        (((2, 3, 4), (2, 0, 4), (2, 0, 6)), {}, "empty sequence"),
        (((4,), (4,), (4,)), {}, "at least 2 dims"),
        (((2, 3, 4), (2, 5, 4), (2, 5, 6)), {"attn_mask": torch.ones(3, 4, dtype=torch.bool)}, "not broadcastable"),
        (
            ((2, 3, 4), (2, 5, 4), (2, 5, 6)),
            {"attn_mask": torch.ones(3, 5, dtype=torch.bool), "is_causal": True},
            "not both",
        ),
        (((2, 3, 4), (2, 5, 4), (2, 5, 6)), {"dropout_p": 1.0}, r"dropout_p must be in \[0, 1\)"),
    ],
)
def test_rejects_bad_input(shapes, kwargs, match) -> None:
    q, k, v = (torch.randn(s) for s in shapes)
    with pytest.raises(ValueError, match=match):
        scaled_dot_product_attention(q, k, v, **kwargs)


def test_rejects_mixed_dtypes() -> None:
    q, k = torch.randn(3, 4), torch.randn(5, 4, dtype=F64)
    with pytest.raises(ValueError, match="differ"):
        attention_weights(q, k)
    with pytest.raises(ValueError, match="floating-point"):
        attention_weights(torch.ones(3, 4, dtype=torch.long), torch.ones(5, 4, dtype=torch.long))
