"""Imperative vs symbolic programming: a tiny graph builder whose ``compile_graph`` generates a Python
function (with constant folding and shared subexpressions computed once), and ``torch.fx`` tracing.

Imperative code runs each operation as Python reaches it; symbolic code first builds a graph of the
whole computation, optimises it, and only then runs it. Reference: d2l.ai §12.1 "Compilers and
Interpreters" (命令式和符号式混合编程); PyTorch docs, "torch.fx".
"""

from __future__ import annotations

import builtins
import keyword
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.fx
from torch import Tensor, nn

__all__ = [
    "FUNCTIONS",
    "Add",
    "Call",
    "CompiledGraph",
    "Const",
    "Mul",
    "Node",
    "Sub",
    "TinyBlock",
    "Var",
    "compile_graph",
    "evaluate",
    "fx_ops",
    "topological_order",
]

# name -> (torch function used at run time, Python function used for constant folding)
FUNCTIONS: dict[str, tuple[Callable, Callable]] = {
    "exp": (torch.exp, math.exp),
    "sin": (torch.sin, math.sin),
    "tanh": (torch.tanh, math.tanh),
    "relu": (torch.relu, lambda v: max(v, 0.0)),
}


# --8<-- [start:nodes]
class Node:
    """A node of an expression graph. ``+``, ``-``, ``*`` build new nodes instead of computing;
    Python numbers become ``Const``. Nodes compare by identity, so a node used twice is one node."""

    inputs: tuple[Node, ...] = ()

    def __add__(self, other: Node | float) -> Node:
        return Add(self, _as_node(other))

    def __radd__(self, other: float) -> Node:
        return Add(_as_node(other), self)

    def __sub__(self, other: Node | float) -> Node:
        return Sub(self, _as_node(other))

    def __rsub__(self, other: float) -> Node:
        return Sub(_as_node(other), self)

    def __mul__(self, other: Node | float) -> Node:
        return Mul(self, _as_node(other))

    def __rmul__(self, other: float) -> Node:
        return Mul(_as_node(other), self)


class Var(Node):
    """An input of the graph, bound to a value (number or tensor) when the graph runs."""

    def __init__(self, name: str) -> None:
        if not name.isidentifier() or keyword.iskeyword(name):
            raise ValueError(f"Var name {name!r} is not a valid Python identifier")
        self.name = name


class Const(Node):
    """A number known when the graph is built (a candidate for constant folding)."""

    def __init__(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"Const value must be an int or float, got {type(value).__name__}")
        self.value = float(value)


class Add(Node):
    def __init__(self, a: Node, b: Node) -> None:
        self.inputs = (a, b)


class Sub(Node):
    def __init__(self, a: Node, b: Node) -> None:
        self.inputs = (a, b)


class Mul(Node):
    def __init__(self, a: Node, b: Node) -> None:
        self.inputs = (a, b)


class Call(Node):
    """A unary function from ``FUNCTIONS`` (``exp``, ``sin``, ``tanh``, ``relu``)."""

    def __init__(self, fn: str, arg: Node | float) -> None:
        if fn not in FUNCTIONS:
            raise ValueError(f"unknown function {fn!r}; choose one of {sorted(FUNCTIONS)}")
        self.fn, self.inputs = fn, (_as_node(arg),)


def _as_node(x: Node | float) -> Node:
    if isinstance(x, Node):
        return x
    if isinstance(x, bool) or not isinstance(x, int | float):
        raise TypeError(f"cannot use {type(x).__name__} in a graph; use a Node or a Python number")
    return Const(x)


# --8<-- [end:nodes]


_BINARY = {Add: ("+", operator.add), Sub: ("-", operator.sub), Mul: ("*", operator.mul)}


def topological_order(output: Node) -> list[Node]:
    """Every node reachable from ``output``, each once, inputs before the nodes that use them."""
    order: list[Node] = []
    seen: set[int] = set()
    stack: list[tuple[Node, bool]] = [(output, False)]
    while stack:  # iterative post-order DFS (deep graphs do not hit the recursion limit)
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        stack.extend((child, False) for child in reversed(node.inputs) if id(child) not in seen)
    return order


# --8<-- [start:evaluate]
def evaluate(output: Node, **env: Tensor | float) -> Tensor | float:
    """Interpret the graph: walk it and compute every node, on every call (no compilation)."""
    values: dict[int, Tensor | float] = {}
    for node in topological_order(output):
        if isinstance(node, Var):
            if node.name not in env:
                raise ValueError(f"no value for Var {node.name!r}; got {sorted(env)}")
            values[id(node)] = env[node.name]
        elif isinstance(node, Const):
            values[id(node)] = node.value
        elif isinstance(node, Call):
            (arg,) = (values[id(i)] for i in node.inputs)
            torch_fn, py_fn = FUNCTIONS[node.fn]
            values[id(node)] = torch_fn(arg) if isinstance(arg, Tensor) else py_fn(arg)
        else:
            a, b = (values[id(i)] for i in node.inputs)
            values[id(node)] = _BINARY[type(node)][1](a, b)
    return values[id(output)]


