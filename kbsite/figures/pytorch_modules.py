"""Figures for chapter 4 (modules): a module tree with its registered parameters."""

from __future__ import annotations

import torch
from torch import nn

from kbsite.figures import figure
from snippets.pytorch.modules_blocks import MySequential, ParallelBlock


def _layout(module: nn.Module, depth: int, slots: list[int], out: list[tuple]) -> float:
    """Depth-first placement: leaves take consecutive x slots, a parent sits above its children's middle."""
    xs = [_layout(child, depth + 1, slots, out) for child in module.children()]
    if xs:
        x = sum(xs) / len(xs)
    else:
        x = float(slots[0])
        slots[0] += 1
    out.append((module, depth, x, xs))
    return x


@figure("module-tree")
def module_tree():
    """The tree of a nested MySequential: each node shows its own parameters; paths are state_dict keys."""
    import matplotlib.pyplot as plt

    torch.manual_seed(0)
    net = MySequential(nn.Linear(4, 8), nn.ReLU(), ParallelBlock(nn.Linear(8, 3), nn.Linear(8, 3)), nn.Linear(6, 2))
    names = {id(m): name for name, m in net.named_modules()}
    placed: list[tuple] = []
    _layout(net, 0, [0], placed)
    fig, ax = plt.subplots(figsize=(11, 4.6), constrained_layout=True)
    pos = {id(m): (x, -depth) for m, depth, x, _ in placed}
    for _, depth, x, xs in placed:
        for cx in xs:
            ax.plot([x, cx], [-depth, -depth - 1], color="0.6", lw=1, zorder=1)
    for m, *_ in placed:
        name = names[id(m)] or "(root)"
        own = [f"{n}: {tuple(p.shape)}" for n, p in m.named_parameters(recurse=False)]
        label = f"{name}\n{type(m).__name__}" + ("\n" + "\n".join(own) if own else "")
        color = "#dbe9f6" if own else "#f2f2f2"
        ax.text(*pos[id(m)], label, ha="center", va="center", fontsize=8.5, zorder=2,
                bbox={"boxstyle": "round,pad=0.4", "fc": color, "ec": "0.4"})
    ax.text(-0.6, -3.05, "state_dict keys = path + '.' + name:\n'2.branches.0.weight', '3.bias', ...",
            fontsize=9, family="monospace", va="center")
    ax.set_xlim(-0.8, max(x for _, _, x, _ in placed) + 0.8)
    ax.set_ylim(-3.5, 0.5)
    ax.axis("off")
    return fig
