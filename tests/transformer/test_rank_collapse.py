"""Rank collapse of pure self-attention vs skip connections; Eckart–Young check of the rank-1 distance."""

from __future__ import annotations

import math
from functools import cache

import pytest
import torch

from snippets.transformer.rank_collapse import (
    best_rank1_error,
    rank_collapse_curve,
    relative_residual,
    token_residual,
)
from tests.conftest import assert_close

F64 = torch.float64


@cache
def _curve(seed: int = 0, depth: int = 12, **kw):
    """Cached: a shorter network is a prefix of a longer one (same draws), so slice depth-12 curves."""
    return rank_collapse_curve(depth, generator=torch.Generator().manual_seed(seed), **kw)


def test_pure_attention_reproduces_the_measured_curve(device: torch.device) -> None:
    r = _curve(depth=4, device=device).ratio.cpu()  # n = 16, d = 32, weights N(0, 1/d), seed 0
    assert 0.95 < r[0] < 0.99 and 0.75 < r[1] < 0.87 and 0.03 < r[2] < 0.1  # 0.97 -> 0.81 -> 0.06
    assert 1e-6 < r[3] < 1e-5 and r[4] < 1e-14  # -> 3e-6 -> 1e-16 (float64 round-off)


def test_pure_attention_collapses_doubly_exponentially() -> None:
    r = _curve().ratio[:5]
    e = -torch.log(r[1:])  # the exponent itself grows geometrically (~ x3 per layer: cubic contraction)
    assert torch.all(e[1:] / e[:-1] > 2.5)


@pytest.mark.parametrize("seed", range(3))
def test_skip_connections_decay_orders_of_magnitude_slower(seed: int) -> None:
    pure, res = _curve(seed).ratio, _curve(seed, residual=True).ratio
    res_mlp = _curve(seed, residual=True, mlp=True).ratio
    assert pure[6] < 1e-12  # collapsed to round-off within 6 layers (seeds 0-2 measured: <= 2e-16)
    assert res[12] > 0.03 and res_mlp[12] > 0.03  # after 12 layers still far from rank 1 (0.07-0.26)
    assert res[4] / pure[4] > 1e10


def test_fixed_seed_values_of_the_skip_curves() -> None:
    res, res_mlp = _curve(residual=True).ratio, _curve(residual=True, mlp=True).ratio
    assert 0.1 < res[12] < 0.3  # measured 0.18 with seed 0
    assert 0.04 < res_mlp[12] < 0.12  # measured 0.07 with seed 0
    assert torch.all(res[1:] > 0.1)  # slow: no layer loses an order of magnitude


def test_mlp_without_skip_does_not_prevent_collapse() -> None:
    assert _curve(mlp=True, depth=6).ratio[6] < 1e-12


def test_collapsed_tokens_are_one_repeated_vector() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 32, generator=g, dtype=F64)
    for _ in range(5):  # the same layers as rank_collapse_curve, kept to look at X itself
        w_q, w_k, w_v = torch.randn(3, 32, 32, generator=g, dtype=F64) / math.sqrt(32)
        x = torch.softmax((x @ w_q) @ (x @ w_k).T / math.sqrt(32), dim=-1) @ x @ w_v
    ref = _curve(depth=5)
    assert_close(ref.ratio, _curve().ratio[:6])  # depth 5 is the first 5 layers of depth 12
    assert_close(relative_residual(x), ref.ratio[-1], rtol=0, atol=1e-14)  # the same network
    spread = (x - x[0]).abs().max() / x.abs().max()
    assert spread < 1e-12  # every token equals token 0
    s = ref.singular_values[-1]
    assert s[1] / s[0] < 1e-12  # rank 1: one singular value left


@pytest.mark.parametrize("seed", range(4))
def test_best_rank1_error_is_eckart_young(seed: int, device: torch.device) -> None:
    g = torch.Generator().manual_seed(seed)
    n, d = (int(v) for v in torch.randint(2, 9, (2,), generator=g))
    x = torch.randn(3, n, d, generator=g, dtype=F64).to(device)
    u, s, vh = torch.linalg.svd(x, full_matrices=False)
    rank1 = s[..., :1, None] * u[..., :, :1] @ vh[..., :1, :]  # σ_1 u_1 v_1^T
    assert_close(best_rank1_error(x), (x - rank1).flatten(1).norm(dim=-1))
    for _ in range(20):  # no other rank-1 matrix does better
        a = torch.randn(3, n, 1, generator=g, dtype=F64).to(device) @ torch.randn(3, 1, d, generator=g, dtype=F64).to(
            device
        )
        assert torch.all((x - a).flatten(1).norm(dim=-1) >= best_rank1_error(x))
    assert torch.all(best_rank1_error(x) <= token_residual(x).flatten(1).norm(dim=-1) + 1e-12)


def test_token_residual_removes_the_mean_token() -> None:
    x = torch.randn(5, 7, dtype=F64)
    res = token_residual(x)
    assert_close(res.mean(0), torch.zeros(7, dtype=F64))
    assert_close(token_residual(x + torch.randn(7, dtype=F64)), res)  # a shared vector is invisible
    assert_close(relative_residual(3.0 * x), relative_residual(x))  # scale-free
    same = torch.randn(7, dtype=F64).expand(5, 7)
    assert relative_residual(same) < 1e-15


def test_rank_one_is_not_the_same_as_identical_tokens() -> None:
    u, v = torch.tensor([1.0, -2.0, 3.0], dtype=F64), torch.randn(4, dtype=F64)
    x = u[:, None] * v  # rank 1, but the tokens are different multiples of v
    assert best_rank1_error(x) < 1e-12
    assert relative_residual(x) > 0.9  # far from "all tokens the same vector"


def test_curve_shapes() -> None:
    out = _curve(depth=3, n=5, d=7)
    assert out.ratio.shape == (4,) and out.singular_values.shape == (4, 5)
    assert torch.all(out.singular_values[:, :-1] >= out.singular_values[:, 1:])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"depth": -1}, "depth=-1 must be >= 0"),
        ({"depth": 2, "n": 1}, "n=1 must be >= 2"),
        ({"depth": 2, "d": 0}, "d=0 must be >= 1"),
    ],
)
def test_rejects_bad_sizes(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        rank_collapse_curve(**kwargs)


def test_token_residual_rejects_vectors() -> None:
    with pytest.raises(ValueError, match=r"x must be \(\.\.\., n, d\), got shape \(4,\)"):
        token_residual(torch.randn(4))
