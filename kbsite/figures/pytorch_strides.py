"""Figure for storage, strides and contiguity (4.12): one storage, three views, index -> address."""

from __future__ import annotations

import torch

from kbsite.figures import figure
from snippets.pytorch.strides import gather_strided, storage_tensor


@figure("tensor-strides")
def tensor_strides():
    """A 3×4 tensor's 12 storage cells and three tensors over them: x, x.t(), x[:, 1:3]."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    x = torch.arange(12).view(3, 4)
    views = [
        ("x = arange(12).view(3, 4)", x),
        ("x.t()", x.t()),
        ("x[:, 1:3]", x[:, 1:3]),
    ]
    cmap = plt.get_cmap("viridis")

    def color(address: int):
        return cmap(0.15 + 0.8 * address / 11)

    fig, ax = plt.subplots(figsize=(11, 5.4), constrained_layout=True)

    def cell(x0: float, y0: float, address: int, edge: str = "k") -> None:
        lw = 2.4 if edge != "k" else 0.7
        ax.add_patch(Rectangle((x0, y0), 0.9, 0.9, fc=color(address), ec=edge, lw=lw))
        ax.text(x0 + 0.45, y0 + 0.45, str(address), ha="center", va="center", fontsize=9, color="w")

    example = (1, (3, 1))  # x.t()[3, 1]: the element whose address is worked out on the figure
    target = None
    left, bottom = 0.5, 2.4
    for k, (title, v) in enumerate(views):
        rows, cols = v.shape
        addresses = gather_strided(storage_tensor(v), v.shape, v.stride(), v.storage_offset())  # = v itself
        for i in range(rows):
            for j in range(cols):
                hit = k == example[0] and (i, j) == example[1]
                y0 = bottom + rows - 1 - i
                cell(left + j, y0, int(addresses[i, j]), "red" if hit else "k")
                if hit:
                    start = (left + j + 0.45, y0)
                    target = int(addresses[i, j])
        s0, s1 = v.stride()
        ax.text(left, bottom + rows + 1.55, title, fontsize=10, fontweight="bold", va="bottom")
        ax.text(
            left,
            bottom + rows + 0.65,
            f"shape {tuple(v.shape)}, stride ({s0}, {s1})\noffset {v.storage_offset()}, "
            f"is_contiguous() = {v.is_contiguous()}",
            fontsize=8.5,
            va="bottom",
        )
        ax.text(
            left, bottom + rows + 0.15, f"addr = {v.storage_offset()} + {s0}·i + {s1}·j", fontsize=9, family="monospace"
        )
        left += max(cols, 3.6) + 1.4
    for a in range(12):  # the storage: 12 cells in a row, position = address
        cell(a + 0.5, 0, a, "red" if a == target else "k")
    ax.text(0.3, 0.45, "storage\n(positions)", ha="right", va="center", fontsize=9)
    i, j = example[1]
    ax.annotate("", xy=(target + 0.95, 0.95), xytext=start, arrowprops=dict(arrowstyle="->", lw=1.2, color="red"))
    ax.text(
        (start[0] + target + 0.95) / 2 + 0.3,
        1.45,
        f"x.t()[{i}, {j}]: 0 + 1·{i} + 4·{j} = {target}",
        fontsize=9,
        color="red",
        va="center",
    )
    ax.set_xlim(-1.6, max(left, 12.8))
    ax.set_ylim(-0.3, bottom + 6.2)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title("One storage, three tensors: each number is the storage position the element reads", fontsize=10)
    return fig
