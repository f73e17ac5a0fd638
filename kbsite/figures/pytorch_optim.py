"""Figures for chapter 4 (learning-rate schedules; fixed vs cyclic learning rate), drawn from the snippets."""

from __future__ import annotations

import torch
from torch.optim import lr_scheduler as L

from kbsite.figures import figure
from snippets.pytorch.schedules import (
    bumpy,
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

STEPS = 120


def _schedules():
    """(title, our function of t, torch scheduler factory) for every schedule of the page."""
    peak = noam(20, 64, 20)  # scale noam so its peak is 1, like the others
    return [
        ("StepLR(step_size=30, γ=0.5)", lambda t: step_lr(t, 1.0, 30, 0.5), lambda o: L.StepLR(o, 30, 0.5)),
        (
            "MultiStepLR([40, 70, 100], γ=0.3)",
            lambda t: multistep_lr(t, 1.0, [40, 70, 100], 0.3),
            lambda o: L.MultiStepLR(o, [40, 70, 100], 0.3),
        ),
        ("ExponentialLR(γ=0.97)", lambda t: exponential_lr(t, 1.0, 0.97), lambda o: L.ExponentialLR(o, 0.97)),
        (
            "CosineAnnealingLR(T_max=120)",
            lambda t: cosine_annealing(t, 1.0, STEPS),
            lambda o: L.CosineAnnealingLR(o, STEPS),
        ),
        (
            "linear warm-up (LambdaLR, w=20)",
            lambda t: linear_warmup(t, 1.0, 20),
            lambda o: L.LambdaLR(o, lambda s: linear_warmup(s, 1.0, 20)),
        ),
        (
            "Noam (LambdaLR, d=64, w=20)",
            lambda t: noam(t + 1, 64, 20) / peak,
            lambda o: L.LambdaLR(o, lambda s: noam(s + 1, 64, 20) / peak),
        ),
        (
            "CosineAnnealingWarmRestarts(T_0=20, T_mult=2)",
            lambda t: cosine_warm_restarts(t, 1.0, 20, 2),
            lambda o: L.CosineAnnealingWarmRestarts(o, 20, 2),
        ),
        (
            "OneCycleLR(total_steps=120)",
            lambda t: one_cycle(t, 1.0, STEPS),
            lambda o: L.OneCycleLR(o, 1.0, total_steps=STEPS),
        ),
    ]


@figure("lr-schedules")
def lr_schedules():
    """Every schedule of the lr-scheduler page: our pure function (line) and torch's scheduler (dots)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(13, 5.2), sharex=True, constrained_layout=True)
    ts = list(range(STEPS))
    for ax, (title, ours, make) in zip(axes.flat, _schedules()):
        ref = torch_lrs(make, STEPS)
        ax.plot(ts, [ours(t) for t in ts], color="C0", lw=1.8, label="ours (function of t)")
        ax.plot(ts[::4], ref[::4], "o", ms=2.6, color="C1", label="torch scheduler")
        ax.set_title(title, fontsize=9)
        ax.set_ylim(-0.05, 1.08)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("step t")
    for ax in axes[:, 0]:
        ax.set_ylabel("lr / base lr")
    axes[0, 0].legend(fontsize=8, loc="lower left")
    return fig


@figure("fixed-vs-cyclic-lr")
def fixed_vs_cyclic_lr():
    """Gradient descent on a bumpy 1-D loss from 99 starts: fixed small lr vs SGDR warm restarts."""
    import matplotlib.pyplot as plt

    steps = 300
    runs = {
        "fixed lr = 0.01": [0.01] * steps,
        "SGDR, peak 0.15, T_0 = 50": [cosine_warm_restarts(t, 0.15, 50) for t in range(steps)],
        "SGDR, peak 0.15, T_0 = 30": [cosine_warm_restarts(t, 0.15, 30) for t in range(steps)],
    }
    starts = torch.linspace(-4.9, 4.9, 99, dtype=torch.float64)
    grid = torch.linspace(-5.5, 5.5, 600, dtype=torch.float64)
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8), constrained_layout=True)
    axes[0].plot(grid, bumpy(grid), color="0.6", lw=1)
    for i, (label, lrs) in enumerate(runs.items()):
        traj = descend(starts, lrs)
        end = traj[-1]
        share = (end.abs() < 0.5).double().mean().item()
        axes[0].plot(end, bumpy(end) + 0.35 * i, "o", ms=4, color=f"C{i}", alpha=0.6, label=f"{label}: {share:.0%}")
        axes[1].plot(lrs, color=f"C{i}", lw=1.4, label=label)
        axes[2].plot(traj[:, 88], color=f"C{i}", lw=1.2, label=label)  # the start x0 = 3.9
    axes[0].set_title("where 99 starts end (share in the global minimum)", fontsize=10)
    axes[0].set_xlabel("x")
    axes[0].set_ylabel("f(x) = x²/10 + 1 − cos 2πx  (dots offset per run)")
    axes[0].legend(fontsize=8, loc="upper center")
    axes[1].set_title("learning rate", fontsize=10)
    axes[1].set_xlabel("step")
    axes[2].set_title("one trajectory, x₀ = 3.9", fontsize=10)
    axes[2].set_xlabel("step")
    axes[2].set_ylabel("x")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    return fig
