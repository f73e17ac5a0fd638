"""The sqrt(d_k) argument: variance of q·k, the softmax Jacobian, gradient collapse."""

from __future__ import annotations

import math

import pytest
import torch

from snippets.attention.scaling import dot_product_variance, softmax_grad_norm, softmax_jacobian
from tests.conftest import assert_close


@pytest.mark.parametrize("d_k", [4, 64, 512])
def test_variance_is_d_k(d_k: int) -> None:
    g = torch.Generator().manual_seed(0)
    assert dot_product_variance(d_k, 100_000, generator=g) == pytest.approx(d_k, rel=0.05)


def test_jacobian_matches_autograd(device: torch.device) -> None:
    g = torch.Generator().manual_seed(1)
    for n in (1, 3, 7):
        x = torch.randn(n, generator=g, dtype=torch.float64).to(device)
        ref = torch.autograd.functional.jacobian(lambda t: torch.softmax(t, -1), x)
        assert_close(softmax_jacobian(torch.softmax(x, -1)), ref)


def test_jacobian_vanishes_for_one_hot() -> None:
    s = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    assert torch.count_nonzero(softmax_jacobian(s)) == 0


def test_unscaled_gradient_collapses_scaled_does_not() -> None:
    g = torch.Generator().manual_seed(0)
    raw4, _ = softmax_grad_norm(4, scaled=False, generator=g)
    raw512, peak512 = softmax_grad_norm(512, scaled=False, generator=g)
    fix4, _ = softmax_grad_norm(4, scaled=True, generator=g)
    fix512, fpeak512 = softmax_grad_norm(512, scaled=True, generator=g)
    assert raw512 < 0.35 * raw4  # without scaling the Jacobian shrinks several-fold
    assert math.isclose(fix512, fix4, rel_tol=0.1)  # with scaling it does not depend on d_k
    assert peak512 > 0.8 > fpeak512  # unscaled softmax is nearly one-hot


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="need d_k > 0"):
        dot_product_variance(0)
    with pytest.raises(ValueError, match="non-empty last dim"):
        softmax_jacobian(torch.ones(0))
    with pytest.raises(ValueError, match="n_keys > 1"):
        softmax_grad_norm(4, 1, scaled=True)
