"""Mixed precision: float formats, underflow, ScratchGradScaler vs torch.amp.GradScaler, autocast dtypes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from snippets.pytorch.amp import (
    ScratchGradScaler,
    amp_train_step,
    format_limits,
    precision_comparison,
    two_spirals,
    underflow_demo,
)
from tests.conftest import CUDA, assert_close


def test_format_limits_match_the_ieee_layouts() -> None:
    rows = {r.dtype: r for r in format_limits()}
    assert (rows[torch.float16].exponent_bits, rows[torch.float16].mantissa_bits) == (5, 10)
    assert (rows[torch.bfloat16].exponent_bits, rows[torch.bfloat16].mantissa_bits) == (8, 7)
    assert (rows[torch.float32].exponent_bits, rows[torch.float32].mantissa_bits) == (8, 23)
    assert rows[torch.float16].max == 65504.0
    assert rows[torch.float16].smallest_normal == 2.0**-14  # ≈ 6.1e-5
    assert rows[torch.float16].smallest_subnormal == 2.0**-24  # ≈ 6.0e-8
    assert rows[torch.bfloat16].smallest_normal == rows[torch.float32].smallest_normal  # same exponent range
    for r in rows.values():  # the computed subnormal really is the smallest positive value of the format
        tiny = torch.tensor(r.smallest_subnormal, dtype=r.dtype)
        assert tiny > 0 and (tiny / 2) == 0
        assert torch.tensor(1.0, dtype=r.dtype) + r.eps != 1.0
        assert torch.tensor(1.0, dtype=r.dtype) + r.eps / 4 == 1.0
    with pytest.raises(ValueError, match="floating-point dtypes"):
        format_limits([torch.int32])


def test_float16_overflows_above_65504() -> None:
    assert torch.isinf(torch.tensor(70000.0).half())
    assert torch.tensor(70000.0).bfloat16().isfinite()


def test_underflow_and_loss_scaling() -> None:
    g = torch.tensor([1e-3, 1e-6, 1e-8, 1e-10])
    out = underflow_demo(g)
    assert out["plain"][2] == 0 and out["plain"][3] == 0  # flushed to zero in float16
    assert out["plain"][1] != 0 and abs(out["plain"][1] - 1e-6) / 1e-6 > 1e-3  # subnormal: imprecise
    assert_close(out["scaled"][:3], g[:3], rtol=1e-3, atol=0)  # scaled by 2^16: all survive
    assert out["scaled"][3] != 0
    assert_close(out["bf16"], g, rtol=1e-2, atol=0)  # bfloat16: no underflow, ~3 significant digits
    with pytest.raises(ValueError, match="scale must be positive"):
        underflow_demo(g, scale=0.0)


def _models(seed: int):
    torch.manual_seed(seed)
    a = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()
    b = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()
    b.load_state_dict(a.state_dict())
    return a, b


@pytest.mark.parametrize("seed, growth_interval, init_scale", [(0, 3, 2.0**16), (1, 2, 1024.0), (2, 5, 3.0)])
def test_matches_torch_grad_scaler(seed: int, growth_interval: int, init_scale: float) -> None:
    """Same scale sequence, same skipped steps and the same weights as torch.amp.GradScaler('cpu'),
    with inf/NaN gradients injected at some steps."""
    a, b = _models(seed)
    opt_a = torch.optim.SGD(a.parameters(), lr=0.1, momentum=0.9)
    opt_b = torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9)
    ours = ScratchGradScaler(init_scale=init_scale, growth_interval=growth_interval)
    ref = torch.amp.GradScaler("cpu", init_scale=init_scale, growth_interval=growth_interval)
    g = torch.Generator().manual_seed(seed)
    bad = {2: float("inf"), 3: float("nan"), 9: float("-inf")}
    scales, skipped = [], []
    for step in range(14):
        x = torch.randn(4, 5, generator=g, dtype=torch.float64)
        for model, opt, scaler in ((a, opt_a, ours), (b, opt_b, ref)):
            opt.zero_grad()
            loss = model(x).pow(2).mean()
            scaler.scale(loss).backward()
            if step in bad:
                model[0].weight.grad[0, 0] = bad[step]  # an overflow in one gradient element
            before = model[2].bias.detach().clone()
            scaler.step(opt)
            scaler.update()
            if scaler is ours:
                skipped.append(torch.equal(before, model[2].bias))
        assert ours.get_scale() == ref.get_scale()
        assert_close(a[0].weight, b[0].weight)
        scales.append(ours.get_scale())
    assert skipped == [step in bad for step in range(14)]
    assert ours.state_dict() == ref.state_dict()
    assert any(b < a for a, b in zip(scales, scales[1:]))  # it backed off ...
    assert any(b > a for a, b in zip(scales, scales[1:]))  # ... and grew again


def test_state_dict_loads_into_each_other() -> None:
    ref = torch.amp.GradScaler("cpu", init_scale=256.0, growth_interval=7)
    ref.scale(torch.ones(()))  # the scale tensor is created lazily
    ours = ScratchGradScaler()
    ours.load_state_dict(ref.state_dict())
    assert ours.state_dict() == ref.state_dict()
    back = torch.amp.GradScaler("cpu")
    back.load_state_dict(ours.state_dict())
    assert back.get_scale() == 256.0 and back.get_growth_interval() == 7
    with pytest.raises(ValueError, match="missing"):
        ours.load_state_dict({"scale": 1.0})


def test_scaler_protocol_errors() -> None:
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    s = ScratchGradScaler()
    with pytest.raises(RuntimeError, match="No inf checks"):
        s.update()
    s.scale(model(torch.ones(1, 2)).sum()).backward()
    s.unscale_(opt)
    with pytest.raises(RuntimeError, match="already been called"):
        s.unscale_(opt)
    half = nn.Linear(2, 1).half()
    half(torch.ones(1, 2).half()).sum().backward()
    with pytest.raises(ValueError, match="FP16 gradients"):
        ScratchGradScaler().unscale_(torch.optim.SGD(half.parameters(), lr=0.1))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"init_scale": 0.0}, "init_scale"),
        ({"init_scale": float("inf")}, "init_scale"),
        ({"growth_factor": 1.0}, "growth_factor"),
        ({"backoff_factor": 1.0}, "backoff_factor"),
        ({"growth_interval": 0}, "growth_interval"),
        ({"growth_interval": 2.5}, "growth_interval"),
    ],
)
def test_rejected_scaler_settings(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ScratchGradScaler(**kwargs)


def test_unscale_divides_exactly_by_the_scale() -> None:
    model = nn.Linear(3, 2).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(4, 3, dtype=torch.float64)
    model(x).sum().backward()
    plain = [p.grad.clone() for p in model.parameters()]
    opt.zero_grad()
    s = ScratchGradScaler(init_scale=2.0**10)
    s.scale(model(x).sum()).backward()
    s.unscale_(opt)
    for p, g in zip(model.parameters(), plain):
        assert_close(p.grad, g)


def test_cpu_autocast_dtypes() -> None:
    """On CPU, autocast(bfloat16) runs matmul-like ops in bfloat16, casts losses up to float32 and leaves
    other ops in their input's dtype (CUDA's list differs: see test_cuda_autocast_dtypes)."""
    x = torch.randn(4, 8)
    lin = nn.Linear(8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = lin(x)
        assert h.dtype == torch.bfloat16  # linear / matmul: lower precision
        assert (x @ x.T).dtype == torch.bfloat16
        assert torch.bmm(x[None], x.T[None]).dtype == torch.bfloat16
        assert F.cross_entropy(h, torch.zeros(4, dtype=torch.long)).dtype == torch.float32  # losses: float32
        assert F.mse_loss(h, x).dtype == torch.float32
        assert torch.softmax(h, -1).dtype == torch.bfloat16  # not listed on CPU: runs in the input dtype
        assert torch.softmax(x, -1).dtype == torch.float32
        assert h.sum().dtype == torch.bfloat16
        assert (h + x).dtype == torch.float32  # ordinary type promotion
    assert lin.weight.dtype == torch.float32  # the parameters themselves stay float32 (master weights)


@pytest.mark.skipif(not CUDA, reason="no CUDA device")
def test_cuda_autocast_dtypes() -> None:
    x = torch.randn(4, 8, device="cuda")
    lin = nn.Linear(8, 8).cuda()
    with torch.autocast("cuda", dtype=torch.float16):
        h = lin(x)
        assert h.dtype == torch.float16
        assert torch.softmax(h, -1).dtype == torch.float32  # CUDA keeps softmax, sums, norms in float32
        assert h.sum().dtype == torch.float32
        assert nn.LayerNorm(8).cuda()(h).dtype == torch.float32


def test_bf16_autocast_training_matches_float32_closely() -> None:
    res = precision_comparison(steps=150, n=256, hidden=32)
    f32, bf16 = res["float32"], res["bfloat16"]
    assert f32["losses"][-1] < 0.5 * f32["losses"][0]  # both learn
    assert bf16["losses"][-1] < 0.5 * bf16["losses"][0]
    assert f32["losses"] != bf16["losses"]  # bfloat16 really ran: not bit-identical ...
    assert abs(f32["accuracy"] - bf16["accuracy"]) <= 0.05  # ... but the same result
    assert abs(f32["test_loss"] - bf16["test_loss"]) <= 0.1


@pytest.mark.skipif(not CUDA, reason="no CUDA device")
def test_fp16_grad_scaler_training_on_cuda() -> None:
    res = precision_comparison(steps=150, n=256, hidden=32, device="cuda")
    assert abs(res["float32"]["accuracy"] - res["float16"]["accuracy"]) <= 0.05


def test_amp_train_step_with_scaler_matches_plain_float32() -> None:
    """With float32 autocast disabled, the scaled step equals the plain step (scales are powers of two)."""
    g = torch.Generator().manual_seed(0)
    x, y = two_spirals(32, g)
    torch.manual_seed(0)
    a = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 2))
    b = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 2))
    b.load_state_dict(a.state_dict())
    oa, ob = (torch.optim.SGD(m.parameters(), lr=0.1) for m in (a, b))
    for _ in range(3):
        amp_train_step(a, F.cross_entropy, x, y, oa, None, None)
        amp_train_step(b, F.cross_entropy, x, y, ob, ScratchGradScaler(), None)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="n must be >= 2"):
        two_spirals(1, g)
