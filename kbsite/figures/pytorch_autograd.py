"""Figures for chapter 4 (autograd graph, train/eval × grad-mode grid), drawn from the snippets."""

from __future__ import annotations

import torch
from torch import nn

from kbsite.figures import figure
from snippets.pytorch.autograd_graph import graph_edges, graph_nodes
from snippets.pytorch.inference_matrix import inference_matrix


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


@figure("eval-vs-no-grad-grid")
def eval_vs_no_grad_grid():
    """train/eval × grad/no_grad/inference_mode: activation bytes saved for backward, grad_fn, BN updates."""
    import matplotlib.pyplot as plt
    import numpy as np

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Dropout(0.5), nn.Linear(64, 4))
    cells = inference_matrix(net, torch.randn(32, 16))
    contexts = ["grad", "no_grad", "inference_mode"]
    grid = np.array([[cells[t, c].activation_nbytes / 1024 for c in contexts] for t in (True, False)])
    fig, ax = plt.subplots(figsize=(10, 3.8))
    ax.imshow(grid, cmap="Oranges", vmin=0, vmax=grid.max() * 1.6, aspect="auto")
    for r, training in enumerate((True, False)):
        for k, ctx in enumerate(contexts):
            c = cells[training, ctx]
            lines = [f"activations saved: {c.activation_nbytes / 1024:.0f} KiB", f"grad_fn: {c.grad_fn}"]
            bn = "BN stats updated" if c.buffers_changed else "BN stats fixed"
            lines.append(f"dropout {'on' if training else 'off'}, {bn}")
            if c.is_inference:
                lines.append("inference tensor")
            ax.text(k, r, "\n".join(lines), ha="center", va="center", fontsize=9)
    ax.set_xticks(range(3), ["torch.enable_grad()", "torch.no_grad()", "torch.inference_mode()"])
    ax.set_yticks(range(2), ["model.train()", "model.eval()"])
    ax.set_title("rows change what is computed; columns change what is recorded for backward", fontsize=10)
    return fig
