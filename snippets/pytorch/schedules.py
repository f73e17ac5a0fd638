"""Learning-rate schedules as pure functions of the step ``t``, equal to ``torch.optim.lr_scheduler``,
and a 1-D non-convex landscape on which a fixed and a cyclic learning rate can be compared.

References: ``torch/optim/lr_scheduler.py`` (PyTorch 2.13); Loshchilov & Hutter, *SGDR: Stochastic
Gradient Descent with Warm Restarts*, ICLR 2017; Smith, *Cyclical Learning Rates for Training Neural
Networks*, WACV 2017; Smith & Topin, *Super-Convergence* (one-cycle), 2017; Vaswani et al.,
*Attention Is All You Need*, 2017, §5.3 (the "Noam" warm-up).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

__all__ = [
    "step_lr",
    "multistep_lr",
    "exponential_lr",
    "cosine_annealing",
    "linear_warmup",
    "noam",
    "cosine_warm_restarts",
    "one_cycle",
    "torch_lrs",
    "bumpy",
    "bumpy_grad",
    "descend",
]


def _check_t(t: int) -> None:
    if not isinstance(t, int) or t < 0:
        raise ValueError(f"t must be an integer step >= 0, got t={t!r}")


def _positive(**kw: float) -> None:
    for name, value in kw.items():
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {name}={value}")


# --8<-- [start:decay]
def step_lr(t: int, base_lr: float, step_size: int, gamma: float = 0.1) -> float:
    """``StepLR``: multiply by ``gamma`` every ``step_size`` steps, η_t = η_0 γ^⌊t/s⌋."""
    _check_t(t)
    _positive(step_size=step_size)
    return base_lr * gamma ** (t // step_size)


def multistep_lr(t: int, base_lr: float, milestones: Sequence[int], gamma: float = 0.1) -> float:
    """``MultiStepLR``: multiply by ``gamma`` at each milestone reached, η_t = η_0 γ^{#{m ≤ t}}."""
    _check_t(t)
    if any(m <= 0 for m in milestones):
        raise ValueError(f"milestones must be positive steps, got milestones={list(milestones)}")
    return base_lr * gamma ** bisect.bisect_right(sorted(milestones), t)


def exponential_lr(t: int, base_lr: float, gamma: float) -> float:
    """``ExponentialLR``: η_t = η_0 γ^t."""
    _check_t(t)
    _positive(gamma=gamma)
    return base_lr * gamma**t


def cosine_annealing(t: int, base_lr: float, T_max: int, eta_min: float = 0.0) -> float:
    """``CosineAnnealingLR``: η_t = η_min + ½(η_0 − η_min)(1 + cos(π t / T_max)).

    Past ``T_max`` it climbs again (period ``2·T_max``), exactly like torch's scheduler.
    """
    _check_t(t)
    _positive(T_max=T_max)
    return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * t / T_max)) / 2


# --8<-- [end:decay]


# --8<-- [start:warmup]
def linear_warmup(t: int, base_lr: float, warmup: int) -> float:
    """Linear warm-up to ``base_lr`` over ``warmup`` steps, then constant: η_t = η_0 min(1, (t+1)/w)."""
    _check_t(t)
    _positive(warmup=warmup)
    return base_lr * min(1.0, (t + 1) / warmup)


def noam(t: int, d_model: int, warmup: int, factor: float = 1.0) -> float:
    """Transformer ("Noam") rate, η = factor · d_model^-0.5 · min(t^-0.5, t · w^-1.5), for t ≥ 1.

    Rises linearly for ``warmup`` steps, peaks at ``t = warmup``, then decays as ``1/√t``.
    With ``LambdaLR`` (which starts at 0) use ``lambda s: noam(s + 1, ...)``.
    """
    _positive(d_model=d_model, warmup=warmup)
    if not isinstance(t, int) or t < 1:
        raise ValueError(f"noam counts steps from 1 (t^-0.5 is infinite at 0), got t={t!r}")
    return factor * d_model**-0.5 * min(t**-0.5, t * warmup**-1.5)


# --8<-- [end:warmup]


# --8<-- [start:cyclic]
def cosine_warm_restarts(t: int, base_lr: float, T_0: int, T_mult: int = 1, eta_min: float = 0.0) -> float:
    """SGDR (``CosineAnnealingWarmRestarts``): cosine from ``base_lr`` down over a cycle of ``T_i``
    steps, then jump back up; cycles last ``T_0, T_0·T_mult, T_0·T_mult², ...`` steps."""
    _check_t(t)
    if not isinstance(T_0, int) or T_0 <= 0:
        raise ValueError(f"T_0 must be a positive integer, got T_0={T_0!r}")
    if not isinstance(T_mult, int) or T_mult < 1:
        raise ValueError(f"T_mult must be an integer >= 1, got T_mult={T_mult!r}")
    t_cur, t_i = t, T_0
    while t_cur >= t_i:  # integer arithmetic: no floor(log(...)) rounding at cycle boundaries
        t_cur, t_i = t_cur - t_i, t_i * T_mult
    return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * t_cur / t_i)) / 2


