"""The dispatcher, observed: the ATen ops of an nn.Linear step, the keys that route them, autocast, meta."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from snippets.pytorch.dispatch_logger import OpLogger, dispatch_keys, kernel_kinds, trace_step
from tests.conftest import assert_close


def _linear(device: torch.device, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(3, 2).to(device=device, dtype=torch.float64)


def test_linear_step_logs_addmm_forward_and_mm_backward(device: torch.device) -> None:
    layer = _linear(device)
    x = torch.randn(4, 3, dtype=torch.float64, device=device, requires_grad=True)
    log = trace_step(layer, x)
    fwd, bwd = log.counts("forward"), log.counts("backward")
    assert log.ops("forward") == ["aten.t", "aten.addmm", "aten.sum"]  # F.linear = transpose + fused addmm
    assert bwd["aten.mm"] == 2  # grad of the input and grad of the weight
    assert bwd["aten.sum"] == 1  # grad of the bias: sum over the batch
    assert bwd["aten.detach"] == 3  # AccumulateGrad stores x.grad, weight.grad, bias.grad
    assert log.ops("backward")[0] == "aten.ones_like"  # the seed gradient d(loss)/d(loss) = 1
    assert fwd["aten.mm"] == 0 and bwd["aten.addmm"] == 0
    assert {r.devices for r in log.records if r.devices} == {(device.type,)}
    assert all(r.dtypes in ((), ("float64",)) for r in log.records)


def test_counts_are_stable_from_run_to_run() -> None:
    runs = []
    for seed in range(3):
        layer = _linear(torch.device("cpu"), seed)
        x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
        runs.append([(r.phase, r.op, r.overload) for r in trace_step(layer, x).records])
    assert runs[0] == runs[1] == runs[2]


def test_logging_changes_no_value_forward_or_backward(device: torch.device) -> None:
    for seed in range(3):
        ref, ours = _linear(device, seed), _linear(device, seed)
        x = torch.randn(6, 3, dtype=torch.float64, device=device)
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        ref(xa).pow(2).sum().backward()
        trace_step(ours, xb, loss=lambda out: out.pow(2).sum())
        assert_close(xb.grad, xa.grad)
        for p, q in zip(ours.parameters(), ref.parameters()):
            assert_close(p.grad, q.grad)
        with OpLogger():
            assert_close(ours(x), ref(x))


def test_autograd_computes_only_the_gradients_it_needs() -> None:
    layer = _linear(torch.device("cpu"))
    x = torch.randn(4, 3, dtype=torch.float64)  # no requires_grad: no input gradient
    bwd = trace_step(layer, x).counts("backward")
    assert bwd["aten.mm"] == 1 and bwd["aten.detach"] == 2


def test_without_zero_grad_accumulate_grad_adds_in_place() -> None:
    layer = _linear(torch.device("cpu"))
    x = torch.randn(4, 3, dtype=torch.float64)
    first = trace_step(layer, x).counts("backward")
    again = trace_step(layer, x).counts("backward")  # .grad already holds a tensor
    assert (first["aten.detach"], first["aten.add_"]) == (2, 0)  # stored as new gradients
    assert (again["aten.detach"], again["aten.add_"]) == (0, 2)  # added into the existing ones
    layer.zero_grad()  # set_to_none: back to storing
    assert trace_step(layer, x).counts("backward")["aten.add_"] == 0


def test_a_3d_input_is_flattened_by_views_around_addmm() -> None:
    layer = _linear(torch.device("cpu"))
    x = torch.randn(2, 4, 3, dtype=torch.float64)
    with OpLogger() as log:
        layer(x)
    assert log.ops() == ["aten.view", "aten.t", "aten.addmm", "aten.view"]
    with OpLogger() as log:
        torch.randn(2)  # factory functions are ATen ops too
    assert log.ops() == ["aten.randn"]


def test_no_grad_runs_the_same_kernels_without_a_backward() -> None:
    layer = _linear(torch.device("cpu"))
    x = torch.randn(4, 3, dtype=torch.float64)
    with OpLogger() as grad_on:
        y = layer(x)
    with torch.no_grad(), OpLogger() as grad_off:
        z = layer(x)
    assert grad_on.ops() == grad_off.ops() == ["aten.t", "aten.addmm"]
    assert y.grad_fn is not None and z.grad_fn is None


def test_autocast_key_inserts_casts_before_the_cpu_kernel() -> None:
    layer = nn.Linear(3, 2)
    x = torch.randn(4, 3)
    with OpLogger() as log, torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
    assert log.ops() == ["aten._to_copy"] * 3 + ["aten.t", "aten.addmm"]  # x, weight, bias cast first
    assert log.records[-1].dtypes == ("bfloat16",) and out.dtype == torch.bfloat16


def test_meta_device_dispatches_to_shape_only_kernels() -> None:
    layer = nn.Linear(1024, 4096, device="meta")
    x = torch.empty(64, 1024, device="meta")  # no memory behind it: shape, dtype and strides only
    with OpLogger() as log:
        out = layer(x)
    assert out.shape == (64, 4096) and out.device.type == "meta"
    assert log.ops() == ["aten.t", "aten.addmm"] and log.records[-1].devices == ("meta",)
    assert dispatch_keys(out)[-1] == "Meta"


def test_dispatch_keys_in_priority_order() -> None:
    x = torch.randn(2)
    keys = dispatch_keys(x)
    assert keys == ["AutocastCPU", "AutogradCPU", "ADInplaceOrView", "CPU"]
    assert keys[0] == torch._C._dispatch_keys(x).highestPriorityTypeId().name
    assert dispatch_keys(x.to_sparse())[-1] == "SparseCPU"  # the backend key follows the layout too
    with torch.inference_mode():
        frozen = torch.randn(2)
    assert dispatch_keys(frozen) == ["AutocastCPU", "CPU"]  # no Autograd, no ADInplaceOrView
    with torch.no_grad():
        made = torch.randn(2)
        assert not torch._C._dispatch_tls_is_dispatch_key_excluded(torch._C.DispatchKey.AutogradCPU)
    assert dispatch_keys(made) == keys  # no_grad keeps the keys


def test_kernel_table_of_addmm() -> None:
    kinds = kernel_kinds("aten::addmm", ["AutocastCPU", "AutogradCPU", "ADInplaceOrView", "CPU", "Meta", "NoSuchKey"])
    assert kinds["AutogradCPU"] == "autograd kernel"
    assert kinds["CPU"] == kinds["Meta"] == kinds["AutocastCPU"] == "kernel"
    assert kinds["ADInplaceOrView"] == "backend fallback"  # a fallthrough: not a view or in-place op
    assert "NoSuchKey" not in kinds
    assert kernel_kinds("aten::view", ["ADInplaceOrView"]) == {"ADInplaceOrView": "kernel"}  # views are tracked


def test_rejected_inputs() -> None:
    with pytest.raises(ValueError, match="phase must be None, 'forward' or 'backward', got phase='sideways'"):
        OpLogger().ops("sideways")
    with pytest.raises(TypeError, match="module must be an nn.Module, got function"):
        trace_step(lambda x: x, torch.randn(2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"loss must return a 0-d tensor, got Tensor torch.Size\(\[4, 2\]\)"):
        trace_step(nn.Linear(3, 2), torch.randn(4, 3), loss=lambda out: out)
    with pytest.raises(TypeError, match="x must be a torch.Tensor, got list"):
        dispatch_keys([1.0])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="op must be a qualified operator name such as 'aten::addmm', got op='addmm'"):
        kernel_kinds("addmm", ["CPU"])
    with pytest.raises(ValueError, match="op='aten::no_such_op' is not a registered operator"):
        kernel_kinds("aten::no_such_op", ["CPU"])
