"""ONNX export with the ``torch.export``-based exporter, and what a static graph does to control flow.

Reference: PyTorch docs "torch.onnx" (``dynamo=True``, the default since 2.9) and "torch.export";
ONNX Runtime's Python API. ``onnx``, ``onnxscript`` and ``onnxruntime`` are optional here: they are
imported only inside the functions that need them, with a clear error when they are missing.
"""

from __future__ import annotations

import importlib
import os
import warnings
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor, nn

__all__ = [
    "SmallNet",
    "require",
    "export_onnx",
    "onnx_input_dims",
    "run_onnxruntime",
    "SignBranch",
    "CondBranch",
    "trace_branch",
    "export_program",
]

PathLike = str | os.PathLike


class SmallNet(nn.Module):
    """``(B, 8) -> (B, 3)``: Linear, LayerNorm, GELU, Linear — a graph with no control flow."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.norm = nn.LayerNorm(16)
        self.fc2 = nn.Linear(16, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(nn.functional.gelu(self.norm(self.fc1(x))))


def require(package: str, purpose: str) -> ModuleType:
    """Import an optional package or raise an ImportError that says what needs it and how to get it."""
    try:
        return importlib.import_module(package)
    except ImportError as e:
        raise ImportError(f"{purpose} needs the optional package {package!r}: pip install {package}") from e


# --8<-- [start:export]
def export_onnx(
    model: nn.Module,
    example_inputs: tuple[Tensor, ...],
    path: PathLike,
    *,
    dynamic_batch: bool = True,
    input_names: list[str] | None = None,
    output_names: list[str] | None = None,
) -> Path:
    """Export ``model`` to an ONNX file with ``torch.onnx.export(..., dynamo=True)``.

    The exporter runs ``torch.export`` on ``example_inputs``: shapes and dtypes are fixed by the
    examples unless a dimension is declared dynamic. ``dynamic_batch=True`` declares dim 0 of
    every input as the symbolic ``batch``; the example batch must then be >= 2, because
    ``torch.export`` specializes sizes 0 and 1 to constants.
    """
    if not isinstance(example_inputs, tuple) or not all(isinstance(t, Tensor) for t in example_inputs):
        raise TypeError(f"example_inputs must be a tuple of tensors, got {type(example_inputs).__name__}")
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"path={str(path)!r}: directory {str(path.parent)!r} does not exist")
    if model.training:
        raise ValueError("model is in training mode; call model.eval() first (dropout/batch norm would be exported)")
    if dynamic_batch and any(t.dim() == 0 or t.shape[0] < 2 for t in example_inputs):
        shapes = [tuple(t.shape) for t in example_inputs]
        raise ValueError(
            f"dynamic_batch=True needs an example batch size >= 2 (sizes 0/1 get specialized), got {shapes}"
        )
    require("onnxscript", "torch.onnx.export(dynamo=True)")
    require("onnx", "torch.onnx.export")
    dynamic_shapes = None
    if dynamic_batch:
        batch = torch.export.Dim("batch")
        dynamic_shapes = tuple({0: batch} for _ in example_inputs)
    with warnings.catch_warnings():  # internal pytree deprecation noise of the 2.13 exporter
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
        torch.onnx.export(
            model, example_inputs, str(path), dynamo=True, dynamic_shapes=dynamic_shapes,
            input_names=input_names, output_names=output_names,
        )  # fmt: skip
    return path


# --8<-- [end:export]


def onnx_input_dims(path: PathLike) -> dict[str, list[int | str]]:
    """Input name -> dims of an ONNX file: ints for fixed sizes, strings for symbolic ones."""
    onnx = require("onnx", "onnx_input_dims")
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    return {
        i.name: [d.dim_param if d.dim_param else d.dim_value for d in i.type.tensor_type.shape.dim]
        for i in model.graph.input
    }


# --8<-- [start:run]
def run_onnxruntime(path: PathLike, *inputs: Tensor) -> list[Tensor]:
    """Run an ONNX file with ONNX Runtime on the CPU; inputs are fed in the graph's input order."""
    ort = require("onnxruntime", "run_onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    if len(names) != len(inputs):
        raise ValueError(f"the ONNX graph has {len(names)} inputs {names}, got {len(inputs)} tensors")
    feed = {n: t.detach().cpu().numpy() for n, t in zip(names, inputs)}
    return [torch.from_numpy(out) for out in session.run(None, feed)]


# --8<-- [end:run]


# --8<-- [start:branch]
class SignBranch(nn.Module):
    """Data-dependent control flow: the branch depends on the *values* of ``x``."""

    def forward(self, x: Tensor) -> Tensor:
        if x.sum() > 0:
            return x * 2
        return -x


class CondBranch(nn.Module):
    """The same function with ``torch.cond``: both branches become part of the graph."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.cond(x.sum() > 0, lambda t: t * 2, lambda t: -t, (x,))


def trace_branch(model: nn.Module, example: Tensor) -> tuple[torch.jit.ScriptModule, list[str]]:
    """``torch.jit.trace`` records the ops that ran for ``example``: the branch taken is frozen in.

    Returns the traced module and the warnings tracing raised (a TracerWarning about converting
    a tensor to a Python bool, and the DeprecationWarning of ``torch.jit.trace`` itself).
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        traced = torch.jit.trace(model, example)
    return traced, [f"{w.category.__name__}: {w.message}" for w in caught]


def export_program(model: nn.Module, example: Tensor, dynamic_batch: bool = False) -> torch.export.ExportedProgram:
    """``torch.export.export``: a full graph or an error — data-dependent ``if`` raises, ``torch.cond`` works."""
    dynamic_shapes = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
    return torch.export.export(model, (example,), dynamic_shapes=dynamic_shapes)


# --8<-- [end:branch]


if __name__ == "__main__":
    x = torch.ones(2, 3)
    traced, caught = trace_branch(SignBranch(), x)  # traced with sum > 0: the "x * 2" branch
    print("eager(-x) =", SignBranch()(-x)[0].tolist(), " traced(-x) =", traced(-x)[0].tolist())
    print("warnings while tracing:", [c.split(":")[0] for c in caught])
    gm = torch.fx.symbolic_trace(SmallNet())
    print("static graph:", [n.op + ":" + str(n.target) for n in gm.graph.nodes])
