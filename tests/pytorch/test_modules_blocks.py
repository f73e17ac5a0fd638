"""MySequential vs nn.Sequential (outputs, gradients, state_dict keys, loading both ways).

Also FixedHiddenMLP and ParallelBlock.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from snippets.pytorch.modules_blocks import FixedHiddenMLP, MySequential, ParallelBlock
from tests.conftest import assert_close

F64 = torch.float64


def _layers(d_in: int, d_hidden: int, d_out: int) -> list[nn.Module]:
    return [nn.Linear(d_in, d_hidden), nn.Tanh(), nn.LayerNorm(d_hidden), nn.Linear(d_hidden, d_out)]


@pytest.mark.parametrize("seed", range(4))
def test_matches_sequential(seed: int, device: torch.device) -> None:
    g = torch.Generator().manual_seed(seed)
    b, d_in, d_hidden, d_out = (int(v) for v in torch.randint(1, 7, (4,), generator=g))
    torch.manual_seed(seed)
    ours = MySequential(*_layers(d_in, d_hidden, d_out)).to(device, F64)
    ref = nn.Sequential(*_layers(d_in, d_hidden, d_out)).to(device, F64)
    assert list(ours.state_dict()) == list(ref.state_dict())  # same keys, same order
    assert list(ours._modules) == list(ref._modules) == ["0", "1", "2", "3"]
    ref.load_state_dict(ours.state_dict())  # ours -> theirs (strict: every key matches)
    x = torch.randn(b, d_in, generator=g, dtype=F64).to(device)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    out, out_ref = ours(x1), ref(x2)
    assert_close(out, out_ref)
    grad = torch.randn_like(out)
    (out * grad).sum().backward()
    (out_ref * grad).sum().backward()
    assert_close(x1.grad, x2.grad)
    for (name, p), (name_ref, p_ref) in zip(ours.named_parameters(), ref.named_parameters(), strict=True):
        assert name == name_ref
        assert_close(p.grad, p_ref.grad)
    # theirs -> ours
    other = nn.Sequential(*_layers(d_in, d_hidden, d_out)).to(device, F64)
    ours.load_state_dict(other.state_dict())
    assert_close(ours(x), other(x))


def test_sequential_indexing_len_and_print() -> None:
    layers = _layers(2, 3, 1)
    ours, ref = MySequential(*layers), nn.Sequential(*layers)
    assert len(ours) == len(ref) == 4
    for i in range(-4, 4):
        assert ours[i] is ref[i]
    assert repr(ours).replace("MySequential", "Sequential") == repr(ref)


def test_sequential_rejects_bad_input() -> None:
    with pytest.raises(TypeError, match="argument 1 is a function, not an nn.Module"):
        MySequential(nn.Linear(2, 2), lambda x: x)
    with pytest.raises(TypeError, match="is not a Module subclass"):  # nn.Sequential refuses too
        nn.Sequential(nn.Linear(2, 2), lambda x: x)
    with pytest.raises(IndexError, match="index 2 is out of range for MySequential of length 2"):
        MySequential(nn.Linear(2, 2), nn.ReLU())[2]
    with pytest.raises(IndexError, match="index -3 is out of range"):
        MySequential(nn.Linear(2, 2), nn.ReLU())[-3]


def test_a_plain_list_of_layers_is_invisible() -> None:
    """What MySequential avoids: modules kept in a Python list are not registered."""

    class ListSeq(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = [nn.Linear(2, 2)]

    assert list(ListSeq().parameters()) == [] and list(ListSeq().state_dict()) == []
    assert len(list(MySequential(nn.Linear(2, 2)).parameters())) == 2


def _reference_fixed_hidden(x, weight, bias, rand_weight):
    """The same computation written with functions; returns (output, number of halvings)."""
    h = F.linear(torch.relu(F.linear(x, weight, bias) @ rand_weight + 1), weight, bias)
    k = 0
    while h.detach().abs().sum() / 2**k > 1:
        k += 1
    return h.sum() / 2**k, k


@pytest.mark.parametrize("seed", range(3))
def test_fixed_hidden_mlp_matches_functional_reference(seed: int, device: torch.device) -> None:
    g = torch.Generator().manual_seed(seed)
    d = int(torch.randint(2, 9, (1,), generator=g))
    torch.manual_seed(seed)
    net = FixedHiddenMLP(d, generator=g).to(device, F64)
    x = torch.rand(3, d, generator=g, dtype=F64).to(device)
    out = net(x)
    assert out.shape == () and out.abs() <= 1
    w = net.linear.weight.detach().clone().requires_grad_()
    b = net.linear.bias.detach().clone().requires_grad_()
    ref, k = _reference_fixed_hidden(x, w, b, net.rand_weight)
    assert k > 0  # the loop did run
    assert_close(out, ref)
    out.backward()
    ref.backward()
    assert_close(net.linear.weight.grad, w.grad)
    assert_close(net.linear.bias.grad, b.grad)


def test_fixed_hidden_mlp_shared_layer_gets_the_sum_of_both_gradients() -> None:
    torch.manual_seed(0)
    net = FixedHiddenMLP(5).double()
    x = torch.rand(4, 5, dtype=F64)
    net(x).backward()
    first, second = nn.Linear(5, 5).double(), nn.Linear(5, 5).double()  # two untied copies
    for lin in (first, second):
        lin.load_state_dict(net.linear.state_dict())
    h = second(torch.relu(first(x) @ net.rand_weight + 1))
    k = 0
    while h.detach().abs().sum() / 2**k > 1:
        k += 1
    (h.sum() / 2**k).backward()
    assert_close(net.linear.weight.grad, first.weight.grad + second.weight.grad)
    assert_close(net.linear.bias.grad, first.bias.grad + second.bias.grad)


def test_fixed_hidden_mlp_constant_is_a_buffer_not_a_parameter() -> None:
    net = FixedHiddenMLP(4)
    assert [n for n, _ in net.named_parameters()] == ["linear.weight", "linear.bias"]
    assert list(net.state_dict()) == ["rand_weight", "linear.weight", "linear.bias"]
    assert not net.rand_weight.requires_grad
    assert net.double().rand_weight.dtype == F64  # moved by .to()/.double()


def test_fixed_hidden_mlp_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="d=0 must be positive"):
        FixedHiddenMLP(0)
    net = FixedHiddenMLP(3)
    with pytest.raises(ValueError, match="non-finite activations"):
        net(torch.full((1, 3), float("inf")))


def test_parallel_block(device: torch.device) -> None:
    torch.manual_seed(0)
    a, b = nn.Linear(4, 3), nn.Sequential(nn.Linear(4, 2), nn.ReLU())
    block = ParallelBlock(a, b).to(device, F64)
    x = torch.randn(5, 4, dtype=F64, device=device)
    assert_close(block(x), torch.cat([a(x), b(x)], dim=-1))
    assert block(x).shape == (5, 5)
    keys = ["branches.0.weight", "branches.0.bias", "branches.1.0.weight", "branches.1.0.bias"]
    assert list(block.state_dict()) == keys
    stacked = ParallelBlock(nn.Linear(4, 3), nn.Linear(4, 3), dim=0).to(device, F64)
    assert stacked(x).shape == (10, 3)
    with pytest.raises(ValueError, match="at least one branch"):
        ParallelBlock()
