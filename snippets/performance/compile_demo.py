"""Graph capture and compilation in PyTorch 2: ``torch.compile`` (TorchDynamo captures FX graphs and
hands them to a backend), graph breaks via ``torch._dynamo.explain``, recompilation on new shapes,
``torch.export`` (one whole graph of ATen ops) and the older TorchScript (``script`` vs ``trace``).

Reference: PyTorch docs, "torch.compile", "torch.compiler: graph breaks", "torch.export", "TorchScript";
Ansel et al. 2024, "PyTorch 2: Faster Machine Learning Through Dynamic Python Bytecode Transformation
and Graph Compilation" (ASPLOS).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch._dynamo
from torch import Tensor, nn

__all__ = [
    "BreakReport",
    "CompareResult",
    "GraphRecorder",
    "branch_on_data",
    "branch_with_where",
    "compile_and_compare",
    "export_ops",
    "graph_break_report",
    "script_vs_trace",
    "uses_item",
]


# --8<-- [start:compare]
@dataclass
class CompareResult:
    """Eager vs compiled: outputs and gradients (of the inputs and of every named parameter)."""

    eager_out: Tensor
    compiled_out: Tensor
    eager_grads: dict[str, Tensor]
    compiled_grads: dict[str, Tensor]

    def max_abs_diff(self) -> float:
        """Largest absolute difference over the output and all gradients."""
        diffs = [(self.eager_out - self.compiled_out).abs().max().item()]
        diffs += [(self.eager_grads[k] - self.compiled_grads[k]).abs().max().item() for k in self.eager_grads]
        return max(diffs)


def compile_and_compare(model: nn.Module, *inputs: Tensor, backend: str | Callable = "aot_eager") -> CompareResult:
    """Run ``model`` eagerly and as ``torch.compile(model, backend=backend)`` on copies of ``inputs``;
    backpropagate the same upstream gradient through both and collect every gradient.

    ``backend="aot_eager"`` captures forward *and* backward graphs (TorchDynamo + AOTAutograd) but runs
    them with ordinary PyTorch kernels — no code generation, no C++ compiler; ``"inductor"`` (the
    default of ``torch.compile``) generates C++/OpenMP on CPUs and Triton on GPUs.
    Outputs: whatever shape ``model`` returns; gradients keyed ``input<i>`` and by parameter name.
    Resets ``model``'s ``.grad`` fields (``zero_grad(set_to_none=True)``) before each run.
    """
    if not inputs:
        raise ValueError("compile_and_compare needs at least one input tensor")
    for i, x in enumerate(inputs):
        if not isinstance(x, Tensor):
            raise TypeError(f"inputs[{i}] must be a torch.Tensor, got {type(x).__name__}")
    compiled = torch.compile(model, backend=backend)  # shares model's parameters
    results = []
    for fn in (model, compiled):
        xs = [x.detach().clone().requires_grad_(x.is_floating_point()) for x in inputs]
        model.zero_grad(set_to_none=True)
        out = fn(*xs)
        out.backward(torch.ones_like(out))
        grads = {f"input{i}": x.grad for i, x in enumerate(xs) if x.grad is not None}
        grads |= {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
        results.append((out.detach(), grads))
    (eager_out, eager_grads), (compiled_out, compiled_grads) = results
    return CompareResult(eager_out, compiled_out, eager_grads, compiled_grads)


# --8<-- [end:compare]


# --8<-- [start:recorder]
@dataclass
class GraphRecorder:
    """A ``torch.compile`` backend is just a callable ``(GraphModule, example_inputs) -> callable``.
    This one keeps every FX graph TorchDynamo hands it and runs the graph as it is."""

    graphs: list[torch.fx.GraphModule] = field(default_factory=list)

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: list) -> Callable:
        self.graphs.append(gm)
        return gm.forward

    def ops(self, index: int = -1) -> list[str]:
        """Names of the functions and methods called in one captured graph."""
        nodes = self.graphs[index].graph.nodes
        return [n.target if isinstance(n.target, str) else n.target.__name__ for n in nodes if n.op.startswith("call")]


# --8<-- [end:recorder]


# --8<-- [start:breaks]
def branch_on_data(x: Tensor) -> Tensor:
    """An ``if`` on a tensor value: TorchDynamo must leave the graph to let Python decide."""
    y = torch.sin(x)
    if y.sum() > 0:
        return y * 2
    return y - 1


def uses_item(x: Tensor) -> Tensor:
    """``.item()`` turns a tensor into a Python number: a graph break by default."""
    y = x + 1
    return y * y.sum().item()


def branch_with_where(x: Tensor) -> Tensor:
    """``branch_on_data`` without the break: both branches as tensor ops, chosen by ``torch.where``."""
    y = torch.sin(x)
    return torch.where(y.sum() > 0, y * 2, y - 1)


@dataclass(frozen=True)
class BreakReport:
    """What ``torch._dynamo.explain`` found: graphs, graph breaks, captured ops, first line of each reason."""

    graph_count: int
    graph_break_count: int
    op_count: int
    reasons: list[str]


def graph_break_report(fn: Callable, *inputs: Tensor) -> BreakReport:
    """Trace ``fn(*inputs)`` with TorchDynamo (nothing is compiled) and report its graph breaks."""
    torch._dynamo.reset()  # forget earlier compilations so the report covers this call only
    log = logging.getLogger("torch._dynamo")
    level = log.level
    log.setLevel(logging.ERROR)  # the report is the message: no duplicate warnings on stderr
    try:
        ex = torch._dynamo.explain(fn)(*inputs)
    finally:
        log.setLevel(level)
    reasons = [str(b.reason).strip().splitlines()[0] for b in ex.break_reasons]
    return BreakReport(ex.graph_count, ex.graph_break_count, ex.op_count, reasons)


# --8<-- [end:breaks]


# --8<-- [start:export]
def export_ops(module: nn.Module, *inputs: Tensor) -> list[str]:
    """ATen operators of ``torch.export.export(module, inputs)``: one whole graph, no Python left,
    or an error — export never falls back to Python at a graph break."""
    ep = torch.export.export(module, tuple(inputs))
    return [str(n.target) for n in ep.graph.nodes if n.op == "call_function"]


# --8<-- [end:export]


# --8<-- [start:torchscript]
def script_vs_trace(fn: Callable[[Tensor], Tensor], example: Tensor, other: Tensor) -> dict[str, Tensor]:
    """``fn(other)`` run eagerly, through ``torch.jit.script`` (compiles the Python source, keeps the
    ``if``) and through ``torch.jit.trace`` on ``example`` (records one run: the branch taken for
    ``example`` is frozen). Both TorchScript entry points are deprecated in favour of
    ``torch.compile`` / ``torch.export``; their warnings are silenced here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        scripted = torch.jit.script(fn)
        traced = torch.jit.trace(fn, (example,))
    return {"eager": fn(other), "script": scripted(other), "trace": traced(other)}


# --8<-- [end:torchscript]


if __name__ == "__main__":
    x = torch.randn(8, generator=torch.Generator().manual_seed(0))
    for f in (branch_on_data, uses_item, branch_with_where):
        r = graph_break_report(f, x)
        print(f"{f.__name__}: {r.graph_count} graph(s), {r.graph_break_count} break(s) {r.reasons}")
    rec = GraphRecorder()
    torch.compile(branch_with_where, backend=rec)(x)
    print("captured ops:", rec.ops())
