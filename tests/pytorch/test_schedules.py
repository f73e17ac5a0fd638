"""Pure learning-rate schedules vs torch.optim.lr_scheduler over full trajectories; the 1-D demo."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch.optim import lr_scheduler as L

from snippets.pytorch.schedules import (
    bumpy,
    bumpy_grad,
    cosine_annealing,
    cosine_warm_restarts,
    descend,
    exponential_lr,
    linear_warmup,
    multistep_lr,
    noam,
    one_cycle,
    step_lr,
    torch_lrs,
)
from tests.conftest import assert_close

F64 = torch.float64
N = 150  # steps compared
LR = 0.3

CASES = {
    "StepLR": (lambda o: L.StepLR(o, 7, 0.5), lambda t: step_lr(t, LR, 7, 0.5)),
    "StepLR-default-gamma": (lambda o: L.StepLR(o, 30), lambda t: step_lr(t, LR, 30)),
    "MultiStepLR": (
        lambda o: L.MultiStepLR(o, [10, 25, 25, 60], 0.3),
        lambda t: multistep_lr(t, LR, [10, 25, 25, 60], 0.3),
    ),
    "ExponentialLR": (lambda o: L.ExponentialLR(o, 0.97), lambda t: exponential_lr(t, LR, 0.97)),
    "CosineAnnealingLR": (lambda o: L.CosineAnnealingLR(o, 40, 0.01), lambda t: cosine_annealing(t, LR, 40, 0.01)),
    "CosineAnnealingLR-full": (lambda o: L.CosineAnnealingLR(o, N), lambda t: cosine_annealing(t, LR, N)),
    "LambdaLR-warmup": (
        lambda o: L.LambdaLR(o, lambda s: linear_warmup(s, 1.0, 15)),
        lambda t: linear_warmup(t, LR, 15),
    ),
    "LambdaLR-noam": (
        lambda o: L.LambdaLR(o, lambda s: noam(s + 1, 512, 20)),
        lambda t: LR * noam(t + 1, 512, 20),
    ),
    "CosineAnnealingWarmRestarts-Tmult2": (
        lambda o: L.CosineAnnealingWarmRestarts(o, 10, 2, 0.001),
        lambda t: cosine_warm_restarts(t, LR, 10, 2, 0.001),
    ),
    "CosineAnnealingWarmRestarts-Tmult1": (
        lambda o: L.CosineAnnealingWarmRestarts(o, 13),
        lambda t: cosine_warm_restarts(t, LR, 13),
    ),
    "CosineAnnealingWarmRestarts-Tmult3": (
        lambda o: L.CosineAnnealingWarmRestarts(o, 4, 3),
        lambda t: cosine_warm_restarts(t, LR, 4, 3),
    ),
    "OneCycleLR": (lambda o: L.OneCycleLR(o, LR, total_steps=N), lambda t: one_cycle(t, LR, N)),
    "OneCycleLR-custom": (
        lambda o: L.OneCycleLR(o, LR, total_steps=N + 7, pct_start=0.25, div_factor=10.0, final_div_factor=100.0),
        lambda t: one_cycle(t, LR, N + 7, 0.25, 10.0, 100.0),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_matches_torch_scheduler_over_full_trajectory(name: str) -> None:
    make, ours = CASES[name]
    ref = torch.tensor(torch_lrs(make, N, base_lr=LR), dtype=F64)
    assert_close(torch.tensor([ours(t) for t in range(N)], dtype=F64), ref)


def test_one_cycle_end_points_and_momentum_cycling() -> None:
    total = 100
    assert math.isclose(one_cycle(0, 1.0, total), 1 / 25)
    assert one_cycle(29, 1.0, total) == 1.0  # the peak: step pct_start * total - 1
    assert math.isclose(one_cycle(total - 1, 1.0, total), 1 / 25 / 1e4)
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=1.0, momentum=0.9)
    sched = L.OneCycleLR(opt, 1.0, total_steps=total)
    moms = []
    for _ in range(total):
        moms.append(opt.param_groups[0]["momentum"])
        opt.step()
        sched.step()
    assert math.isclose(moms[0], 0.95) and math.isclose(moms[29], 0.85) and math.isclose(moms[-1], 0.95)
    with pytest.raises(ValueError, match="Tried to step 101 times"):
        sched.step()


def test_warm_restarts_cycle_lengths_and_jumps() -> None:
    lrs = [cosine_warm_restarts(t, 1.0, 10, 2) for t in range(70)]
    assert [t for t in range(70) if lrs[t] == 1.0] == [0, 10, 30]  # cycles of 10, 20, 40 steps
    assert lrs[9] < 0.03 and lrs[29] < 0.01


def test_noam_peaks_at_warmup_and_decays_as_inverse_sqrt() -> None:
    vals = [noam(t, 512, 400) for t in range(1, 2001)]
    assert max(range(len(vals)), key=vals.__getitem__) + 1 == 400
    assert math.isclose(noam(1600, 512, 400) / noam(400, 512, 400), 0.5)
    assert math.isclose(noam(200, 512, 400) / noam(400, 512, 400), 0.5)  # linear before the peak


def test_cosine_annealing_climbs_again_after_T_max() -> None:
    assert cosine_annealing(40, 1.0, 40) == 0.0
    assert math.isclose(cosine_annealing(60, 1.0, 40), 0.5)
    assert math.isclose(cosine_annealing(80, 1.0, 40), 1.0)


@pytest.mark.parametrize("name", ["StepLR", "CosineAnnealingLR", "CosineAnnealingWarmRestarts-Tmult2", "OneCycleLR"])
def test_scheduler_state_dict_round_trip_continues_identically(name: str) -> None:
    make, _ = CASES[name]

    def build():
        p = torch.zeros(1, requires_grad=True)
        opt = torch.optim.SGD([p], lr=LR, momentum=0.9)
        return opt, make(opt)

    opt, sched = build()
    for _ in range(37):
        opt.step()
        sched.step()
    opt2, sched2 = build()  # fresh, at step 0
    sched2.load_state_dict(sched.state_dict())
    opt2.load_state_dict(opt.state_dict())
    assert sched2.last_epoch == sched.last_epoch == 37
    for _ in range(40):
        assert sched2.get_last_lr() == sched.get_last_lr()
        assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
        for o, s in ((opt, sched), (opt2, sched2)):
            o.step()
            s.step()


def test_lambda_lr_state_dict_keeps_no_plain_function() -> None:
    p = torch.zeros(1, requires_grad=True)
    sched = L.LambdaLR(torch.optim.SGD([p], lr=LR), lambda s: linear_warmup(s, 1.0, 5))
    assert sched.state_dict()["lr_lambdas"] == [None]  # the lambda itself is not saved


def test_scheduler_step_before_optimizer_step_warns() -> None:
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=LR)
    sched = L.StepLR(opt, 1)
    with pytest.warns(UserWarning, match=r"Detected call of `lr_scheduler.step\(\)` before `optimizer.step\(\)`"):
        sched.step()
    opt2 = torch.optim.SGD([p], lr=LR)
    sched2 = L.StepLR(opt2, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt2.step()
        sched2.step()  # the right order: silent
    # the wrong order skips the first value of the schedule
    wrong = []
    opt3 = torch.optim.SGD([p], lr=1.0)
    sched3 = L.StepLR(opt3, 1, 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(3):
            sched3.step()
            wrong.append(opt3.param_groups[0]["lr"])
            opt3.step()
    assert wrong == [0.5, 0.25, 0.125]  # the optimizer never ran with lr = 1.0
    assert torch_lrs(lambda o: L.StepLR(o, 1, 0.5), 3) == [1.0, 0.5, 0.25]


def test_fixed_vs_cyclic_learning_rate_on_bumpy_landscape() -> None:
    starts = torch.linspace(-4.9, 4.9, 99, dtype=F64)

    def share(lrs: list[float]) -> float:
        return (descend(starts, lrs)[-1].abs() < 0.5).double().mean().item()

    fixed = share([0.01] * 300)
    sgdr = share([cosine_warm_restarts(t, 0.15, 50) for t in range(300)])
    assert fixed < 0.15  # only the starts already in the middle basin
    assert sgdr > 0.95
    # a heuristic, not a guarantee: other peaks/periods help far less, a big fixed rate never settles
    assert share([cosine_warm_restarts(t, 0.15, 30) for t in range(300)]) < 0.3
    assert share([cosine_warm_restarts(t, 0.2, 50) for t in range(300)]) < 0.3
    assert share([0.15] * 300) < 0.3


def test_bumpy_grad_is_the_derivative() -> None:
    x = torch.linspace(-3, 3, 41, dtype=F64, requires_grad=True)
    (g,) = torch.autograd.grad(bumpy(x).sum(), x)
    assert_close(bumpy_grad(x.detach()), g)
    assert bumpy(torch.zeros(1, dtype=F64)).item() == 0.0
    assert descend(torch.zeros(3, dtype=F64), [0.1] * 5).shape == (6, 3)


# ---------------------------------------------------------------- rejected input


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: step_lr(3, LR, 0), "step_size must be positive, got step_size=0"),
        (lambda: step_lr(-1, LR, 5), "t must be an integer step >= 0, got t=-1"),
        (lambda: step_lr(1.5, LR, 5), "t must be an integer step"),
        (lambda: multistep_lr(3, LR, [0, 5]), "milestones must be positive"),
        (lambda: exponential_lr(3, LR, 0.0), "gamma must be positive"),
        (lambda: cosine_annealing(3, LR, 0), "T_max must be positive, got T_max=0"),
        (lambda: linear_warmup(3, LR, 0), "warmup must be positive, got warmup=0"),
        (lambda: noam(0, 512, 400), "noam counts steps from 1"),
        (lambda: noam(1, 0, 400), "d_model must be positive"),
        (lambda: cosine_warm_restarts(3, LR, 0), "T_0 must be a positive integer, got T_0=0"),
        (lambda: cosine_warm_restarts(3, LR, 10, 0), "T_mult must be an integer >= 1, got T_mult=0"),
        (lambda: cosine_warm_restarts(3, LR, 10, 1.5), "T_mult must be an integer >= 1"),
        (lambda: one_cycle(101, LR, 100), "t=101 is past total_steps=100"),
        (lambda: one_cycle(1, LR, 100, pct_start=1.2), "pct_start must lie in"),
        (lambda: one_cycle(1, LR, 2, pct_start=0.3), "pct_start \\* total_steps must exceed 1"),
        (lambda: descend(torch.zeros(2, 2), [0.1]), "x0 must be 1-D"),
    ],
)
def test_rejects_bad_input(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def test_torch_accepts_step_size_zero_and_fails_later() -> None:
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=LR)
    sched = L.StepLR(opt, 0)  # no check at construction
    opt.step()
    with pytest.raises(ZeroDivisionError):
        sched.step()
    with pytest.raises(ValueError, match="Expected positive integer T_0, but got 0"):
        L.CosineAnnealingWarmRestarts(opt, 0)