# --8<-- [end:evaluate]


@dataclass(frozen=True)
class CompiledGraph:
    """A graph compiled to Python: ``fn`` (call it like the graph), its ``source``, how many
    operations remain (``num_ops``) and how many were computed at compile time (``num_folded``)."""

    fn: Callable[..., Tensor | float]
    source: str
    num_ops: int
    num_folded: int

    def __call__(self, *args: Tensor | float) -> Tensor | float:
        return self.fn(*args)


# --8<-- [start:compile]
def compile_graph(output: Node, inputs: list[str], name: str = "compiled") -> CompiledGraph:
    """Generate the source of ``def name(*inputs)`` for the graph, then ``exec`` it once.

    Constant folding: a node whose inputs are all constants is computed now, at compile time, and
    emitted as a number. Every other node becomes one line ``t<k> = ...``; a node shared by several
    users is computed once; nodes not reachable from ``output`` are never emitted.
    """
    if len(set(inputs)) != len(inputs):
        raise ValueError(f"inputs must be distinct, got {inputs}")
    for n in inputs:
        Var(n)  # validates the name
    expr: dict[int, str] = {}  # node -> Python expression (a number, an input name or a temporary)
    folded: dict[int, float] = {}  # node -> its value, when known at compile time
    lines: list[str] = []
    num_folded = 0
    for node in topological_order(output):
        if isinstance(node, Var):
            if node.name not in inputs:
                raise ValueError(f"the graph uses Var {node.name!r}, which is not in inputs {inputs}")
            expr[id(node)] = node.name
            continue
        if isinstance(node, Const):
            folded[id(node)] = node.value
        elif all(id(i) in folded for i in node.inputs):  # constant folding
            args = [folded[id(i)] for i in node.inputs]
            fold = FUNCTIONS[node.fn][1] if isinstance(node, Call) else _BINARY[type(node)][1]
            folded[id(node)] = fold(*args)
            num_folded += 1
        else:
            args = [expr[id(i)] for i in node.inputs]
            code = f"torch.{node.fn}({args[0]})" if isinstance(node, Call) else f" {_BINARY[type(node)][0]} ".join(args)
            expr[id(node)] = f"t{len(lines)}"
            lines.append(f"    t{len(lines)} = {code}")
            continue
        expr[id(node)] = repr(folded[id(node)])
    source = f"def {name}({', '.join(inputs)}):\n" + "".join(line + "\n" for line in lines)
    source += f"    return {expr[id(output)]}\n"
    namespace: dict[str, object] = {"torch": torch}
    exec(builtins.compile(source, f"<graph {name}>", "exec"), namespace)  # our own generated code, nothing from outside
    return CompiledGraph(namespace[name], source, len(lines), num_folded)


# --8<-- [end:compile]


# --8<-- [start:fx]
class TinyBlock(nn.Module):
    """``relu(Linear(x)) * 2 + x`` — ``x: (N, features)`` → ``(N, features)``."""

    def __init__(self, features: int = 4) -> None:
        super().__init__()
        self.lin = nn.Linear(features, features)

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.lin(x)) * 2 + x


def fx_ops(fn: nn.Module | Callable, concrete_args: dict | None = None) -> list[tuple[str, str]]:
    """``(opcode, target)`` of every node of ``torch.fx.symbolic_trace(fn)``'s graph, in order.

    Tracing calls ``fn`` once with Proxy objects and records every operation; Python control flow
    that does not depend on tensor *values* (loops over ``range``, flags in ``concrete_args``) is
    unrolled or specialised, and control flow that does raises ``torch.fx.proxy.TraceError``.
    """
    gm = torch.fx.symbolic_trace(fn, concrete_args=concrete_args)
    return [(n.op, n.target if isinstance(n.target, str) else n.target.__name__) for n in gm.graph.nodes]


# --8<-- [end:fx]


if __name__ == "__main__":
    x, y = Var("x"), Var("y")
    g = (2 * Const(3) + 1) * x * y + Call("tanh", x * y)  # x * y is built twice: two nodes
    compiled = compile_graph(g, ["x", "y"])
    print(compiled.source)
    a, b = torch.randn(3, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    eager = 7 * a * b + torch.tanh(a * b)
    print("compiled == eager:", torch.allclose(compiled(a, b), eager), "| folded:", compiled.num_folded)
    print("fx ops of TinyBlock:", fx_ops(TinyBlock()))
