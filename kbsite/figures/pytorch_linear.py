"""Figure for nn.Linear's weight layout (4.04): row i of the (out, in) weight makes output unit i."""

from __future__ import annotations

import torch

from kbsite.figures import figure
from snippets.pytorch.linear_layout import linear


@figure("linear-weight-layout")
def linear_weight_layout():
    """x: (1, 3), W: (5, 3) stored row by row, y = x Wᵀ + b: (1, 5); unit 2 and its row highlighted."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    d_in, d_out, unit = 3, 5, 2
    g = torch.Generator().manual_seed(0)
    x = torch.randint(-3, 4, (1, d_in), generator=g).double()
    w = torch.randint(-3, 4, (d_out, d_in), generator=g).double()
    y = linear(x, w)  # exactly F.linear(x, w)
    fig, ax = plt.subplots(figsize=(10, 4.2), constrained_layout=True)

    def cell(x0: float, y0: float, value: float, hot: bool) -> None:
        ax.add_patch(Rectangle((x0, y0), 0.9, 0.9, fc="#f4a261" if hot else "#e9ecef", ec="k", lw=0.7))
        ax.text(x0 + 0.45, y0 + 0.45, f"{value:g}", ha="center", va="center", fontsize=10)

    # x: one row vector of in_features numbers
    for j in range(d_in):
        cell(j, 2.0, x[0, j].item(), True)
    ax.text(0, 3.1, "x: (1, in=3)", fontsize=10, fontweight="bold")
    # W: (out, in), row i = the weights of output unit i
    left = 5.0
    for i in range(d_out):
        for j in range(d_in):
            cell(left + j, d_out - 1 - i, w[i, j].item(), i == unit)
        ax.text(left - 0.25, d_out - 1 - i + 0.45, f"unit {i}", ha="right", va="center", fontsize=9)
    ax.text(left, d_out + 0.1, "weight: (out=5, in=3), stored row by row", fontsize=10, fontweight="bold")
    ax.text(left, -0.75, "stride (3, 1): row i is contiguous;  weight.mT is a view with stride (1, 3)", fontsize=9)
    # y: (1, out)
    right = 11.0
    for i in range(d_out):
        cell(right + i, 2.0, y[0, i].item(), i == unit)
    ax.text(right, 3.1, "y = x Wᵀ: (1, out=5)", fontsize=10, fontweight="bold")
    ax.annotate(
        "",
        xy=(right + unit + 0.45, 1.95),
        xytext=(left + d_in + 0.05, d_out - 1 - unit + 0.45),
        arrowprops=dict(arrowstyle="->", lw=1.2, color="#e76f51", connectionstyle="arc3,rad=0.3"),
    )
    terms = " + ".join(f"({x[0, j].item():g})({w[unit, j].item():g})" for j in range(d_in))
    ax.text(right, 0.6, f"y[{unit}] = x · weight[{unit}]\n= {terms} = {y[0, unit].item():g}", fontsize=9)
    ax.set_xlim(-0.5, right + d_out + 0.5)
    ax.set_ylim(-1.2, d_out + 0.8)
    ax.set_aspect("equal")
    ax.axis("off")
    return fig
