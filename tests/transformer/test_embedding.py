"""embedding_lookup / one_hot_matmul / TokenEmbedding vs F.embedding and nn.Embedding; the sqrt(d_model) scale."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from snippets.attention.positional import sinusoidal_positional_encoding
from snippets.transformer.embedding import TokenEmbedding, embedding_lookup, embedding_vs_pe_rms, one_hot_matmul
from tests.conftest import assert_close

F64 = torch.float64


def _case(seed: int, device: torch.device):
    """Random weight (V, d) and ids (B, L) with repeated ids (V < B * L)."""
    g = torch.Generator().manual_seed(seed)
    v, d, b, seq = (int(x) for x in torch.randint(2, 7, (4,), generator=g))
    w = torch.randn(v, d, generator=g, dtype=F64).to(device)
    ids = torch.randint(0, v, (b, seq + v), generator=g).to(device)  # more ids than rows: repeats
    return w, ids


def _fwd_bwd(fn, w: torch.Tensor, ids: torch.Tensor, grad: torch.Tensor):
    w = w.clone().requires_grad_()
    out = fn(ids, w)
    out.backward(grad)
    return out, w.grad


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("ours", [embedding_lookup, one_hot_matmul])
def test_matches_f_embedding(seed: int, ours, device: torch.device) -> None:
    w, ids = _case(seed, device)
    grad = torch.randn(*ids.shape, w.size(1), dtype=F64, device=device)
    out, gw = _fwd_bwd(ours, w, ids, grad)
    out_ref, gw_ref = _fwd_bwd(F.embedding, w, ids, grad)
    assert_close(out, out_ref)
    assert_close(gw, gw_ref)
    # a repeated id's row collects the gradients of all its occurrences
    i = int(ids.flatten().mode().values)
    assert_close(gw[i], grad[ids == i].sum(0))
    unused = torch.bincount(ids.flatten(), minlength=w.size(0)) == 0
    assert torch.all(gw[unused] == 0)  # rows never looked up get no gradient


@pytest.mark.parametrize("seed", range(4))
def test_padding_idx_matches_f_embedding(seed: int, device: torch.device) -> None:
    w, ids = _case(seed, device)
    ids[:, -1] = 1  # make sure the pad id occurs
    grad = torch.randn(*ids.shape, w.size(1), dtype=F64, device=device)
    for pad in (1, 1 - w.size(0)):  # the same row, counted from the end
        out, gw = _fwd_bwd(partial(embedding_lookup, padding_idx=pad), w, ids, grad)
        out_ref, gw_ref = _fwd_bwd(partial(F.embedding, padding_idx=pad), w, ids, grad)
        assert_close(out, out_ref)
        assert_close(gw, gw_ref)
        assert torch.all(gw[1] == 0)  # the padding row gets no gradient


@pytest.mark.parametrize("seed", range(4))
def test_token_embedding_matches_scaled_nn_embedding(seed: int, device: torch.device) -> None:
    w, ids = _case(seed, device)
    v, d = w.shape
    torch.manual_seed(seed)
    ours = TokenEmbedding(v, d, padding_idx=0, dtype=F64, device=device)
    ref = nn.Embedding(v, d, padding_idx=0, dtype=F64, device=device)
    assert torch.all(ours.weight[0] == 0) and torch.all(ref.weight[0] == 0)  # pad row starts at zero
    with torch.no_grad():
        ref.weight.copy_(ours.weight)
    out, out_ref = ours(ids), math.sqrt(d) * ref(ids)
    assert_close(out, out_ref)
    grad = torch.randn_like(out)
    out.backward(grad)
    out_ref.backward(grad)
    assert_close(ours.weight.grad, ref.weight.grad)


def test_scale_false_is_a_plain_lookup() -> None:
    emb = TokenEmbedding(7, 4, scale=False, dtype=F64)
    ids = torch.tensor([[0, 6, 6, 2]])
    assert_close(emb(ids), F.embedding(ids, emb.weight))


def test_one_hot_matmul_is_a_bias_free_linear_layer() -> None:
    w = torch.randn(6, 3, dtype=F64)
    ids = torch.tensor([[5, 0, 5], [2, 2, 1]])
    lin = nn.Linear(6, 3, bias=False, dtype=F64)
    with torch.no_grad():
        lin.weight.copy_(w.T)  # Linear stores (out, in) = W^T
    assert_close(lin(F.one_hot(ids, 6).to(F64)), one_hot_matmul(ids, w))


def test_default_init_std_is_one_over_sqrt_d() -> None:
    torch.manual_seed(0)
    d = 256
    emb = TokenEmbedding(2000, d)
    assert abs(emb.weight.std().item() - d**-0.5) < 0.02 * d**-0.5
    assert abs((emb.scale * emb.weight).std().item() - 1.0) < 0.02
    assert abs(TokenEmbedding(2000, d, init_std=1.0).weight.std().item() - 1.0) < 0.02
    assert abs(nn.Embedding(2000, d).weight.std().item() - 1.0) < 0.02  # nn.Embedding's default N(0, 1)


@pytest.mark.parametrize("d", [16, 64, 512])
def test_scale_demo_pe_vs_embedding(d: int) -> None:
    emb_small, pe = embedding_vs_pe_rms(d)  # W ~ N(0, 1/d)
    emb_big, pe2 = embedding_vs_pe_rms(d, init_std=1.0)  # W ~ N(0, 1), nn.Embedding's default
    assert pe == pe2 and abs(pe - math.sqrt(0.5)) < 1e-12  # sin^2 + cos^2 = 1 per pair, for any d
    assert abs(emb_small - 1.0) < 0.05  # same order as PE
    assert abs(emb_big / math.sqrt(d) - 1.0) < 0.05  # sqrt(d) times larger: PE is drowned for large d
    table = sinusoidal_positional_encoding(100, d, dtype=F64)
    assert_close(table.pow(2).mean().sqrt(), torch.tensor(math.sqrt(0.5), dtype=F64))


def test_weight_tying_shares_one_matrix_and_sums_gradients() -> None:
    torch.manual_seed(0)
    v, d = 11, 8
    emb = TokenEmbedding(v, d, dtype=F64)
    out_proj = nn.Linear(d, v, bias=False, dtype=F64)
    out_proj.weight = emb.weight  # (V, d) is exactly Linear(d, V)'s (out, in) layout
    params = {id(p) for m in (emb, out_proj) for p in m.parameters()}
    assert len(params) == 1
    ids = torch.tensor([[1, 4, 4, 7]])
    logits = out_proj(emb(ids))  # (1, 4, V)
    logits.logsumexp(-1).sum().backward()
    w = emb.weight.detach().clone().requires_grad_()  # the same loss with two separate copies
    w2 = emb.weight.detach().clone().requires_grad_()
    (F.embedding(ids, w) * math.sqrt(d) @ w2.T).logsumexp(-1).sum().backward()
    assert_close(emb.weight.grad, w.grad + w2.grad)


@pytest.mark.parametrize(
    ("ids", "weight", "match"),
    [
        (torch.tensor([0.0, 1.0]), torch.randn(3, 2), "ids must be an integer tensor"),
        (torch.tensor([0, 1]), torch.randn(6), r"weight must be \(vocab_size, d\), got shape \(6,\)"),
        (torch.tensor([0, 3]), torch.randn(3, 2), r"ids must lie in \[0, vocab_size=3\), got min 0, max 3"),
        (torch.tensor([-1, 2]), torch.randn(3, 2), "got min -1"),
    ],
)
@pytest.mark.parametrize("fn", [embedding_lookup, one_hot_matmul])
def test_rejects_bad_ids_and_weights(fn, ids, weight, match) -> None:
    with pytest.raises(ValueError, match=match):
        fn(ids, weight)


def test_rejects_bad_padding_idx_and_sizes() -> None:
    with pytest.raises(ValueError, match=r"padding_idx=3 must lie in \[-3, 3\)"):
        embedding_lookup(torch.tensor([0]), torch.randn(3, 2), padding_idx=3)
    with pytest.raises(ValueError, match=r"padding_idx=5 must lie in \[0, vocab_size=5\)"):
        TokenEmbedding(5, 4, padding_idx=5)
    with pytest.raises(ValueError, match="vocab_size and d_model must be positive, got 0, 4"):
        TokenEmbedding(0, 4)
    with pytest.raises(ValueError, match="init_std must be positive, got 0"):
        TokenEmbedding(5, 4, init_std=0.0)
    with pytest.raises(ValueError, match="init_std must be positive"):
        embedding_vs_pe_rms(8, init_std=-1.0)