def one_cycle(
    t: int,
    max_lr: float,
    total_steps: int,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> float:
    """``OneCycleLR`` (cosine, two phases): from ``max_lr/div_factor`` up to ``max_lr`` by step
    ``pct_start·total_steps − 1``, then down to ``max_lr/div_factor/final_div_factor`` at the last step."""
    _check_t(t)
    _positive(max_lr=max_lr, total_steps=total_steps, div_factor=div_factor, final_div_factor=final_div_factor)
    if not 0 < pct_start < 1:
        raise ValueError(f"pct_start must lie in (0, 1), got pct_start={pct_start}")
    if t > total_steps:
        raise ValueError(f"t={t} is past total_steps={total_steps}")
    peak = pct_start * total_steps - 1  # the step at which max_lr is reached
    if peak <= 0:
        raise ValueError(f"pct_start * total_steps must exceed 1, got {pct_start} * {total_steps}")
    initial = max_lr / div_factor
    if t <= peak:  # phase 1: warm up
        start, end, lr_from, lr_to = 0.0, peak, initial, max_lr
    else:  # phase 2: anneal to initial / final_div_factor
        start, end, lr_from, lr_to = peak, total_steps - 1, max_lr, initial / final_div_factor
    pct = (t - start) / (end - start)
    return lr_to + (lr_from - lr_to) / 2 * (math.cos(math.pi * pct) + 1)


# --8<-- [end:cyclic]


# --8<-- [start:torch_lrs]
def torch_lrs(
    make_scheduler: Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler],
    steps: int,
    base_lr: float = 1.0,
) -> list[float]:
    """The learning rate a torch scheduler gives at steps ``0 .. steps−1`` (one parameter group).

    The loop has the order PyTorch requires: use the rate, ``optimizer.step()``, then ``scheduler.step()``.
    """
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=base_lr, momentum=0.9)  # momentum: OneCycleLR cycles it
    sched = make_scheduler(opt)
    lrs = []
    for _ in range(steps):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    return lrs


# --8<-- [end:torch_lrs]


# --8<-- [start:bumpy]
def bumpy(x: Tensor) -> Tensor:
    """A 1-D non-convex loss: a wide bowl with a local minimum near every integer, f(x) = x²/10 + 1 − cos 2πx.

    The global minimum is f(0) = 0; the bumps have curvature ≈ 4π² ≈ 39.5, the bowl only 0.2.
    """
    return 0.1 * x**2 + 1 - torch.cos(2 * math.pi * x)


def bumpy_grad(x: Tensor) -> Tensor:
    """f'(x) = x/5 + 2π sin 2πx."""
    return 0.2 * x + 2 * math.pi * torch.sin(2 * math.pi * x)


def descend(x0: Tensor, lrs: Sequence[float]) -> Tensor:
    """Plain gradient descent on :func:`bumpy` from every start at once.

    x0: ``(N,)`` starting points; returns the trajectories ``(len(lrs) + 1, N)`` (row 0 is ``x0``).
    """
    if x0.dim() != 1:
        raise ValueError(f"x0 must be 1-D (N,), got shape {tuple(x0.shape)}")
    xs = [x0]
    for lr in lrs:  # the loop over time is the lesson
        xs.append(xs[-1] - lr * bumpy_grad(xs[-1]))
    return torch.stack(xs)


# --8<-- [end:bumpy]


if __name__ == "__main__":
    for name, fn in [
        ("step", lambda t: step_lr(t, 0.1, 30)),
        ("cosine", lambda t: cosine_annealing(t, 0.1, 100)),
        ("warm restarts", lambda t: cosine_warm_restarts(t, 0.1, 10, 2)),
        ("one-cycle", lambda t: one_cycle(t, 0.1, 100)),
    ]:
        print(f"{name:>13}:", " ".join(f"{fn(t):.4f}" for t in range(0, 100, 15)))
    starts = torch.linspace(-4.9, 4.9, 99, dtype=torch.float64)
    for label, lrs in [
        ("fixed lr 0.01", [0.01] * 300),
        ("SGDR peak 0.15, T_0=50", [cosine_warm_restarts(t, 0.15, 50) for t in range(300)]),
    ]:
        end = descend(starts, lrs)[-1]
        print(f"{label}: {(end.abs() < 0.5).double().mean():.0%} of 99 starts end in the global minimum")
