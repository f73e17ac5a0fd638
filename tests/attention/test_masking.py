"""masked_softmax, causal_mask and padding_mask against PyTorch and against the page's claims."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from snippets.attention.masking import causal_mask, masked_softmax, padding_mask
from tests.conftest import assert_close

F64 = torch.float64


def _case(seed: int, device: torch.device):
    g = torch.Generator().manual_seed(seed)
    shape = tuple(int(s) for s in torch.randint(1, 5, (2,), generator=g)) + (
        int(torch.randint(1, 7, (1,), generator=g)),
        int(torch.randint(2, 9, (1,), generator=g)),
    )
    scores = torch.randn(shape, generator=g, dtype=F64).to(device)
    keep = (torch.rand(shape, generator=g) > 0.4).to(device)
    keep[..., 0] = True  # at least one key per row
    return scores, keep


@pytest.mark.parametrize("seed", range(5))
def test_matches_softmax_masked_fill(seed: int, device: torch.device) -> None:
    scores, keep = _case(seed, device)
    s1 = scores.clone().requires_grad_()
    s2 = scores.clone().requires_grad_()
    ours = masked_softmax(s1, keep)
    ref = torch.softmax(s2.masked_fill(~keep, float("-inf")), dim=-1)
    assert_close(ours, ref)
    g = torch.randn_like(ours)
    ours.backward(g)
    ref.backward(g)
    assert_close(s1.grad, s2.grad)


@pytest.mark.parametrize("seed", range(5))
def test_matches_sdpa_identity_values(seed: int, device: torch.device) -> None:
    """With V = I, F.scaled_dot_product_attention returns exactly its attention weights."""
    scores, keep = _case(seed, device)
    n_q, n_k = scores.shape[-2:]
    q = scores.clone().requires_grad_()
    eye = torch.eye(n_k, dtype=F64, device=device).expand(*scores.shape[:-2], n_k, n_k)
    k = torch.eye(n_k, dtype=F64, device=device).expand_as(eye)  # q @ k^T == q
    q2 = scores.clone().requires_grad_()
    ours = masked_softmax(q, keep)
    ref = F.scaled_dot_product_attention(q2, k, eye, attn_mask=keep, scale=1.0)
    assert_close(ours, ref)
    g = torch.randn_like(ours)
    ours.backward(g)
    ref.backward(g)
    assert_close(q.grad, q2.grad)
    assert n_q == ours.shape[-2]


def test_additive_mask_equals_boolean(device: torch.device) -> None:
    scores, keep = _case(7, device)
    additive = torch.zeros_like(scores).masked_fill(~keep, float("-inf"))
    assert_close(masked_softmax(scores, additive), masked_softmax(scores, keep))


def test_masked_weights_and_gradients_are_exactly_zero(device: torch.device) -> None:
    scores, keep = _case(3, device)
    scores.requires_grad_()
    w = masked_softmax(scores, keep)
    assert torch.all(w[~keep] == 0)
    assert_close(w.sum(-1), torch.ones_like(w.sum(-1)))
    w.backward(torch.randn_like(w))
    assert torch.all(scores.grad[~keep] == 0)


def test_fully_masked_row_raises(device: torch.device) -> None:
    scores = torch.randn(2, 3, dtype=F64, device=device)
    keep = torch.ones(2, 3, dtype=torch.bool, device=device)
    keep[1] = False
    with pytest.raises(ValueError, match=r"1 row\(s\) have every key masked \(first at index \(1,\)\)"):
        masked_softmax(scores, keep)


def test_fully_masked_row_zero_matches_sdpa(device: torch.device) -> None:
    scores = torch.randn(1, 3, 4, dtype=F64, device=device)
    keep = torch.ones(1, 3, 4, dtype=torch.bool, device=device)
    keep[0, 2] = False
    w = masked_softmax(scores, keep, fully_masked="zero")
    assert torch.all(w[0, 2] == 0) and not torch.isnan(w).any()
    eye = torch.eye(4, dtype=F64, device=device).unsqueeze(0)
    ref = F.scaled_dot_product_attention(scores, eye, eye, attn_mask=keep, scale=1.0)
    assert_close(w, ref)


def test_page_claim_manual_minus_inf_gives_nan_and_mha_too() -> None:
    scores = torch.zeros(1, 3)
    naive = torch.softmax(scores.masked_fill(torch.ones(1, 3, dtype=torch.bool), float("-inf")), -1)
    assert torch.isnan(naive).all()
    mha = torch.nn.MultiheadAttention(4, 1, batch_first=True)
    x = torch.randn(1, 3, 4)
    out, _ = mha(x, x, x, key_padding_mask=torch.ones(1, 3, dtype=torch.bool))
    assert torch.isnan(out).all()


def test_page_claim_zero_after_softmax_breaks_normalisation() -> None:
    scores = torch.tensor([[2.0, 1.0, 0.5, -1.0]])
    keep = torch.tensor([[True, True, False, False]])
    after = torch.softmax(scores, -1) * keep  # the notes' "set to 0" applied after softmax
    assert after.sum().item() < 0.9
    assert masked_softmax(scores, keep).sum().item() == pytest.approx(1.0)


def test_page_claim_score_zero_is_not_masked() -> None:
    scores = torch.tensor([[2.0, 1.0, 0.5, -1.0]])
    keep = torch.tensor([[True, True, False, False]])
    zeroed = torch.softmax(scores.masked_fill(~keep, 0.0), -1)  # "replace with 0"
    assert torch.all(zeroed[~keep] > 0.05)  # e^0 still gets weight


def test_page_claim_d2l_minus_1e6_fully_masked_is_uniform() -> None:
    scores = torch.randn(1, 4)
    w = torch.softmax(scores.masked_fill(torch.ones(1, 4, dtype=torch.bool), -1e6), -1)
    assert_close(w, torch.full((1, 4), 0.25), rtol=0, atol=1e-6)


def test_causal_mask_matches_sdpa_is_causal(device: torch.device) -> None:
    g = torch.Generator().manual_seed(0)
    for n_q, n_k in [(4, 4), (3, 6), (5, 2)]:
        q = torch.randn(2, n_q, 3, generator=g, dtype=F64).to(device)
        k = torch.randn(2, n_k, 3, generator=g, dtype=F64).to(device)
        v = torch.randn(2, n_k, 5, generator=g, dtype=F64).to(device)
        m = causal_mask(n_q, n_k, device=device)
        assert_close(
            F.scaled_dot_product_attention(q, k, v, attn_mask=m),
            F.scaled_dot_product_attention(q, k, v, is_causal=True),
        )


def test_padding_mask_matches_brute_force(device: torch.device) -> None:
    lens = torch.tensor([0, 3, 5, 1], device=device)
    m = padding_mask(lens, 5)
    brute = torch.tensor([[j < int(n) for j in range(5)] for n in lens.tolist()], device=device)
    assert torch.equal(m, brute)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mask": torch.ones(3, 5, dtype=torch.bool)}, r"mask of shape \(3, 5\) is not broadcastable"),
        ({"mask": torch.ones(2, 1, 3, 4, dtype=torch.bool)}, r"not broadcastable to scores of shape \(2, 3, 4\)"),
        ({"mask": torch.ones(2, 3, 4, dtype=torch.int64)}, "mask must be bool"),
        ({"fully_masked": "nan"}, "fully_masked must be"),
    ],
)
def test_rejects_bad_masks(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        masked_softmax(torch.randn(2, 3, 4), **kwargs)


def test_rejects_bad_lengths() -> None:
    with pytest.raises(ValueError, match="positive lengths"):
        causal_mask(0)
    with pytest.raises(ValueError, match=r"valid_lens must lie in \[0, n_k=3\]"):
        padding_mask(torch.tensor([1, 4]), 3)
    with pytest.raises(ValueError, match="must be 1-D"):
        padding_mask(torch.tensor([[1]]), 3)
    with pytest.raises(ValueError, match="integer tensor"):
        padding_mask(torch.tensor([1.0]), 3)
