"""The autograd graph behind a tensor: walk ``grad_fn.next_functions``, explain leaves.

Every tensor produced by a tracked operation carries ``grad_fn``, the backward node of the op that
made it; ``grad_fn.next_functions`` points at the backward nodes of the op's inputs, ending in one
``AccumulateGrad`` node per leaf that requires grad (the node that adds into ``leaf.grad``).
Reference: PyTorch docs, "Autograd mechanics" and ``torch.autograd.graph.Node``; d2l.ai §2.5.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["LeafInfo", "explain_leaf", "graph_edges", "graph_nodes", "requires_grad_rule"]


def _label(node, leaf_names: Mapping[str, Tensor]) -> str:
    """``type(node).__name__``, with the leaf's name appended for ``AccumulateGrad`` nodes."""
    name = type(node).__name__
    variable = getattr(node, "variable", None)  # only AccumulateGrad nodes have one
    if variable is not None:
        for leaf_name, leaf in leaf_names.items():
            if leaf is variable:
                return f"{name}({leaf_name})"
    return name


def _walk(t: Tensor, leaf_names: Mapping[str, Tensor] | None) -> tuple[list[str], list[tuple[int, int]]]:
    if not isinstance(t, Tensor):
        raise TypeError(f"t must be a torch.Tensor, got {type(t).__name__}")
    leaf_names = {} if leaf_names is None else leaf_names
    for leaf_name, leaf in leaf_names.items():
        if not isinstance(leaf, Tensor) or not leaf.is_leaf:
            raise ValueError(f"leaf_names[{leaf_name!r}] must be a leaf tensor (is_leaf=True)")
    root = t.grad_fn
    if root is None:  # a leaf (or a tensor outside the graph): AccumulateGrad exists only once used
        return [], []
    # --8<-- [start:walk]
    order: dict = {}  # backward node -> position in depth-first preorder
    labels: list[str] = []
    links = []  # (parent node, child node), one per input that needs grad
    stack = [root]
    while stack:  # iterative DFS: a graph 10^4 ops deep does not hit Python's recursion limit
        node = stack.pop()
        if node in order:  # shared sub-graph (e.g. x used twice): visit once
            continue
        order[node] = len(labels)
        labels.append(_label(node, leaf_names))
        children = [fn for fn, _ in node.next_functions if fn is not None]  # None: input needs no grad
        links += [(node, child) for child in children]
        stack.extend(reversed(children))  # first input on top: visited first
    # --8<-- [end:walk]
    return labels, [(order[a], order[b]) for a, b in links]


def graph_nodes(t: Tensor, leaf_names: Mapping[str, Tensor] | None = None) -> list[str]:
    """Backward nodes reachable from ``t.grad_fn``, in depth-first preorder, each once.

    ``leaf_names`` (e.g. ``{"x": x, "w": w}``) labels ``AccumulateGrad`` nodes as ``AccumulateGrad(x)``.
    A tensor without ``grad_fn`` (a leaf, or a result computed under ``no_grad``) gives ``[]``.
    """
    return _walk(t, leaf_names)[0]


def graph_edges(t: Tensor, leaf_names: Mapping[str, Tensor] | None = None) -> list[tuple[int, int]]:
    """Edges ``(parent, child)`` between positions in ``graph_nodes(t)``: ``child`` is in ``parent.next_functions``."""
    return _walk(t, leaf_names)[1]


@dataclass(frozen=True)
class LeafInfo:
    """What autograd will do with a tensor's ``.grad`` (see :func:`explain_leaf`)."""

    is_leaf: bool
    requires_grad: bool
    grad_fn: str | None
    retains_grad: bool
    gets_grad: bool
    reason: str


# --8<-- [start:explain_leaf]
def explain_leaf(t: Tensor) -> LeafInfo:
    """Will ``backward()`` leave a gradient in ``t.grad``? Yes iff (leaf and requires_grad) or retains_grad."""
    if not isinstance(t, Tensor):
        raise TypeError(f"t must be a torch.Tensor, got {type(t).__name__}")
    grad_fn = None if t.grad_fn is None else type(t.grad_fn).__name__
    if t.is_leaf and t.requires_grad:
        reason = "leaf that requires grad: AccumulateGrad adds into .grad"
    elif t.is_leaf:
        reason = "leaf that does not require grad: not part of the graph, .grad stays None"
    elif t.retains_grad:
        reason = "non-leaf with retain_grad(): its gradient is kept in .grad"
    else:
        reason = "non-leaf: its gradient is computed on the way to the leaves, then freed"
    gets_grad = (t.is_leaf and t.requires_grad) or t.retains_grad
    return LeafInfo(t.is_leaf, t.requires_grad, grad_fn, t.retains_grad, gets_grad, reason)
    # --8<-- [end:explain_leaf]


# --8<-- [start:rule]
def requires_grad_rule(*inputs: Tensor) -> bool:
    """``out.requires_grad`` of a differentiable op on ``inputs``: any input requires grad, and grad mode is on."""
    if not all(isinstance(t, Tensor) for t in inputs):
        raise TypeError("requires_grad_rule expects tensors")
    return torch.is_grad_enabled() and any(t.requires_grad for t in inputs)
    # --8<-- [end:rule]


if __name__ == "__main__":
    x = torch.randn(3, requires_grad=True)
    w = torch.randn(3, requires_grad=True)
    y = (x * w).sum()
    print(graph_nodes(y, {"x": x, "w": w}))
    print(explain_leaf(x).reason, "|", explain_leaf(x * w).reason)
