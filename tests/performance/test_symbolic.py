"""The tiny graph compiler vs eager PyTorch, and torch.fx tracing (op lists, data-dependent control flow)."""

from __future__ import annotations

import pytest
import torch
import torch.fx

from snippets.performance.symbolic import (
    Call,
    Const,
    TinyBlock,
    Var,
    compile_graph,
    evaluate,
    fx_ops,
    topological_order,
)
from tests.conftest import assert_close

F64 = torch.float64


def _graph():
    """(2*3 + 1) * x * y + tanh(x*y) - exp(0.5) * y and the same computation written eagerly."""
    x, y = Var("x"), Var("y")
    xy = x * y  # one node used twice
    graph = (2 * Const(3) + 1) * xy + Call("tanh", xy) - Call("exp", Const(0.5)) * y + Call("relu", x) * Call("sin", y)

    def eager(a, b):
        return 7 * (a * b) + torch.tanh(a * b) - torch.exp(torch.tensor(0.5, dtype=a.dtype)) * b + a.relu() * b.sin()

    return graph, eager


@pytest.mark.parametrize("seed", range(4))
def test_compiled_matches_eager_and_interpreter_forward_and_backward(seed: int, device: torch.device) -> None:
    graph, eager = _graph()
    compiled = compile_graph(graph, ["x", "y"])
    g = torch.Generator().manual_seed(seed)
    shape = tuple(int(s) for s in torch.randint(1, 6, (int(torch.randint(1, 4, (1,), generator=g)),), generator=g))
    a = torch.randn(shape, generator=g, dtype=F64).to(device)
    b = torch.randn(shape, generator=g, dtype=F64).to(device)
    ins = [[t.clone().requires_grad_() for t in (a, b)] for _ in range(3)]
    outs = [compiled(*ins[0]), eager(*ins[1]), evaluate(graph, x=ins[2][0], y=ins[2][1])]
    assert_close(outs[0], outs[1])
    assert_close(outs[2], outs[1])
    up = torch.randn(shape, generator=g, dtype=F64).to(device)
    for out in outs:
        out.backward(up)
    for k in (0, 2):
        for mine, ref in zip(ins[k], ins[1]):
            assert_close(mine.grad, ref.grad)


def test_constants_are_folded_and_shared_nodes_computed_once() -> None:
    graph, _ = _graph()
    compiled = compile_graph(graph, ["x", "y"])
    assert "7.0 * t0" in compiled.source  # 2 * 3 + 1 folded into one number
    assert repr(torch.tensor(0.5, dtype=F64).exp().item()) in compiled.source  # exp(0.5) folded too
    assert "3.0" not in compiled.source and "exp" not in compiled.source
    assert compiled.num_folded == 3  # 2*3, +1, exp(0.5)
    assert compiled.source.count("x * y") == 1  # xy computed once although used twice
    assert compiled.num_ops == compiled.source.count(" = ") == 10
    # the same computation with x*y built twice: two nodes, computed twice
    x, y = Var("x"), Var("y")
    twice = compile_graph(7 * (x * y) + Call("tanh", x * y), ["x", "y"])
    assert twice.source.count("x * y") == 2


def test_works_on_python_numbers_and_fully_constant_graphs() -> None:
    x = Var("x")
    assert compile_graph(2 * x - 1, ["x"])(5.0) == evaluate(2 * x - 1, x=5.0) == 9.0
    const = compile_graph(Call("exp", Const(0.0)) + 1, [])
    assert const.source == "def compiled():\n    return 2.0\n" and const.num_ops == 0 and const() == 2.0


def test_unreachable_nodes_are_not_emitted() -> None:
    x = Var("x")
    _unused = Call("sin", x)  # built, but not part of the output
    compiled = compile_graph(x * x, ["x"])
    assert "sin" not in compiled.source and compiled.num_ops == 1
    assert len(topological_order(x * x)) == 2  # x (once) and the product


def test_deep_graph_has_no_recursion_limit() -> None:
    node = Var("x")
    for _ in range(5000):
        node = node + 1
    compiled = compile_graph(node, ["x"])
    assert compiled(0.0) == evaluate(node, x=0.0) == 5000.0


