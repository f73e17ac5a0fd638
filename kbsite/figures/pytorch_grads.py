"""Figures for chapter 4 (gradients: accumulation, zero_() vs None), drawn from the snippets themselves."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kbsite.figures import figure
from snippets.pytorch.grad_accumulation import accumulate_grads, grads_of, split_batch
from snippets.pytorch.zero_grad import grads_over_backwards, sgd_zero_vs_none


def _accumulation_errors() -> dict[str, float]:
    """Max |accumulated - full-batch| gradient for four set-ups (float64, 12 samples)."""
    out = {}
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(12, 4, generator=g, dtype=torch.float64), torch.randn(12, 1, generator=g, dtype=torch.float64)
    cases = [
        ("4 × 3, weight 1/K", False, [3, 3, 3, 3], "count"),
        ("2+4+6, weight n_k/N", False, [2, 4, 6], "size"),
        ("2+4+6, weight 1/K", False, [2, 4, 6], "count"),
        ("BatchNorm, 4 × 3, 1/K", True, [3, 3, 3, 3], "count"),
    ]
    for label, bn, sizes, scale in cases:
        torch.manual_seed(0)
        layers = [nn.Linear(4, 6)] + ([nn.BatchNorm1d(6)] if bn else []) + [nn.Tanh(), nn.Linear(6, 1)]
        model = nn.Sequential(*layers).double()
        state = {k: v.clone() for k, v in model.state_dict().items()}
        F.mse_loss(model(x), y).backward()
        full = grads_of(model)
        model.load_state_dict(state)
        model.zero_grad()
        accumulate_grads(model, F.mse_loss, split_batch(x, y, sizes), scale=scale)
        out[label] = max((a - b).abs().max().item() for a, b in zip(grads_of(model), full))
    return out


@figure("grad-accumulation")
def grad_accumulation():
    """Left: w.grad over repeated backward calls with and without clearing. Right: accumulation errors."""
    import matplotlib.pyplot as plt

    calls = 6
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 3.6), constrained_layout=True)
    steps = range(1, calls + 1)
    ax.plot(steps, grads_over_backwards(calls), "o-", label="never cleared: 3, 6, 9, …")
    ax.plot(steps, grads_over_backwards(calls, clear="none"), "s--", label="cleared before each backward")
    ax.set_xlabel("number of backward() calls")
    ax.set_ylabel("w.grad   (loss = 3w)")
    ax.set_title("backward() adds into .grad", fontsize=10)
    ax.legend(fontsize=9)
    errors = _accumulation_errors()
    floor = 1e-17
    bars = bx.barh(list(errors), [max(v, floor) for v in errors.values()], color=["C2", "C2", "C3", "C3"])
    bx.set_xscale("log")
    bx.invert_yaxis()
    bx.set_xlabel("max |accumulated − full-batch gradient|  (float64)")
    bx.set_title("accumulated = full batch? (12 samples)", fontsize=10)
    for bar, v in zip(bars, errors.values()):
        bx.text(bar.get_width() * 1.5, bar.get_y() + bar.get_height() / 2, f"{v:.0e}", va="center", fontsize=8)
    bx.set_xlim(floor, 10)
    return fig


@figure("zero-vs-none-sgd")
def zero_vs_none_sgd():
    """A parameter after one real SGD step, then steps with its gradient cleared by zero_() or None."""
    import matplotlib.pyplot as plt

    steps = 20
    traj = sgd_zero_vs_none(steps)
    fig, ax = plt.subplots(figsize=(7, 3.6), constrained_layout=True)
    ax.plot(range(steps + 1), traj["zero"], "o-", ms=4, label="grad.zero_(): momentum + weight decay keep moving p")
    ax.plot(range(steps + 1), traj["none"], "s--", ms=4, label="grad = None: step skips p")
    ax.axvline(1, color="gray", lw=0.8, ls=":")
    ax.annotate("last real gradient", (1, traj["none"][1]), (3, 0.95), fontsize=9, arrowprops={"arrowstyle": "->"})
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("p")
    ax.set_title("SGD(lr=0.1, momentum=0.9, weight_decay=0.1), p₀ = 1", fontsize=10)
    ax.legend(fontsize=9)
    return fig
