"""Figures for chapter 13 (computational performance), drawn from the snippets themselves."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kbsite.figures import figure
from snippets.performance.ddp import make_batches, make_model, shard


def _box(ax, x, y, w, h, text, color, fontsize=9) -> None:
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02", fc=color, ec="k", lw=0.7))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fontsize)


def _arrow(ax, start, end, text="") -> None:
    ax.annotate("", end, start, arrowprops={"arrowstyle": "->", "lw": 1.0})
    if text:
        ax.text((start[0] + end[0]) / 2 + 0.05, (start[1] + end[1]) / 2, text, fontsize=8, va="center")


def _ddp_gradients(batch_per_rank: int = 8) -> dict[str, torch.Tensor]:
    """The last layer's weight gradient on each rank's shard, their mean, and the full-batch gradient."""
    x, y = make_batches(1, 2 * batch_per_rank)[0]
    out = {}
    for label, (xs, ys) in {
        "rank 0 (B rows)": (shard(x, 0, 2), shard(y, 0, 2)),
        "rank 1 (B rows)": (shard(x, 1, 2), shard(y, 1, 2)),
        "one process (2B rows)": (x, y),
    }.items():
        model = make_model(seed=0)
        F.mse_loss(model(xs), ys).backward()
        out[label] = model[2].weight.grad[0, :6].clone()
    out["all-reduce mean of ranks"] = (out["rank 0 (B rows)"] + out["rank 1 (B rows)"]) / 2
    return out


@figure("ddp-data-flow")
def ddp_data_flow():
    """Left: one DDP step on two ranks. Right: the averaged gradient equals the full-batch gradient."""
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 4.6), gridspec_kw={"width_ratios": [1.25, 1]})
    fig.subplots_adjust(wspace=0.12)
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 10)
    ax.axis("off")
    _box(ax, 2.5, 8.8, 5, 0.9, "global batch: 2B samples (DistributedSampler)", "#e8e8e8")
    for i, cx in enumerate((2.4, 7.6)):
        left = cx - 2
        _arrow(ax, (5 + (i * 2 - 1) * 1.2, 8.8), (cx, 8.0), f"rows {i}, {i + 2}, …")
        _box(ax, left, 7.0, 4, 0.9, f"rank {i}: replica of the model\n(same parameters θ)", "#dbe9f6")
        _arrow(ax, (cx, 7.0), (cx, 6.3))
        _box(ax, left, 5.3, 4, 0.9, f"forward + backward on B rows\nlocal gradient g{i}", "#fde9d9")
        _arrow(ax, (cx, 5.3), (cx, 4.4))
        _arrow(ax, (cx, 2.4), (cx, 1.75))
        _box(ax, left, 0.8, 4, 0.9, "optimizer.step() with ḡ\n→ same θ on both ranks", "#dbe9f6")
    _box(ax, 0.4, 2.4, 9.2, 2.0, "", "#e2f0d9")
    ax.text(5, 3.75, "all-reduce, bucket by bucket, during backward", ha="center", fontsize=10, weight="bold")
    ax.text(5, 3.0, "ḡ = (g0 + g1) / 2   (sum over ranks, divided by world_size)", ha="center", fontsize=10)
    ax.set_title("one DDP step, world_size = 2", fontsize=11)

    grads = _ddp_gradients()
    width = 0.2
    index = torch.arange(6).numpy()
    colors = ["#9ecae1", "#6baed6", "#31a354", "#fd8d3c"]
    for k, ((label, g), color) in enumerate(zip(grads.items(), colors)):
        bx.bar(index + (k - 1.5) * width, g.numpy(), width, label=label, color=color, ec="k", lw=0.4)
    gap = (grads["all-reduce mean of ranks"] - grads["one process (2B rows)"]).abs().max().item()
    bx.axhline(0, color="k", lw=0.6)
    bx.set_xticks(index, [f"w[0,{j}]" for j in range(6)])
    bx.set_ylabel("gradient of the last layer's weight")
    bx.set_title(f"mean of the ranks' gradients = full-batch gradient (max gap {gap:.0e})", fontsize=10)
    bx.legend(fontsize=8, loc="best")
    return fig


@figure("symbolic-constant-folding")
def symbolic_constant_folding():
    """Left: the graph of (2*3 + 1) * xy + tanh(xy), folded nodes greyed. Right: the generated Python."""
    import matplotlib.pyplot as plt

    from snippets.performance.symbolic import Call, Const, Var, compile_graph, topological_order

    x, y = Var("x"), Var("y")
    xy = x * y
    graph = (2 * Const(3) + 1) * xy + Call("tanh", xy)
    compiled = compile_graph(graph, ["x", "y"])
    order = topological_order(graph)
    depth: dict[int, int] = {}
    for node in order:
        depth[id(node)] = 1 + max((depth[id(i)] for i in node.inputs), default=-1)
    foldable: set[int] = set()
    for node in order:
        if isinstance(node, Const) or (node.inputs and all(id(i) in foldable for i in node.inputs)):
            foldable.add(id(node))
    rows: dict[int, list] = {}
    for node in order:
        rows.setdefault(depth[id(node)], []).append(node)
    pos = {}
    for d, nodes in rows.items():
        for k, node in enumerate(nodes):
            pos[id(node)] = ((k + 1) / (len(nodes) + 1), d)

    def label(node) -> str:
        if isinstance(node, Var):
            return node.name
        if isinstance(node, Const):
            return f"{node.value:g}"
        if isinstance(node, Call):
            return node.fn
        return {"Add": "+", "Sub": "−", "Mul": "×"}[type(node).__name__]

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [1.2, 1]})
    for node in order:
        for child in node.inputs:
            (x0, y0), (x1, y1) = pos[id(child)], pos[id(node)]
            ax.annotate("", (x1, y1 - 0.18), (x0, y0 + 0.18), arrowprops={"arrowstyle": "->", "color": "0.4"})
    for node in order:
        cx, cy = pos[id(node)]
        color = "#d9d9d9" if id(node) in foldable else ("#dbe9f6" if isinstance(node, Var) else "#fde9d9")
        ax.text(
            cx,
            cy,
            label(node),
            ha="center",
            va="center",
            fontsize=11,
            bbox={"boxstyle": "circle,pad=0.35", "fc": color, "ec": "k", "lw": 0.7},
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.6, max(rows) + 0.6)
    ax.axis("off")
    ax.set_title("graph: grey = known at compile time (folded into 7.0);\nx × y is one node used twice", fontsize=10)
    bx.axis("off")
    bx.text(0.0, 0.95, compiled.source, family="monospace", fontsize=11, va="top")
    bx.set_title(f"compile_graph(): {compiled.num_ops} operations left, {compiled.num_folded} folded", fontsize=10)
    return fig