def test_rejects_bad_graphs() -> None:
    x = Var("x")
    with pytest.raises(ValueError, match="Var 'y', which is not in inputs"):
        compile_graph(x * Var("y"), ["x"])
    with pytest.raises(ValueError, match="inputs must be distinct"):
        compile_graph(x, ["x", "x"])
    with pytest.raises(ValueError, match="not a valid Python identifier"):
        Var("1x")
    with pytest.raises(ValueError, match="not a valid Python identifier"):
        Var("lambda")
    with pytest.raises(ValueError, match="unknown function 'cosh'"):
        Call("cosh", x)
    with pytest.raises(TypeError, match="cannot use str in a graph"):
        x + "1"
    with pytest.raises(TypeError, match="Const value must be an int or float, got bool"):
        Const(True)
    with pytest.raises(ValueError, match="no value for Var 'x'"):
        evaluate(x + 1)


def test_fx_graph_lists_the_expected_ops() -> None:
    assert fx_ops(TinyBlock()) == [
        ("placeholder", "x"),
        ("call_module", "lin"),
        ("call_function", "relu"),
        ("call_function", "mul"),
        ("call_function", "add"),
        ("output", "output"),
    ]
    assert fx_ops(lambda x: x.sum(dim=-1).exp()) == [
        ("placeholder", "x"),
        ("call_method", "sum"),
        ("call_method", "exp"),
        ("output", "output"),
    ]


@pytest.mark.parametrize("seed", range(3))
def test_fx_graph_module_matches_eager_forward_and_backward(seed: int, device: torch.device) -> None:
    torch.manual_seed(seed)
    block = TinyBlock(5).to(device, F64)
    gm = torch.fx.symbolic_trace(block)
    x = torch.randn(3, 5, dtype=F64, device=device, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    assert_close(gm(x), block(x2))
    gm(x).sum().backward()
    block(x2).sum().backward()
    assert_close(x.grad, x2.grad)
    assert gm.lin.weight is block.lin.weight  # the traced module shares the parameters


def test_fx_unrolls_loops_and_specialises_concrete_args() -> None:
    def three_tanh(x):
        for _ in range(3):
            x = torch.tanh(x)
        return x

    assert [t for op, t in fx_ops(three_tanh) if op == "call_function"] == ["tanh"] * 3

    def maybe_double(x, double: bool):
        return x * 2 if double else x

    def calls(**kw):
        return [t for op, t in fx_ops(maybe_double, **kw) if op == "call_function"]

    assert calls(concrete_args={"double": True}) == ["eq", "_assert", "mul"]  # guarded specialisation
    assert calls(concrete_args={"double": False}) == ["eq", "_assert"]
    gm = torch.fx.symbolic_trace(maybe_double, concrete_args={"double": True})
    assert torch.equal(gm(torch.ones(2), True), torch.full((2,), 2.0))
    with pytest.raises(AssertionError):  # the guard: traced for double=True only
        gm(torch.ones(2), False)


def test_fx_tracing_fails_on_data_dependent_if() -> None:
    def sign_flip(x):
        if x.sum() > 0:  # depends on the values of x: unknown while tracing
            return x
        return -x

    with pytest.raises(
        torch.fx.proxy.TraceError, match="symbolically traced variables cannot be used as inputs to control flow"
    ):
        fx_ops(sign_flip)
    assert issubclass(torch.fx.proxy.TraceError, ValueError)
    # the eager function has no problem: it sees real values
    assert torch.equal(sign_flip(-torch.ones(2)), torch.ones(2))


def test_torch_where_makes_the_branch_traceable() -> None:
    def sign_flip_where(x):
        return torch.where(x.sum() > 0, x, -x)

    assert [t for op, t in fx_ops(sign_flip_where) if op.startswith("call")] == ["sum", "gt", "neg", "where"]
    gm = torch.fx.symbolic_trace(sign_flip_where)
    for x in (torch.tensor([-1.0, -2.0]), torch.tensor([1.0, -0.5])):
        assert torch.equal(gm(x), x if x.sum() > 0 else -x)


def test_pytorch_captures_eager_code_as_a_graph() -> None:
    def f(x):
        return torch.relu(x) * 2 + 1

    gm = torch.fx.symbolic_trace(f)
    assert [n.op for n in gm.graph.nodes] == [
        "placeholder",
        "call_function",
        "call_function",
        "call_function",
        "output",
    ]
    x = torch.randn(4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(gm(x), f(x))
