"""Shared fixtures: every numerical test runs on CPU and, when available, on CUDA."""

from __future__ import annotations

import pytest
import torch

CUDA = torch.cuda.is_available()


@pytest.fixture(
    params=["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not CUDA, reason="no CUDA device"))]
)
def device(request: pytest.FixtureRequest) -> torch.device:
    """The device a numerical test runs on."""
    return torch.device(request.param)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, **kw) -> None:
    """float64 comparison with the tight tolerances used across the suite."""
    kw.setdefault("rtol", 1e-10)
    kw.setdefault("atol", 1e-12)
    torch.testing.assert_close(actual, expected, **kw)
