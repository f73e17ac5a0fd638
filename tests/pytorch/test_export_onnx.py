"""ONNX export (torch.export-based) vs eager via ONNX Runtime; static graphs and control flow (torch 2.13)."""

from __future__ import annotations

import sys
import warnings

import onnx
import onnxruntime
import pytest
import torch
from torch import nn

from snippets.pytorch.export_onnx import (
    CondBranch,
    SignBranch,
    SmallNet,
    export_onnx,
    export_program,
    onnx_input_dims,
    require,
    run_onnxruntime,
    trace_branch,
)
from tests.conftest import assert_close


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory) -> dict:
    """The only two ONNX exports of the suite: dynamic batch and fixed batch (each costs ~1-4 s)."""
    tmp = tmp_path_factory.mktemp("onnx")
    torch.manual_seed(0)
    net = SmallNet().eval()
    x = torch.randn(2, 8)
    dynamic = export_onnx(net, (x,), tmp / "dynamic.onnx", input_names=["x"], output_names=["y"])
    static = export_onnx(net, (x,), tmp / "static.onnx", dynamic_batch=False, input_names=["x"])
    return {"net": net, "dynamic": dynamic, "static": static}


@pytest.mark.parametrize("batch", [2, 5, 1, 33])
def test_onnxruntime_matches_eager(onnx_files, batch: int) -> None:
    net = onnx_files["net"]
    x = torch.randn(batch, 8, generator=torch.Generator().manual_seed(batch))
    (y,) = run_onnxruntime(onnx_files["dynamic"], x)
    with torch.no_grad():
        ref = net(x)
    assert y.shape == ref.shape == (batch, 3) and y.dtype == torch.float32
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)  # float32: a different kernel library


def test_onnx_file_has_a_symbolic_batch_only_when_asked(onnx_files) -> None:
    assert onnx_input_dims(onnx_files["dynamic"]) == {"x": ["batch", 8]}
    assert onnx_input_dims(onnx_files["static"]) == {"x": [2, 8]}  # the example's batch size, frozen
    model = onnx.load(str(onnx_files["dynamic"]))
    assert [o.name for o in model.graph.output] == ["y"]
    assert model.opset_import[0].version >= 18
    assert not any(n.op_type in ("If", "Loop") for n in model.graph.node)  # a straight-line graph


def test_onnx_file_rejects_another_batch_size_or_dtype(onnx_files) -> None:
    (y,) = run_onnxruntime(onnx_files["static"], torch.randn(2, 8))
    assert y.shape == (2, 3)
    with pytest.raises(onnxruntime.capi.onnxruntime_pybind11_state.InvalidArgument, match="Got invalid dimensions"):
        run_onnxruntime(onnx_files["static"], torch.randn(5, 8))
    # the dtype is fixed by the example as well
    model = onnx.load(str(onnx_files["dynamic"]))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    with pytest.raises(onnxruntime.capi.onnxruntime_pybind11_state.InvalidArgument, match="Unexpected input data type"):
        run_onnxruntime(onnx_files["dynamic"], torch.randn(2, 8, dtype=torch.float64))


