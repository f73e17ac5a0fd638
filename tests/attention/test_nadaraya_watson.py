"""Nadaraya–Watson regression vs a brute-force double loop and the normalized-kernel form."""

from __future__ import annotations

import math

import pytest
import torch

from snippets.attention.nadaraya_watson import (
    NWKernelRegression,
    gaussian_kernel,
    kernel_regression,
    leave_one_out_mask,
    make_dataset,
    nw_regression,
    target_fn,
    train_nw,
)
from tests.conftest import assert_close

F64 = torch.float64


def _data(seed: int, device: torch.device, n: int = 50):
    x, y, xt, yt = make_dataset(n, generator=torch.Generator().manual_seed(seed), dtype=F64)
    return x.to(device), y.to(device), xt.to(device), yt.to(device)


def _brute_force(x_query: list[float], x_keys: list[float], y: list[float], w: torch.Tensor) -> torch.Tensor:
    """f(x) = sum_i exp(-((x - x_i) w)^2 / 2) y_i / sum_j exp(-((x - x_j) w)^2 / 2), one term at a time."""
    preds = []
    for xq in x_query:
        num = den = 0.0
        for xi, yi in zip(x_keys, y):
            k = torch.exp(-0.5 * ((xq - xi) * w) ** 2)
            num, den = num + k * yi, den + k
        preds.append(num / den)
    return torch.stack(preds).reshape(-1)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("w", [0.3, 1.0, 4.0])
def test_matches_brute_force_double_loop(seed: int, w: float, device: torch.device) -> None:
    x, y, xt, _ = _data(seed, device, n=12)
    xq = xt[::7]
    w_ours = torch.tensor([w], dtype=F64, device=device, requires_grad=True)
    w_ref = torch.tensor([w], dtype=F64, device=device, requires_grad=True)
    ours, _ = nw_regression(xq, x, y, w_ours)
    ref = _brute_force(xq.tolist(), x.tolist(), y.tolist(), w_ref)
    assert_close(ours, ref)
    grad = torch.randn_like(ours)
    ours.backward(grad)
    ref.backward(grad)
    assert_close(w_ours.grad, w_ref.grad)


@pytest.mark.parametrize("w", [0.5, 1.0, 3.0])
def test_softmax_form_equals_normalized_gaussian_kernel(w: float, device: torch.device) -> None:
    x, y, xt, _ = _data(1, device)
    pred, weights = nw_regression(xt, x, y, w)
    assert_close(pred, kernel_regression(xt, x, y, lambda u: gaussian_kernel(u * w)))
    k = gaussian_kernel((xt[:, None] - x[None, :]) * w)
    assert_close(weights, k / k.sum(-1, keepdim=True))  # K(x - x_i) / sum_j K(x - x_j)
    peak = torch.tensor([1 / math.sqrt(2 * math.pi)], dtype=F64)
    assert_close(gaussian_kernel(torch.zeros(1, dtype=F64)), peak)


def test_batched_inputs_match_one_by_one(device: torch.device) -> None:
    sets = [_data(s, device, n=20) for s in range(3)]
    x, y, xt = (torch.stack([d[i] for d in sets]) for i in range(3))
    pred, _ = nw_regression(xt, x, y, 2.0)
    for b, (xb, yb, xtb, _) in enumerate(sets):
        assert_close(pred[b], nw_regression(xtb, xb, yb, 2.0)[0])


def test_large_w_is_nearest_neighbour_small_w_is_the_mean(device: torch.device) -> None:
    x, y, xt, _ = _data(2, device)
    dist = (xt[:, None] - x[None, :]).abs()
    two = dist.sort(-1).values[:, :2].pow(2)
    assert float((two[:, 1] - two[:, 0]).min()) > 1e-5  # no near-ties in this sample
    pred, weights = nw_regression(xt, x, y, w=1e4)
    assert torch.equal(weights.argmax(-1), dist.argmin(-1))
    assert_close(pred, y[dist.argmin(-1)])  # each query copies its nearest training target
    pred0, _ = nw_regression(xt, x, y, w=1e-9)
    assert_close(pred0, y.mean().expand_as(pred0), rtol=0, atol=1e-12)  # w -> 0: uniform pooling


def test_softmax_form_survives_where_the_kernel_ratio_underflows(device: torch.device) -> None:
    x, y, _, _ = _data(0, device)
    far = torch.tensor([60.0], dtype=F64, device=device)  # exp(-(55)^2/2) underflows to 0
    assert torch.isnan(kernel_regression(far, x, y)).all()
    pred, weights = nw_regression(far, x, y)
    assert torch.isfinite(pred).all() and y.min() <= pred.item() <= y.max()
    assert int(weights.argmax()) == int(x.argmax())  # the nearest key gets the largest weight


