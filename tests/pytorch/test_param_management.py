"""count_parameters, tie_weights, describe_state_dict.

Also the page's claims about state_dict, net[n], OrderedDict and .data.
"""

from __future__ import annotations

import collections

import pytest
import torch
from torch import nn

from snippets.pytorch.param_management import StateEntry, count_parameters, describe_state_dict, tie_weights
from tests.conftest import assert_close

F64 = torch.float64


def _lm(vocab: int, d: int) -> nn.Sequential:
    """Embedding -> Linear -> output projection, the classic weight-tying example."""
    return nn.Sequential(nn.Embedding(vocab, d), nn.Linear(d, d), nn.Tanh(), nn.Linear(d, vocab, bias=False))


@pytest.mark.parametrize("seed", range(3))
def test_count_parameters_matches_numel_sum(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    vocab, d = (int(v) for v in torch.randint(2, 9, (2,), generator=g))
    model = _lm(vocab, d)
    expected = vocab * d + (d * d + d) + d * vocab
    assert count_parameters(model) == expected == sum(p.numel() for p in model.parameters())
    model[1].requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == expected - (d * d + d)
    assert count_parameters(model) == expected
    tie_weights(model[3], model[0])
    assert count_parameters(model) == expected - d * vocab  # a tied weight counts once
    # independent count: unique storages among the state_dict's tensors
    unique = {t.untyped_storage().data_ptr(): t.numel() for t in model.state_dict().values()}
    assert count_parameters(model) == sum(unique.values())
    with pytest.raises(TypeError, match="model must be an nn.Module, got list"):
        count_parameters([nn.Linear(2, 2)])


def test_tie_weights_shares_one_parameter_trained_by_both_uses(device: torch.device) -> None:
    torch.manual_seed(0)
    vocab, d = 7, 3
    model = _lm(vocab, d).to(device, F64)
    untied = _lm(vocab, d).to(device, F64)
    untied.load_state_dict(model.state_dict())
    with torch.no_grad():
        untied[3].weight.copy_(untied[0].weight)  # the values tying will give, in two separate tensors
    assert tie_weights(model[3], model[0]) is model[3]
    assert model[3].weight is model[0].weight
    names = [n for n, _ in model.named_parameters()]
    assert names == ["0.weight", "1.weight", "1.bias"]  # listed once, under its first name
    sd = model.state_dict()
    assert list(sd) == ["0.weight", "1.weight", "1.bias", "3.weight"]
    assert sd["3.weight"].data_ptr() == sd["0.weight"].data_ptr()
    tokens = torch.randint(0, vocab, (4, 5), device=device)
    out, out_untied = model(tokens), untied(tokens)
    assert_close(out, out_untied)
    grad = torch.randn_like(out)
    (out * grad).sum().backward()
    (out_untied * grad).sum().backward()
    assert_close(model[0].weight.grad, untied[0].weight.grad + untied[3].weight.grad)  # the two uses add up
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    opt.step()
    assert model[3].weight is model[0].weight and torch.equal(model[3].weight, model[0].weight)


def test_tie_weights_rejects_bad_input() -> None:
    emb, lin = nn.Embedding(5, 3), nn.Linear(3, 5)
    with pytest.raises(ValueError, match=r"cannot tie 'weight': src has shape \(5, 3\), dst has shape \(4, 3\)"):
        tie_weights(nn.Linear(3, 4), emb)
    with pytest.raises(ValueError, match="src \\(ReLU\\) has no parameter named 'weight'"):
        tie_weights(lin, nn.ReLU())
    with pytest.raises(ValueError, match="dst \\(Linear\\) has no parameter named 'bias'"):
        tie_weights(nn.Linear(3, 5, bias=False), lin, name="bias")
    with pytest.raises(TypeError, match="dst must be an nn.Module, got Tensor"):
        tie_weights(torch.zeros(5, 3), emb)


def test_describe_state_dict() -> None:
    model = _lm(6, 2).double()
    rows = describe_state_dict(model.state_dict())
    assert rows[0] == StateEntry("0.weight", (6, 2), F64, 12, None)
    assert [r.alias_of for r in rows] == [None, None, None, None]
    tie_weights(model[3], model[0])
    rows = describe_state_dict(model.state_dict())
    assert rows[-1] == StateEntry("3.weight", (6, 2), F64, 12, "0.weight")
    # a view of different elements of the same storage is not an alias
    base = torch.zeros(4)
    assert [r.alias_of for r in describe_state_dict({"a": base[:2], "b": base[2:], "c": base[:2]})] == [None, None, "a"]
    bn = describe_state_dict(nn.BatchNorm1d(3).state_dict())
    assert [(r.key, r.dtype) for r in bn][-1] == ("num_batches_tracked", torch.int64)
    with pytest.raises(TypeError, match=r"state_dict\['x'\] is a int, not a Tensor"):
        describe_state_dict({"x": 1})


def test_sequential_indexing_and_state_dict_prefix() -> None:
    """Erratum: net[n].state_dict() has no 'n.' prefix; net.state_dict() has it."""
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    assert list(net[2].state_dict()) == ["weight", "bias"]
    assert list(net.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert list(net[1].state_dict()) == []
    assert net[2].state_dict()["bias"].data_ptr() == net.state_dict()["2.bias"].data_ptr() == net[2].bias.data_ptr()
    assert type(net[2].bias) is nn.Parameter and type(net[2].bias.data) is torch.Tensor
    assert net[2].bias.grad is None  # nothing until a backward pass
    assert net.state_dict(prefix="net.")["net.0.weight"] is not None
    assert list(net[2].state_dict(prefix="2.")) == ["2.weight", "2.bias"]  # the prefix is an argument
    assert net[-1] is net[2] and isinstance(net[0:2], nn.Sequential)


def test_state_dict_is_an_iterable_ordered_dict_not_integer_indexable() -> None:
    """Erratum: the notes say 'indexable by position but not iterable' — it is the other way round."""
    sd = nn.Linear(2, 3).state_dict()
    assert type(sd) is collections.OrderedDict
    assert list(sd) == ["weight", "bias"] and [k for k in sd] == ["weight", "bias"]
    with pytest.raises(KeyError):
        sd[0]
    key, value = list(sd.items())[1]
    assert key == "bias" and value.shape == (3,)
    assert sd["weight"].shape == (3, 2)


def test_data_vs_detach() -> None:
    """Erratum: .data hides in-place changes from autograd (silently wrong grads); .detach() is caught."""
    a = torch.tensor([1.0, 2.0], requires_grad=True)
    out = a.sigmoid()  # backward uses the saved output: d sigmoid = out * (1 - out)
    out.data.zero_()
    assert out._version == 0  # no version bump: autograd cannot notice
    out.sum().backward()
    assert torch.equal(a.grad, torch.zeros(2))  # wrong, and no error
    true_grad = torch.sigmoid(torch.tensor([1.0, 2.0])) * (1 - torch.sigmoid(torch.tensor([1.0, 2.0])))
    assert not torch.allclose(a.grad, true_grad)
    out = a.sigmoid()
    out.detach().zero_()
    assert out._version == 1  # shared version counter
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()
    p = nn.Linear(2, 2).weight
    assert type(p.data) is type(p.detach()) is torch.Tensor
    assert not p.data.requires_grad and not p.detach().requires_grad
    assert p.data.data_ptr() == p.detach().data_ptr() == p.data_ptr()  # both share storage, neither copies


def test_optimizer_holds_the_same_parameter_objects() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 2))
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    assert all(a is b for a, b in zip(opt.param_groups[0]["params"], net.parameters(), strict=True))
    before = net[0].weight.detach().clone()
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    assert_close(net[0].weight.detach(), before - net[0].weight.grad, rtol=0, atol=0)
