"""Figures for chapter 4 (autograd graph, train/eval × grad-mode grid), drawn from the snippets."""

from __future__ import annotations

import torch

from kbsite.figures import figure
from snippets.pytorch.autograd_graph import graph_edges, graph_nodes


def _depths(n: int, edges: list[tuple[int, int]]) -> list[int]:
    """Longest distance from the root (node 0) in a DAG whose nodes are numbered in DFS preorder."""
    depth = [0] * n
    changed = True
    while changed:  # tiny graphs: relax until stable
        changed = False
        for a, b in edges:
            if depth[b] < depth[a] + 1:
                depth[b], changed = depth[a] + 1, True
    return depth


@figure("autograd-graph")
def autograd_graph():
    """The backward graph of loss = tanh(x * w + b).sum(), from graph_nodes / graph_edges."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    x, w, b = (torch.randn(3, requires_grad=True) for _ in range(3))
    loss = (x * w + b).tanh().sum()
    names = {"x": x, "w": w, "b": b}
    nodes, edges = graph_nodes(loss, names), graph_edges(loss, names)
    depth = _depths(len(nodes), edges)
    rows: dict[int, list[int]] = {}
    for i, d in enumerate(depth):
        rows.setdefault(d, []).append(i)
    pos = {}
    for d, members in rows.items():
        for k, i in enumerate(members):
            pos[i] = (1.6 * (k - (len(members) - 1) / 2), -d)
    fig, ax = plt.subplots(figsize=(7.5, 5.2))
    for a, c in edges:
        (xa, ya), (xc, yc) = pos[a], pos[c]
        ax.annotate(
            "", xy=(xc, yc + 0.2), xytext=(xa, ya - 0.2), arrowprops={"arrowstyle": "-|>", "color": "0.35", "lw": 1.3}
        )
    for i, label in enumerate(nodes):
        leaf = label.startswith("AccumulateGrad")
        xi, yi = pos[i]
        ax.add_patch(
            FancyBboxPatch(
                (xi - 0.62, yi - 0.2),
                1.24,
                0.4,
                boxstyle="round,pad=0.02",
                fc="#d8ecd3" if leaf else "#dbe6f6",
                ec="0.3",
            )
        )
        ax.text(xi, yi, label, ha="center", va="center", fontsize=9)
    ax.text(pos[0][0] + 0.75, 0, "loss.grad_fn", va="center", fontsize=9, color="0.35")
    ax.text(-2.9, -max(depth), "AccumulateGrad:\nadds into leaf.grad", va="center", fontsize=8.5, color="#3b7a2e")
    ax.set_title("backward graph of loss = tanh(x * w + b).sum()  (arrows: grad_fn.next_functions)", fontsize=10)
    ax.set_xlim(-3.0, 2.6)
    ax.set_ylim(-max(depth) - 0.6, 0.6)
    ax.axis("off")
    return fig
