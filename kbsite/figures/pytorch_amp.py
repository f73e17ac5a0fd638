"""Figures for mixed precision (4.29): float formats, the dynamic loss scale, float32 vs bfloat16 training."""

from __future__ import annotations

import torch
from torch import nn

from kbsite.figures import figure
from snippets.pytorch.amp import ScratchGradScaler, format_limits, precision_comparison


@figure("amp-formats")
def amp_formats():
    """Bit layout (sign / exponent / mantissa) and representable range of float32, float16, bfloat16."""
    import matplotlib.pyplot as plt

    rows = format_limits()
    fig, (ax1, ax2) = plt.subplots(
        1, 2, figsize=(11, 2.9), constrained_layout=True, gridspec_kw={"width_ratios": [3, 2]}
    )
    for i, r in enumerate(rows):
        y = len(rows) - 1 - i
        parts = [
            ("sign", 1, "tab:gray"),
            ("exponent", r.exponent_bits, "tab:orange"),
            ("mantissa", r.mantissa_bits, "tab:blue"),
        ]
        x = 0
        for name, width, color in parts:
            ax1.barh(y, width, left=x, color=color, edgecolor="white", height=0.6, label=name if i == 0 else None)
            ax1.text(x + width / 2, y, str(width), ha="center", va="center", color="white", fontsize=9)
            x += width
        ax1.text(-0.5, y, str(r.dtype).replace("torch.", ""), ha="right", va="center", fontsize=10)
        lo, hi = r.smallest_subnormal, r.max
        ax2.plot([lo, hi], [y, y], lw=6, color="tab:green", solid_capstyle="butt")
        ax2.plot([r.smallest_normal], [y], "k|", ms=14)
    ax1.set_xlim(-6, 33)
    ax1.set_yticks([])
    ax1.set_xlabel("bits")
    ax1.legend(loc="upper right", fontsize=8, ncol=3, bbox_to_anchor=(1.0, 1.25))
    ax1.set_title("bit layout: exponent bits = range, mantissa bits = precision", fontsize=10)
    ax2.set_xscale("log")
    ax2.set_yticks(range(len(rows)), [str(r.dtype).replace("torch.", "") for r in reversed(rows)])
    ax2.axvspan(1e-8, 1e-5, color="tab:red", alpha=0.12)
    ax2.text(3e-7, 1.5, "typical small\ngradients", ha="center", va="center", fontsize=8, color="tab:red")
    ax2.set_title("positive range (| = smallest normal)", fontsize=10)
    ax2.set_xlabel("magnitude")
    return fig


@figure("amp-loss-scale")
def amp_loss_scale():
    """The loss scale of ScratchGradScaler over 40 steps: halved on overflow (step skipped), doubled after
    ``growth_interval`` clean steps."""
    import matplotlib.pyplot as plt

    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    scaler = ScratchGradScaler(init_scale=2.0**10, growth_interval=5)
    overflow = {3, 4, 17, 30}
    scales, skipped = [], []
    for step in range(40):
        opt.zero_grad()
        scales.append(scaler.get_scale())
        scaler.scale(model(torch.randn(8, 4)).pow(2).mean()).backward()
        if step in overflow:
            model.weight.grad[0, 0] = float("inf")
        skipped.append(scaler.step(opt) is None and step in overflow)
        scaler.update()
    fig, ax = plt.subplots(figsize=(8, 2.8), constrained_layout=True)
    ax.step(range(40), scales, where="post", color="tab:blue", label="scale S used at the step")
    bad = [s for s, k in enumerate(skipped) if k]
    ax.plot(bad, [scales[s] for s in bad], "rx", ms=9, mew=2, label="inf/NaN gradient: step skipped, S halved")
    ax.set_yscale("log", base=2)
    ax.set_xlabel("training step")
    ax.set_ylabel("loss scale S")
    ax.set_title("dynamic loss scaling (growth_interval = 5, growth ×2, backoff ×½)", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    return fig


@figure("amp-fp32-vs-bf16")
def amp_fp32_vs_bf16():
    """Training loss of the same MLP in float32 and under bfloat16 autocast (same seed, data, steps)."""
    import matplotlib.pyplot as plt

    res = precision_comparison(steps=200, n=256, hidden=32)
    fig, ax = plt.subplots(figsize=(7, 3), constrained_layout=True)
    for name, color, ls in (("float32", "tab:blue", "-"), ("bfloat16", "tab:orange", "--")):
        r = res[name]
        ax.plot(r["losses"], color=color, ls=ls, label=f"{name}: test accuracy {r['accuracy']:.3f}")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title("two spirals, MLP 2-32-32-2, Adam: bfloat16 autocast vs float32", fontsize=10)
    ax.legend(fontsize=8)
    return fig
