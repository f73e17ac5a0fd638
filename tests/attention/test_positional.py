"""Sinusoidal and learned positional encodings: closed form, shift identity, uniqueness."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from snippets.attention.positional import (
    LearnedPositionalEmbedding,
    PositionalEncoding,
    relative_shift_matrix,
    rotary_embedding,
    sinusoidal_positional_encoding,
)
from snippets.attention.self_attention import permute_tokens, self_attention
from tests.conftest import assert_close

F64 = torch.float64
PE, LPE = PositionalEncoding, LearnedPositionalEmbedding


@pytest.mark.parametrize(("max_len", "d_model", "base"), [(1, 2, 10000.0), (17, 6, 10000.0), (40, 16, 100.0)])
def test_matches_closed_form_double_loop(max_len: int, d_model: int, base: float, device: torch.device) -> None:
    pe = sinusoidal_positional_encoding(max_len, d_model, base=base, dtype=F64, device=device)
    assert pe.device.type == device.type and pe.dtype == F64
    ref = torch.empty(max_len, d_model, dtype=F64)
    for pos in range(max_len):
        for i in range(d_model // 2):
            ref[pos, 2 * i] = math.sin(pos / base ** (2 * i / d_model))
            ref[pos, 2 * i + 1] = math.cos(pos / base ** (2 * i / d_model))
    assert_close(pe.cpu(), ref)


def test_float32_table_matches_float64_for_short_sequences(device: torch.device) -> None:
    pe32 = sinusoidal_positional_encoding(128, 32, device=device)
    assert pe32.dtype == torch.float32
    pe64 = sinusoidal_positional_encoding(128, 32, dtype=F64, device=device)
    assert_close(pe32.double(), pe64, rtol=0, atol=1e-4)


def test_half_precision_table_is_computed_in_float32() -> None:
    """float16 cannot represent every integer above 2048: the angles are computed in float32."""
    pe16 = sinusoidal_positional_encoding(5000, 16, dtype=torch.float16)
    assert pe16.dtype == torch.float16
    ref = sinusoidal_positional_encoding(5000, 16, dtype=F64)
    assert (pe16.double() - ref).abs().max() < 2e-3  # float16 rounding of values in [-1, 1]
    assert torch.unique(pe16, dim=0).size(0) == 5000  # every row still distinct ...
    assert torch.unique(torch.arange(5000, dtype=torch.float16)).numel() < 5000  # ... fp16 positions aren't


def test_dot_product_depends_only_on_the_offset_and_peaks_at_zero() -> None:
    """PE[i] . PE[i+delta] = sum_k cos(delta w_k): the same curve from every start position i,
    largest (d/2) at delta = 0, symmetric in delta."""
    d = 64
    pe = sinusoidal_positional_encoding(400, d, dtype=F64)
    w = 10000.0 ** (-torch.arange(0, d, 2, dtype=F64) / d)
    delta = torch.arange(-100, 101)
    closed = torch.cos(delta[:, None].double() * w).sum(-1)
    for i in (100, 150, 299):
        assert_close(pe[i + delta] @ pe[i], closed)
    assert int(closed.argmax()) == 100 and closed.max() == d / 2
    assert_close(closed, closed.flip(0))


@pytest.mark.parametrize("seed", range(3))
def test_rope_scores_depend_only_on_the_offset(seed: int, device: torch.device) -> None:
    """RoPE: rope(q)_m . rope(k)_n is a function of n - m; equals multiplying each feature pair,
    read as a complex number, by exp(i m w_j); keeps norms; position 0 is the identity."""
    g = torch.Generator().manual_seed(seed)
    b, h, L, d = 2, 3, 9, 2 * int(torch.randint(1, 9, (1,), generator=g))
    q, k = (torch.randn(b, h, L, d, generator=g, dtype=F64).to(device) for _ in range(2))
    shift = int(torch.randint(1, 50, (1,), generator=g))
    pos = torch.arange(L, device=device)
    scores = rotary_embedding(q) @ rotary_embedding(k).transpose(-2, -1)
    shifted = rotary_embedding(q, pos + shift) @ rotary_embedding(k, pos + shift).transpose(-2, -1)
    assert_close(shifted, scores)  # moving the whole sequence changes no score
    w = 10000.0 ** (-torch.arange(0, d, 2, dtype=F64, device=device) / d)
    z = torch.view_as_complex(q.reshape(b, h, L, d // 2, 2).contiguous())
    rotated = torch.view_as_real(z * torch.polar(torch.ones_like(w), pos[:, None].double() * w)).flatten(-2)
    assert_close(rotary_embedding(q), rotated)
    assert_close(rotary_embedding(q).norm(dim=-1), q.norm(dim=-1))
    assert_close(rotary_embedding(q)[..., 0, :], q[..., 0, :])
    assert (scores - q @ k.transpose(-2, -1)).abs().max() > 1e-3  # but it does change the scores


def test_rope_is_differentiable(device: torch.device) -> None:
    x = torch.randn(2, 5, 6, dtype=F64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(rotary_embedding, (x,))


@pytest.mark.parametrize("seed", range(4))
def test_shift_is_a_rotation_that_depends_only_on_delta(seed: int, device: torch.device) -> None:
    g = torch.Generator().manual_seed(seed)
    d = 2 * int(torch.randint(1, 33, (1,), generator=g))
    pe = sinusoidal_positional_encoding(600, d, dtype=F64, device=device)
    for _ in range(5):
        delta = int(torch.randint(-200, 200, (1,), generator=g))
        m = relative_shift_matrix(delta, d, dtype=F64, device=device)
        lo, hi = max(0, -delta), min(600, 600 - delta)
        assert_close(pe[lo:hi] @ m.T, pe[lo + delta : hi + delta])  # every pos, one matrix
        assert_close(m @ m.T, torch.eye(d, dtype=F64, device=device))  # orthogonal: a rotation
    # composing shifts adds offsets, and a non-integer offset works too (PE is defined for real pos)
    assert_close(
        relative_shift_matrix(2.5, d, dtype=F64) @ relative_shift_matrix(4.0, d, dtype=F64),
        relative_shift_matrix(6.5, d, dtype=F64),
    )


def test_distance_depends_only_on_the_offset() -> None:
    """|PE[i] - PE[j]|^2 = sum_k 2 - 2 cos((i - j) w_k): a function of i - j alone."""
    pe = sinusoidal_positional_encoding(300, 16, dtype=F64)
    dist = torch.cdist(pe, pe)
    w = 10000.0 ** (-torch.arange(0, 16, 2, dtype=F64) / 16)
    delta = torch.arange(300, dtype=F64)
    closed = (2 - 2 * torch.cos((delta[:, None] - delta[None, :])[..., None] * w)).sum(-1).sqrt()
    assert_close(dist, closed, rtol=0, atol=1e-7)


def test_rows_are_distinct_up_to_ten_thousand() -> None:
    """d_model = 512, positions 0..9999: the closest pair of rows is still 3.71 apart (neighbours)."""
    n, d = 10_000, 512
    pe = sinusoidal_positional_encoding(n, d, dtype=F64)
    assert_close(pe.norm(dim=-1), torch.full((n,), math.sqrt(d / 2), dtype=F64))  # all on one sphere
    g = torch.Generator().manual_seed(0)
    i, j = torch.randint(0, n, (2, 2000), generator=g)
    assert_close((pe[i] - pe[j]).norm(dim=-1), (pe[(i - j).abs()] - pe[0]).norm(dim=-1))  # translation
    to_zero = (pe[1:] - pe[0]).norm(dim=-1)  # distance at every offset 1..9999
    assert to_zero.min() > 3.7 and int(to_zero.argmin()) == 0  # the closest rows are neighbours
    # brute force on a 2000-row slice as a cross-check of the offset argument
    assert torch.pdist(pe[::5]).min() > 3.7


def test_uniqueness_needs_integer_positions_and_slow_dims_barely_move() -> None:
    """Erratum (002 L527): the fastest pair (sin pos, cos pos) has period 2*pi, which no integer
    reaches, so integer positions never repeat -- but a real shift by 2*pi repeats it exactly,
    pos 710 comes within 6e-5 of pos 0 (355/113 ~ pi), and neighbours differ by ~1e-4 in the
    slowest dimensions."""
    fast = sinusoidal_positional_encoding(10_000, 2, dtype=F64)  # only the fastest pair
    assert (fast[1:] - fast[0]).norm(dim=-1).min() > 1e-5  # no integer repeats position 0 ...
    assert (fast[710] - fast[0]).norm() < 1e-4  # ... though 710 = 113 * 2*pi + 6e-5 nearly does
    assert_close(relative_shift_matrix(2 * math.pi, 2, dtype=F64), torch.eye(2, dtype=F64))  # period 2*pi
    pe = sinusoidal_positional_encoding(10_000, 512, dtype=F64)
    assert (pe[1:, -2:] - pe[:-1, -2:]).abs().max() < 2e-4  # slowest pair: neighbours nearly equal
    assert (pe[1:, :2] - pe[:-1, :2]).norm(dim=-1).min() > 0.9  # fastest pair: they differ a lot


def test_positional_encoding_adds_the_table(device: torch.device) -> None:
    """Erratum (001 L401): the Transformer ADDS the sinusoids to the embeddings (same width)."""
    torch.manual_seed(0)
    enc = PositionalEncoding(8, max_len=20, dtype=F64, device=device)
    x = torch.randn(3, 11, 8, dtype=F64, device=device, requires_grad=True)
    y = enc(x)
    assert y.shape == x.shape
    assert_close(y, x + sinusoidal_positional_encoding(11, 8, dtype=F64, device=device))
    y.backward(torch.ones_like(y))
    assert_close(x.grad, torch.ones_like(x))
    assert list(enc.parameters()) == [] and enc.state_dict() == {}  # fixed, not learned, not saved
    assert PositionalEncoding(8, max_len=4).to(F64).pe.dtype == F64  # the buffer follows .to()


def test_positional_encoding_dropout_only_in_training() -> None:
    torch.manual_seed(0)
    enc = PositionalEncoding(8, max_len=20, dropout=0.5, dtype=F64)
    x = torch.zeros(4, 10, 8, dtype=F64)
    clean = enc.eval()(x)
    noisy = enc.train()(x)
    kept = noisy != 0
    assert 0.3 < kept.double().mean() < 0.7
    assert_close(noisy[kept], 2 * clean[kept])


def test_learned_embedding_matches_nn_embedding(device: torch.device) -> None:
    torch.manual_seed(0)
    pos = LearnedPositionalEmbedding(12, 6, dtype=F64, device=device)
    ref = nn.Embedding(12, 6, dtype=F64, device=device)
    with torch.no_grad():
        ref.weight.copy_(pos.embedding.weight)
    x = torch.randn(2, 7, 6, dtype=F64, device=device, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    y, y_ref = pos(x), x_ref + ref(torch.arange(7, device=device))
    assert_close(y, y_ref)
    grad = torch.randn_like(y)
    y.backward(grad)
    y_ref.backward(grad)
    assert_close(x.grad, x_ref.grad)
    assert_close(pos.embedding.weight.grad, ref.weight.grad)
    assert torch.all(pos.embedding.weight.grad[7:] == 0)  # rows past the sequence get no gradient
    assert_close(pos.embedding.weight.grad[:7], grad.sum(0))


def test_positions_break_permutation_equivariance(device: torch.device) -> None:
    """Why PE is needed (9.12): without it shuffling tokens only shuffles outputs; with it the
    outputs themselves change."""
    g = torch.Generator().manual_seed(0)
    n, d = 6, 8
    x = torch.randn(2, n, d, generator=g, dtype=F64).to(device)
    w_q, w_k, w_v = (torch.randn(d, d, generator=g, dtype=F64).to(device) for _ in range(3))
    perm = torch.tensor([1, 0, 2, 3, 5, 4], device=device)
    pe = PositionalEncoding(d, max_len=n, dtype=F64, device=device)
    f = lambda t: self_attention(t, w_q, w_k, w_v)  # noqa: E731
    assert_close(f(permute_tokens(x, perm)), permute_tokens(f(x), perm))  # no PE: equivariant
    diff = f(pe(permute_tokens(x, perm))) - permute_tokens(f(pe(x)), perm)
    assert diff.abs().max() > 1e-2  # with PE the model sees where each token is


@pytest.mark.parametrize(
    ("fn", "match"),
    [
        (lambda: sinusoidal_positional_encoding(10, 7), "d_model=7 must be even"),
        (lambda: sinusoidal_positional_encoding(0, 8), "max_len and d_model must be positive, got max_len=0"),
        (lambda: sinusoidal_positional_encoding(5, -2), "must be positive"),
        (lambda: relative_shift_matrix(1, 5), "d_model=5 must be positive and even"),
        (lambda: PE(8, max_len=4)(torch.zeros(1, 5, 8)), "sequence length 5 exceeds max_len=4"),
        (lambda: PE(8)(torch.zeros(1, 5, 6)), r"x must be \(B, L, d_model=8\), got shape \(1, 5, 6\)"),
        (lambda: PE(8)(torch.zeros(5, 8)), r"x must be \(B, L, d_model=8\)"),
        (lambda: PE(8, dropout=1.0), r"dropout must be in \[0, 1\)"),
        (lambda: PE(9), "d_model=9 must be even"),
        (lambda: LPE(4, 8)(torch.zeros(2, 5, 8)), "sequence length 5 exceeds max_len=4"),
        (lambda: LPE(4, 8)(torch.zeros(2, 3, 7)), r"x must be \(B, L, d_model=8\)"),
        (lambda: LPE(0, 8), "max_len=0"),
        (lambda: LPE(4, 8, dropout=-0.5), r"dropout must be in \[0, 1\)"),
        (lambda: rotary_embedding(torch.zeros(3, 5)), r"x must be \(\.\.\., L, d\) with even d, got shape \(3, 5\)"),
        (lambda: rotary_embedding(torch.zeros(3, 4), torch.arange(2)), r"positions must have shape \(L=3,\)"),
    ],
)
def test_rejects_bad_input(fn, match) -> None:
    with pytest.raises(ValueError, match=match):
        fn()
