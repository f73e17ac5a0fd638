"""torch.compile (aot_eager, one tiny inductor run), graph breaks, recompilation, torch.export, TorchScript."""

from __future__ import annotations

import shutil
import warnings

import pytest
import torch
import torch._dynamo
from torch import nn

from snippets.performance.compile_demo import (
    GraphRecorder,
    branch_on_data,
    branch_with_where,
    compile_and_compare,
    export_ops,
    graph_break_report,
    script_vs_trace,
    uses_item,
)
from snippets.performance.symbolic import TinyBlock
from tests.conftest import assert_close

F64 = torch.float64


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    """Every test starts without cached compilations (and leaves none behind)."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _model(kind: str, d_out: int) -> nn.Module:
    if kind == "mlp":
        return nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.LayerNorm(16), nn.Linear(16, d_out))
    layer = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, dropout=0.0, batch_first=True)
    return nn.Sequential(layer, nn.LayerNorm(8), nn.Linear(8, d_out))


@pytest.mark.parametrize(("kind", "seed"), [("mlp", 0), ("transformer", 1)])
def test_aot_eager_matches_eager_forward_and_backward(kind: str, seed: int, device: torch.device) -> None:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    n, d = (int(v) for v in torch.randint(2, 6, (2,), generator=g))
    model = _model(kind, d).to(device, F64)
    x = torch.randn(n, 3, 8, generator=g, dtype=F64).to(device)
    r = compile_and_compare(model, x, backend="aot_eager")
    assert r.compiled_out.shape == (n, 3, d)
    assert_close(r.compiled_out, r.eager_out)
    assert r.eager_grads.keys() == r.compiled_grads.keys()
    assert "input0" in r.eager_grads and len(r.eager_grads) == 1 + len(list(model.parameters()))
    for k in r.eager_grads:
        assert_close(r.compiled_grads[k], r.eager_grads[k])
    assert r.max_abs_diff() < 1e-12


def test_compare_result_can_detect_a_difference() -> None:
    torch.manual_seed(0)
    r = compile_and_compare(nn.Linear(3, 2).double(), torch.randn(4, 3, dtype=F64), backend="aot_eager")
    r.compiled_out = r.compiled_out + 1e-3  # a deliberately wrong compiled output
    assert r.max_abs_diff() == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="at least one input"):
        compile_and_compare(nn.Linear(3, 2))
    with pytest.raises(TypeError, match=r"inputs\[1\] must be a torch.Tensor, got list"):
        compile_and_compare(nn.Bilinear(3, 3, 2), torch.randn(4, 3), [[0.0] * 3] * 4)  # type: ignore[arg-type]


def test_graph_break_on_data_dependent_if() -> None:
    r = graph_break_report(branch_on_data, torch.randn(8))
    assert (r.graph_count, r.graph_break_count) == (2, 1)
    assert r.reasons == ["generic_jump TensorVariable()"]  # Dynamo's reason: a jump on a tensor value


def test_graph_break_on_item() -> None:
    r = graph_break_report(uses_item, torch.randn(8))
    assert (r.graph_count, r.graph_break_count) == (2, 1)
    assert r.reasons == ["Unsupported Tensor.item() call with capture_scalar_outputs=False"]


def test_torch_where_removes_the_break_and_gives_the_same_values() -> None:
    r = graph_break_report(branch_with_where, torch.randn(8))
    assert (r.graph_count, r.graph_break_count, r.reasons) == (1, 0, [])
    for x in (torch.ones(4), -torch.ones(4), torch.randn(4, generator=torch.Generator().manual_seed(1))):
        assert torch.equal(branch_with_where(x), branch_on_data(x))


def test_fullgraph_turns_a_graph_break_into_an_error() -> None:
    with pytest.raises(torch._dynamo.exc.Unsupported, match="Data-dependent branching"):
        torch.compile(branch_on_data, backend="eager", fullgraph=True)(torch.randn(3))


def test_backend_receives_fx_graphs_and_graph_breaks_split_them() -> None:
    rec = GraphRecorder()
    fn = torch.compile(branch_on_data, backend=rec)
    pos, neg = torch.ones(3), -torch.ones(3)
    assert torch.equal(fn(pos), branch_on_data(pos)) and torch.equal(fn(neg), branch_on_data(neg))
    assert all(isinstance(gm, torch.fx.GraphModule) for gm in rec.graphs)
    # the graph before the break, then one graph per branch taken after it
    assert [rec.ops(i) for i in range(len(rec.graphs))] == [["sin", "sum", "gt"], ["mul"], ["sub"]]


def test_new_shapes_recompile_once_then_dynamic() -> None:
    rec = GraphRecorder()
    fn = torch.compile(branch_with_where, backend=rec)
    counts = []
    for n in (3, 5, 7, 9):
        fn(torch.randn(n))
        counts.append(len(rec.graphs))
    assert counts == [1, 2, 2, 2]  # a 2nd shape triggers one recompile with a symbolic size
    assert [n.op for n in rec.graphs[1].graph.nodes][:2] == ["placeholder", "placeholder"]  # SymInt + tensor
    assert isinstance(next(iter(rec.graphs[1].graph.nodes)).meta["example_value"], torch.SymInt)
    torch._dynamo.reset()
    static = GraphRecorder()
    fn = torch.compile(branch_with_where, backend=static, dynamic=False)
    for n in (3, 5, 7, 9):
        fn(torch.randn(n))
    assert len(static.graphs) == 4  # dynamic=False: one graph per shape


def test_export_gives_one_graph_of_aten_ops() -> None:
    torch.manual_seed(0)
    block = TinyBlock()
    assert export_ops(block, torch.randn(2, 4)) == [
        "aten.linear.default",
        "aten.relu.default",
        "aten.mul.Tensor",
        "aten.add.Tensor",
    ]
    ep = torch.export.export(block, (torch.randn(2, 4),))
    x = torch.randn(2, 4)
    assert_close(ep.module()(x), block(x), rtol=1e-6, atol=1e-6)


def test_export_refuses_data_dependent_if() -> None:
    class Branchy(nn.Module):
        def forward(self, x):
            return branch_on_data(x)

    with pytest.raises(RuntimeError, match="Could not guard on data-dependent expression"):
        torch.export.export(Branchy(), (torch.randn(3),))


def test_script_keeps_the_branch_trace_freezes_it() -> None:
    out = script_vs_trace(branch_on_data, example=torch.ones(3), other=-torch.ones(3))
    assert torch.equal(out["script"], out["eager"])  # scripted: the `if` is compiled
    assert torch.equal(out["eager"], torch.sin(-torch.ones(3)) - 1)
    assert torch.equal(out["trace"], torch.sin(-torch.ones(3)) * 2)  # traced on ones: the `* 2` branch forever
    assert not torch.equal(out["trace"], out["eager"])


def test_torchscript_is_deprecated() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.jit.script(branch_on_data)
        torch.jit.trace(branch_with_where, (torch.ones(3),))
    messages = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
    assert any("`torch.jit.script` is deprecated" in m for m in messages)
    assert any("`torch.jit.trace` is deprecated" in m for m in messages)


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None, reason="inductor needs a C++ compiler")
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")  # torch's own import
def test_inductor_generates_code_that_matches_eager() -> None:
    """The file's only inductor compile: ~1 s with a warm inductor cache, several seconds cold."""
    import torch._inductor.config

    x = torch.randn(16, generator=torch.Generator().manual_seed(0))
    with torch._inductor.config.patch(compile_threads=1):  # no worker pool on a small machine
        fn = torch.compile(branch_with_where)  # default backend: inductor (C++/OpenMP on the CPU)
        torch.testing.assert_close(fn(x), branch_with_where(x))