def test_leave_one_out_mask_equals_dropping_the_diagonal(device: torch.device) -> None:
    """d2l builds the (n, n-1) table of *other* points explicitly; the mask gives the same result."""
    x, y, _, _ = _data(3, device, n=15)
    n = len(x)
    pred, weights = nw_regression(x, x, y, 2.5, leave_one_out_mask(n, device=device))
    assert torch.all(weights.diagonal() == 0)
    keep = ~torch.eye(n, dtype=torch.bool, device=device)
    others_x, others_y = x.expand(n, n)[keep].reshape(n, n - 1), y.expand(n, n)[keep].reshape(n, n - 1)
    ref, _ = nw_regression(x[:, None], others_x, others_y, 2.5)
    assert_close(pred, ref[:, 0])


def test_without_leave_one_out_the_loss_rewards_memorising(device: torch.device) -> None:
    """Why leave-one-out: with itself among the keys, a point's loss -> 0 as w grows (interpolating
    the noise), so w would grow forever; the leave-one-out loss has an interior minimum."""
    x, y, _, _ = _data(0, device)
    ws = torch.logspace(-1, 3, 41, dtype=F64).tolist()
    loo = leave_one_out_mask(len(x), device=device)
    full = torch.tensor([(nw_regression(x, x, y, w)[0] - y).pow(2).mean().item() for w in ws])
    held = torch.tensor([(nw_regression(x, x, y, w, loo)[0] - y).pow(2).mean().item() for w in ws])
    assert bool((full[1:] <= full[:-1] + 1e-15).all()) and full[-1] < 1e-2  # keeps falling to ~0
    best = int(held.argmin())
    assert 0 < best < len(ws) - 1 and 2.0 < ws[best] < 6.0  # interior optimum (w ≈ 3.5)
    assert held[-1] > 1.5 * held[best]


def test_training_lowers_the_loss_and_the_test_error(device: torch.device) -> None:
    x, y, xt, yt = _data(0, device)
    model, losses = train_nw(x, y, epochs=20)  # tiny variant: w is within 0.02 of the optimum by then
    assert losses[-1] < 0.7 * losses[0]  # 32.9 -> 21.2 (sum of squared errors)
    assert all(b <= a + 1e-12 for a, b in zip(losses, losses[1:]))
    assert 3.0 < model.w.item() < 4.0  # the leave-one-out optimum found by the grid above
    with torch.no_grad():
        mse_learned = (model(xt, x, y) - yt).pow(2).mean().item()
    mse_w1 = (nw_regression(xt, x, y)[0] - yt).pow(2).mean().item()
    assert mse_learned < 0.3 * mse_w1  # 0.11 vs 0.68 on the noise-free test curve
    assert model.attention_weights.shape == (len(xt), len(x))


def test_module_gradcheck(device: torch.device) -> None:
    x, y, xt, _ = _data(4, device, n=8)
    model = NWKernelRegression(1.3, dtype=F64).to(device)
    assert torch.autograd.gradcheck(lambda w: nw_regression(xt[:5], x, y, w)[0], (model.w,))


def test_dataset_is_reproducible_and_follows_the_target() -> None:
    a = make_dataset(generator=torch.Generator().manual_seed(7))
    b = make_dataset(generator=torch.Generator().manual_seed(7))
    for t, u in zip(a, b):
        assert torch.equal(t, u)
    x, y, xt, yt = make_dataset(2000, generator=torch.Generator().manual_seed(0), dtype=F64)
    assert bool((x[1:] >= x[:-1]).all()) and 0 <= x.min() and x.max() < 5
    assert abs((y - target_fn(x)).std().item() - 0.5) < 0.03  # noise N(0, 0.5^2)
    assert_close(yt, 2 * torch.sin(xt) + xt**0.8)


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"x_keys \(5,\) and y_values \(4,\) must match"):
        nw_regression(torch.randn(3), torch.randn(5), torch.randn(4))
    with pytest.raises(ValueError, match="leave-one-out needs at least 2 points, got n=1"):
        leave_one_out_mask(1)
    with pytest.raises(ValueError, match="n_train=0"):
        make_dataset(0)
    with pytest.raises(ValueError, match="every key masked"):
        none = torch.zeros(1, 1, dtype=torch.bool)
        nw_regression(torch.randn(1), torch.randn(1), torch.randn(1), mask=none)


def test_learned_w_concentrates_the_weights(device: torch.device) -> None:
    """The page's heatmaps: the learned w (≈ 3.5) puts far more weight near the query than w = 1."""
    x, y, xt, _ = _data(0, device)
    model, _ = train_nw(x, y, epochs=20)
    with torch.no_grad():
        model(xt, x, y)
    learned = model.attention_weights
    _, fixed = nw_regression(xt, x, y, 1.0)

    def entropy(w: torch.Tensor) -> float:
        return float(-(w * w.clamp_min(1e-300).log()).sum(-1).mean())

    assert learned.max(-1).values.mean() > 2 * fixed.max(-1).values.mean()
    assert entropy(learned) < entropy(fixed) - 1.0
    near = (xt[:, None] - x[None, :]).abs() < 0.5  # training points within 0.5 of the query
    assert float((learned * near).sum(-1).mean()) > 0.9 > float((fixed * near).sum(-1).mean())