@pytest.mark.parametrize("seed", range(3))
def test_exported_program_matches_eager(seed: int, device: torch.device) -> None:
    """Always-run check (no ONNX needed): torch.export's graph computes what eager computes."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = SmallNet().to(device=device, dtype=torch.float64).eval()
    batch = int(torch.randint(2, 6, (1,), generator=g))
    x = torch.randn(batch, 8, generator=g, dtype=torch.float64).to(device)
    ep = export_program(net, x, dynamic_batch=True)
    gm = ep.module()
    for n in (batch, batch + 3):
        xi = torch.randn(n, 8, generator=g, dtype=torch.float64).to(device).requires_grad_()
        xr = xi.detach().clone().requires_grad_()
        out, ref = gm(xi), net(xr)
        assert_close(out, ref)
        grad = torch.randn_like(out)
        out.backward(grad)
        ref.backward(grad)
        assert_close(xi.grad, xr.grad)


def test_export_fixes_shapes_unless_a_dim_is_dynamic() -> None:
    torch.manual_seed(0)
    net = SmallNet().eval()
    ep = export_program(net, torch.randn(2, 8))
    with pytest.raises(AssertionError, match=r"Guard failed: x\.size\(\)\[0\] == 2"):
        ep.module()(torch.randn(5, 8))
    for size in (0, 1):  # why export_onnx wants an example batch >= 2
        with pytest.raises(torch._dynamo.exc.UserError, match=rf"specialized it to be a constant \({size}\)"):
            export_program(net, torch.randn(size, 8), dynamic_batch=True)
    dyn = export_program(net, torch.randn(2, 8), dynamic_batch=True).module()
    assert dyn(torch.randn(5, 8)).shape == (5, 3)


def test_trace_freezes_the_branch_it_saw() -> None:
    x = torch.ones(2, 3)
    traced, caught = trace_branch(SignBranch(), x)  # sum > 0 while tracing: "x * 2"
    assert torch.equal(traced(x), SignBranch()(x))
    assert torch.equal(traced(-x), -2 * x)  # the graph still doubles ...
    assert torch.equal(SignBranch()(-x), x)  # ... where eager negates
    assert any(c.startswith("TracerWarning: Converting a tensor to a Python boolean") for c in caught)
    assert any(c.startswith("DeprecationWarning: `torch.jit.trace` is deprecated") for c in caught)
    assert "mul" in traced.code and "neg" not in traced.code


def test_export_refuses_data_dependent_control_flow_and_cond_fixes_it() -> None:
    x = torch.ones(2, 3)
    with pytest.raises(RuntimeError, match="Could not guard on data-dependent expression"):
        export_program(SignBranch(), x)
    ep = export_program(CondBranch(), x)
    for t in (
        x,
        -x,
        torch.tensor([[3.0, -1.0, -1.5], [0.0, 0.0, 0.0]]),
        torch.tensor([[-3.0, 1.0, 1.5], [0.0, 0.0, 0.0]]),
    ):
        assert torch.equal(ep.module()(t), SignBranch()(t))  # both branches live in the graph
    assert any(n.target is torch.ops.higher_order.cond for n in ep.graph.nodes)


def test_fx_symbolic_trace_cannot_branch_on_tensors_and_freezes_python_flags() -> None:
    with pytest.raises(
        torch.fx.proxy.TraceError, match="symbolically traced variables cannot be used as inputs to control flow"
    ):
        torch.fx.symbolic_trace(SignBranch())

    class Flag(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.use_relu = True

        def forward(self, x):
            return torch.relu(x) if self.use_relu else x

    m = Flag()
    gm = torch.fx.symbolic_trace(m)
    m.use_relu = False
    x = torch.tensor([-1.0, 2.0])
    assert torch.equal(m(x), x) and torch.equal(gm(x), torch.tensor([0.0, 2.0]))  # frozen at trace time
    ops = [n.target for n in torch.fx.symbolic_trace(SmallNet()).graph.nodes if n.op != "placeholder"]
    assert ops == ["fc1", "norm", nn.functional.gelu, "fc2", "output"]


def test_missing_optional_packages_raise_clear_errors(tmp_path, monkeypatch) -> None:
    net = SmallNet().eval()
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(
        ImportError, match=r"torch\.onnx\.export\(dynamo=True\) needs the optional package 'onnxscript'"
    ):
        export_onnx(net, (torch.randn(2, 8),), tmp_path / "m.onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match="run_onnxruntime needs the optional package 'onnxruntime': pip install"):
        run_onnxruntime(tmp_path / "m.onnx", torch.randn(2, 8))
    # the legacy TorchScript exporter (dynamo=False) needs `onnx`, and says so
    monkeypatch.setitem(sys.modules, "onnx", None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "You are using the legacy TorchScript-based ONNX export"
        with pytest.raises(torch.onnx.OnnxExporterError, match="Module onnx is not installed!"):
            torch.onnx.export(net, (torch.randn(2, 8),), str(tmp_path / "legacy.onnx"), dynamo=False)
    with pytest.raises(ImportError, match="needs the optional package 'onnx'"):
        require("onnx", "this check")


@pytest.mark.filterwarnings("ignore:The feature will be removed:DeprecationWarning")
def test_legacy_exporter_is_deprecated(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)  # stop right after the warning, before any work
    with pytest.warns(DeprecationWarning, match="legacy TorchScript-based ONNX export"):
        with pytest.raises(torch.onnx.OnnxExporterError):
            torch.onnx.export(SmallNet().eval(), (torch.randn(2, 8),), str(tmp_path / "l.onnx"), dynamo=False)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"example_inputs": [torch.randn(2, 8)]}, TypeError, "example_inputs must be a tuple of tensors, got list"),
        ({"example_inputs": (torch.randn(1, 8),)}, ValueError, r"example batch size >= 2 .* got \[\(1, 8\)\]"),
        ({"example_inputs": (torch.tensor(1.0),)}, ValueError, r"got \[\(\)\]"),
        ({"path": "no/such/dir/m.onnx"}, ValueError, "directory 'no/such/dir' does not exist"),
        ({"train": True}, ValueError, r"model is in training mode; call model\.eval\(\) first"),
    ],
)
def test_export_onnx_rejects_bad_input(kwargs, error, match, tmp_path) -> None:
    net = SmallNet()
    net.train(kwargs.pop("train", False))
    args = {"model": net, "example_inputs": (torch.randn(2, 8),), "path": tmp_path / "m.onnx", **kwargs}
    with pytest.raises(error, match=match):
        export_onnx(**args)
    assert not (tmp_path / "m.onnx").exists()


def test_run_onnxruntime_rejects_wrong_number_of_inputs(onnx_files) -> None:
    with pytest.raises(ValueError, match=r"the ONNX graph has 1 inputs \['x'\], got 2 tensors"):
        run_onnxruntime(onnx_files["dynamic"], torch.randn(2, 8), torch.randn(2, 8))


def test_module_demo_runs(capsys) -> None:
    import runpy

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # runpy: module already imported
        runpy.run_module("snippets.pytorch.export_onnx", run_name="__main__")
    out = capsys.readouterr().out
    assert "eager(-x) = [1.0, 1.0, 1.0]  traced(-x) = [-2.0, -2.0, -2.0]" in out
    assert "TracerWarning" in out
