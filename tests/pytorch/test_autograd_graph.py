"""graph_nodes / explain_leaf vs what autograd actually records and keeps."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from snippets.pytorch.autograd_graph import explain_leaf, graph_edges, graph_nodes, requires_grad_rule
from tests.conftest import assert_close

F64 = torch.float64


def _leaves(device, *shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=F64).to(device).requires_grad_() for s in shapes]


def test_exact_nodes_of_small_expressions(device: torch.device) -> None:
    x, w, b = _leaves(device, 3, 3, 3)
    names = {"x": x, "w": w, "b": b}
    assert graph_nodes((x * w).sum(), names) == [
        "SumBackward0",
        "MulBackward0",
        "AccumulateGrad(x)",
        "AccumulateGrad(w)",
    ]
    y = (x * w + b).tanh().sum()
    assert graph_nodes(y, names) == [
        "SumBackward0",
        "TanhBackward0",
        "AddBackward0",
        "MulBackward0",
        "AccumulateGrad(x)",
        "AccumulateGrad(w)",
        "AccumulateGrad(b)",
    ]
    assert graph_edges(y, names) == [(0, 1), (1, 2), (2, 3), (2, 6), (3, 4), (3, 5)]
    assert graph_nodes(x * 2, names) == ["MulBackward0", "AccumulateGrad(x)"]  # the constant has no node
    data = torch.randn(3, dtype=F64, device=device)  # requires_grad=False: next_functions holds None
    assert (x * data).grad_fn.next_functions[1] == (None, 0)
    assert graph_nodes(x * data, names) == ["MulBackward0", "AccumulateGrad(x)"]
    # x used twice: one AccumulateGrad node, reached by two edges
    assert graph_nodes(x * x, names) == ["MulBackward0", "AccumulateGrad(x)"]
    assert graph_edges(x * x, names) == [(0, 1), (0, 1)]
    assert graph_nodes(x * w) == ["MulBackward0", "AccumulateGrad", "AccumulateGrad"]  # unnamed leaves


def test_linear_layer_graph(device: torch.device) -> None:
    torch.manual_seed(0)
    lin = nn.Linear(4, 2).to(device, F64)
    out = lin(torch.randn(5, 4, dtype=F64, device=device)).sum()
    nodes = graph_nodes(out, dict(lin.named_parameters()))
    assert nodes == ["SumBackward0", "AddmmBackward0", "AccumulateGrad(bias)", "TBackward0", "AccumulateGrad(weight)"]


def test_leaves_and_results_outside_the_graph_have_no_nodes(device: torch.device) -> None:
    (x,) = _leaves(device, 3)
    assert graph_nodes(x) == [] and graph_edges(x) == []
    with torch.no_grad():
        y = x * 2
    assert graph_nodes(y) == [] and y.is_leaf and not y.requires_grad  # a no_grad result is a new leaf
    assert x.detach().is_leaf and graph_nodes(x.detach()) == []


def test_edges_mirror_next_functions(device: torch.device) -> None:
    x, w = _leaves(device, (3, 4), (4, 2), seed=1)
    y = torch.relu(x @ w).softmax(-1).log().mean() + (x**2).sum()
    nodes, edges = graph_nodes(y), graph_edges(y)
    assert len(set(edges)) <= len(edges) and max(max(e) for e in edges) == len(nodes) - 1
    # every node is reached, the root first; edges leave each node once per non-None input
    stack, seen = [y.grad_fn], []
    while stack:
        node = stack.pop()
        if any(node is s for s in seen):
            continue
        seen.append(node)
        assert sum(1 for a, _ in edges if a == len(seen) - 1) == sum(fn is not None for fn, _ in node.next_functions)
        stack.extend(reversed([fn for fn, _ in node.next_functions if fn is not None]))
    assert [type(n).__name__ for n in seen] == nodes


def test_deep_graph_does_not_hit_the_recursion_limit() -> None:
    x = torch.zeros(1, requires_grad=True)
    y = x
    for _ in range(5000):
        y = y + 1
    nodes = graph_nodes(y, {"x": x})
    assert len(nodes) == 5001 and nodes[-1] == "AccumulateGrad(x)"


def test_only_leaves_that_require_grad_keep_grad(device: torch.device) -> None:
    x, w = _leaves(device, 3, 3, seed=2)
    data = torch.randn(3, dtype=F64, device=device)
    h = x * w  # non-leaf
    k = h.tanh()  # non-leaf, retained
    k.retain_grad()
    loss = (k * data).sum()
    tensors = {"x": x, "w": w, "data": data, "h": h, "k": k, "loss": loss}
    before = {name: explain_leaf(t) for name, t in tensors.items()}
    loss.backward()
    with pytest.warns(UserWarning, match="not a leaf Tensor is being accessed"):
        assert h.grad is None
    for name, t in tensors.items():
        if name in ("h", "loss"):
            continue  # reading .grad of an unretained non-leaf warns (checked above)
        assert (t.grad is not None) == before[name].gets_grad, name
    assert not before["h"].gets_grad and not before["loss"].gets_grad
    assert_close(k.grad, data)  # d loss / d k
    assert_close(x.grad, data * (1 - h.detach().tanh() ** 2) * w.detach())
    assert before["data"].reason.startswith("leaf that does not require grad")
    assert before["k"].retains_grad and before["k"].grad_fn == "TanhBackward0"


def test_hook_retain_grad_and_autograd_grad_see_the_same_intermediate_gradient(device: torch.device) -> None:
    (x,) = _leaves(device, 4, seed=3)
    h = x.exp()
    h.retain_grad()
    seen = []
    h.register_hook(seen.append)
    (h * h).sum().backward()
    assert_close(seen[0], 2 * h.detach())  # d (h.h) / d h
    assert_close(h.grad, seen[0])
    h2 = x.exp()  # a fresh graph: ask for d loss / d h2 directly, nothing is stored in .grad
    (g,) = torch.autograd.grad((h2 * h2).sum(), h2)
    assert_close(g, seen[0])
    assert len(seen) == 1


def test_cannot_change_requires_grad_of_a_non_leaf(device: torch.device) -> None:
    (x,) = _leaves(device, 3)
    y = x * 2
    with pytest.raises(RuntimeError, match="you can only change requires_grad flags of leaf variables"):
        y.requires_grad_(False)
    with pytest.raises(RuntimeError, match="you can only change requires_grad flags of leaf variables"):
        y.requires_grad = False
    z = y.detach()  # the way out: a new leaf sharing storage
    z.requires_grad_(True)
    assert z.is_leaf and z.untyped_storage().data_ptr() == y.untyped_storage().data_ptr()


def test_parameters_are_leaves_activations_are_not() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    assert all(p.is_leaf and p.requires_grad for p in model.parameters())
    act = model[1](model[0](torch.randn(2, 3)))
    assert not act.is_leaf and act.grad_fn is not None


@pytest.mark.parametrize("flags", list(itertools.product([False, True], repeat=3)))
def test_requires_grad_is_inferred_from_inputs(flags) -> None:
    a, b, c = (torch.randn(2, 2).requires_grad_(f) for f in flags)
    for out in (a * b + c, torch.cat([a, b, c]), a @ b @ c, torch.stack([a, b, c]).sum(0)):
        assert out.requires_grad == any(flags) == requires_grad_rule(a, b, c)
        assert out.is_leaf == (not any(flags))
    with torch.no_grad():
        assert not (a * b + c).requires_grad and not requires_grad_rule(a, b, c)
    # the rule is for differentiable ops: integer / boolean results never require grad
    assert not a.argmax().requires_grad and not (a > 0).requires_grad


def test_graph_is_freed_after_backward() -> None:
    x = torch.randn(3, dtype=F64, requires_grad=True)
    y = (x.exp() * 2).sum()
    y.backward(retain_graph=True)
    y.backward()  # allowed once more: the graph was retained; gradients add up
    assert_close(x.grad, 4 * x.detach().exp())
    with pytest.raises(RuntimeError, match="Trying to backward through the graph a second time"):
        y.backward()


def test_rejects_bad_input() -> None:
    x = torch.randn(3, requires_grad=True)
    with pytest.raises(TypeError, match="t must be a torch.Tensor, got list"):
        graph_nodes([1, 2])
    with pytest.raises(TypeError, match="t must be a torch.Tensor, got int"):
        explain_leaf(3)
    with pytest.raises(ValueError, match=r"leaf_names\['h'\] must be a leaf tensor"):
        graph_nodes(x * 2, {"h": x * 3})
    with pytest.raises(TypeError, match="expects tensors"):
        requires_grad_rule(x, 1.0)
