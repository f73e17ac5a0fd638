"""TinyModule vs nn.Module on the same architecture: names, order, state_dict, loading, .to(); registration rules."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from snippets.pytorch.tiny_module import (
    IncompatibleKeys,
    TinyLinear,
    TinyModule,
    TinyNet,
    TinySequential,
    TorchNet,
    format_inventory,
    module_inventory,
)
from tests.conftest import assert_close

F64 = torch.float64


def _pair(seed: int, d: int) -> tuple[TinyNet, TorchNet]:
    torch.manual_seed(seed)
    ours = TinyNet(d)
    torch.manual_seed(seed)
    ref = TorchNet(d)
    return ours, ref


def _names(pairs) -> list[str]:
    return [name for name, _ in pairs]


@pytest.mark.parametrize(("seed", "d"), [(0, 1), (1, 3), (2, 5)])
def test_matches_nn_module_names_order_and_values(seed: int, d: int) -> None:
    ours, ref = _pair(seed, d)
    for remove_duplicate in (True, False):
        kw = {"remove_duplicate": remove_duplicate}
        assert _names(ours.named_parameters(**kw)) == _names(ref.named_parameters(**kw))
        assert _names(ours.named_buffers(**kw)) == _names(ref.named_buffers(**kw))
        assert _names(ours.named_modules(remove_duplicate=remove_duplicate)) == _names(
            ref.named_modules(remove_duplicate=remove_duplicate)
        )
    assert _names(ours.named_parameters(prefix="net")) == _names(ref.named_parameters(prefix="net"))
    assert _names(ours.named_parameters(recurse=False)) == _names(ref.named_parameters(recurse=False)) == ["scale"]
    assert _names(ours.named_children()) == _names(ref.named_children()) == ["body", "head"]
    # the tied weight: once in parameters(), under two names in state_dict()
    assert "head.weight" not in _names(ours.named_parameters())
    assert "head.weight" in _names(ours.named_parameters(remove_duplicate=False))
    sd, sd_ref = ours.state_dict(), ref.state_dict()
    assert type(sd) is type(sd_ref) is __import__("collections").OrderedDict
    assert list(sd) == list(sd_ref) == [
        "scale", "steps", "body.0.weight", "body.0.bias", "body.1.weight", "body.1.bias", "head.weight", "head.bias",
    ]  # fmt: skip
    for key in sd:  # same seed, same initialisation (TinyLinear mirrors nn.Linear.reset_parameters)
        assert torch.equal(sd[key], sd_ref[key]) and sd[key].dtype == sd_ref[key].dtype, key
        assert not sd[key].requires_grad and not sd_ref[key].requires_grad  # detached ...
    assert sd["head.weight"].data_ptr() == sd["body.0.weight"].data_ptr() == ours.body[0].weight.data_ptr()  # ...shared
    keep = ours.state_dict(keep_vars=True)
    assert keep["scale"] is ours.scale and ref.state_dict(keep_vars=True)["scale"] is ref.scale


@pytest.mark.parametrize("seed", range(3))
def test_matches_nn_module_forward_backward(seed: int, device: torch.device) -> None:
    g = torch.Generator().manual_seed(seed)
    d, b = (int(v) for v in torch.randint(1, 6, (2,), generator=g))
    ours, ref = TinyNet(d).to(device, F64), TorchNet(d).to(device, F64)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(b, d, generator=g, dtype=F64).to(device)
    out, out_ref = ours(x), ref(x)
    assert_close(out, out_ref)
    assert_close(ours.cache, ref.cache)
    assert int(ours.steps) == int(ref.steps) == 1
    grad = torch.randn_like(out)
    (out * grad).sum().backward()
    (out_ref * grad).sum().backward()
    ref_grads = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        assert_close(p.grad, ref_grads[name].grad)


def test_load_state_dict_both_ways_copies_in_place() -> None:
    ours, ref = _pair(0, 3)
    torch.manual_seed(1)
    other = TorchNet(3)
    params_before = list(ours.parameters())
    assert ours.load_state_dict(other.state_dict()) == IncompatibleKeys([], [])
    assert all(a is b for a, b in zip(ours.parameters(), params_before, strict=True))  # same objects, new values
    for key, value in other.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value)
    ours.scale.data.fill_(2.0)
    ref.load_state_dict(ours.state_dict())  # and back: TinyModule's state_dict loads into nn.Module
    assert torch.equal(ref.scale, torch.full((3,), 2.0))
    assert ref.head.weight is ref.body[0].weight  # loading does not untie


def test_load_state_dict_reports_missing_and_unexpected_like_torch() -> None:
    ours, ref = _pair(0, 2)
    sd = ref.state_dict()
    del sd["head.bias"]
    sd["extra.weight"] = torch.zeros(1)
    got, expected = ours.load_state_dict(sd, strict=False), ref.load_state_dict(sd, strict=False)
    assert got.missing_keys == expected.missing_keys == ["head.bias"]
    assert got.unexpected_keys == expected.unexpected_keys == ["extra.weight"]
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "head.bias"'):
        ref.load_state_dict(sd)
    with pytest.raises(ValueError, match=r'Missing key\(s\) in state_dict: "head.bias"\.\n\tUnexpected key\(s\)'):
        ours.load_state_dict(sd)
    bad = ref.state_dict()
    bad["head.bias"] = torch.zeros(5)
    with pytest.raises(RuntimeError, match="size mismatch for head.bias"):
        ref.load_state_dict(bad, strict=False)
    with pytest.raises(ValueError, match=r"size mismatch for head.bias: copying a param with shape \(5,\)"):
        ours.load_state_dict(bad, strict=False)
    assert all(torch.equal(before[k], v) for k, v in ours.state_dict().items())  # nothing was copied
    bad["head.bias"] = [0.0, 0.0]
    with pytest.raises(ValueError, match="expected a Tensor, got list"):
        ours.load_state_dict(bad)


def test_to_float64_moves_parameters_and_buffers_not_plain_tensors(device: torch.device) -> None:
    for net in _pair(0, 3):
        params = dict(net.named_parameters())
        cache = net.cache
        net.scale.grad = torch.ones(3)
        assert net.to(device, F64) is net
        assert all(p.dtype == F64 and p.device.type == device.type for p in net.parameters())
        assert all(p is params[n] for n, p in net.named_parameters())  # same Parameter objects
        assert net.scale.grad.dtype == F64
        assert net.head.weight is net.body[0].weight  # the tie survives
        assert net.cache.dtype == F64 and net.cache is not cache  # buffers are replaced
        assert net.steps.dtype == torch.long and net.steps.device.type == device.type  # integers keep their dtype
        assert net.offset.dtype == torch.float32 and net.offset.device.type == "cpu"  # plain attribute: left behind
        assert {k: v.dtype for k, v in net.state_dict().items()}["steps"] == torch.long
        net.to(dtype=torch.float32)
        assert net.scale.dtype == torch.float32


def test_to_rejects_integer_dtypes_like_torch() -> None:
    ours, ref = _pair(0, 2)
    with pytest.raises(TypeError, match="only accepts floating point or complex dtypes"):
        ref.to(torch.int64)
    with pytest.raises(TypeError, match="only accepts floating point or complex dtypes"):
        ours.to(torch.int64)
    with pytest.raises(TypeError, match="expects a device or a dtype, got int"):
        ours.to(3)
    with pytest.raises(TypeError, match="unexpected keyword arguments"):
        ours.to(copy=True)


def test_setattr_rules_match_torch() -> None:
    for net, module_cls, linear_cls in ((TinyNet(2), TinyModule, TinyLinear), (TorchNet(2), nn.Module, nn.Linear)):
        with pytest.raises(TypeError, match="as parameter 'scale'"):
            net.scale = torch.ones(2)  # a plain tensor may not replace a Parameter
        net.scale = None  # None may: the slot stays, it is skipped everywhere
        assert "scale" in net._parameters and "scale" not in net.state_dict()
        net.cache = torch.ones(2)  # a tensor assigned to a buffer's name updates the buffer
        assert torch.equal(net._buffers["cache"], torch.ones(2))
        net.extra = linear_cls(1, 1)  # registered at assignment, even after __init__
        assert "extra.weight" in net.state_dict()
        net.extra = nn.Parameter(torch.zeros(1))  # a name lives in one place only
        assert "extra" not in net._modules and "extra" in net._parameters
        del net.extra
        assert "extra" not in net._parameters and "extra" not in net.state_dict()
        assert "offset" in net.__dict__ and "offset" not in net.state_dict()
        with pytest.raises(AttributeError, match="has no attribute 'nope'"):
            net.nope  # noqa: B018

        class Early(module_cls):
            def __init__(self, linear_cls=linear_cls) -> None:
                self.fc = linear_cls(1, 1)  # before super().__init__()
                super().__init__()

        with pytest.raises(AttributeError, match="cannot assign module before"):
            Early()


def test_register_buffer_and_names_are_validated() -> None:
    net = TinyNet(2)
    with pytest.raises(ValueError, match="attribute 'scale' already exists"):
        net.register_buffer("scale", torch.zeros(1))
    with pytest.raises(ValueError, match="must not contain '.'"):
        net.register_buffer("a.b", torch.zeros(1))
    with pytest.raises(TypeError, match="buffer name should be a str, got int"):
        net.register_buffer(1, torch.zeros(1))
    with pytest.raises(TypeError, match="cannot assign list as buffer 'x'"):
        net.register_buffer("x", [1.0])
    with pytest.raises(TypeError, match="cannot assign Tensor as parameter 'p'"):
        net.register_parameter("p", torch.zeros(1))
    with pytest.raises(TypeError, match="Linear is not a TinyModule"):
        net.add_module("fc", nn.Linear(1, 1))
    with pytest.raises(ValueError, match="in_features=-1"):
        TinyLinear(-1, 2)
    with pytest.raises(KeyError, match="already exists"):  # nn.Module says the same with a KeyError
        TorchNet(2).register_buffer("scale", torch.zeros(1))
    with pytest.raises(NotImplementedError, match="TinyModule has no forward"):
        TinyModule()(torch.zeros(1))


def test_shared_module_and_train_eval_match_torch() -> None:
    shared, shared_ref = TinyLinear(2, 2), nn.Linear(2, 2)
    ours, ref = TinySequential(shared, shared), nn.Sequential(shared_ref, shared_ref)
    assert _names(ours.named_modules()) == _names(ref.named_modules()) == ["", "0"]
    assert _names(ours.named_parameters()) == _names(ref.named_parameters()) == ["0.weight", "0.bias"]
    assert list(ours.state_dict()) == list(ref.state_dict()) == ["0.weight", "0.bias", "1.weight", "1.bias"]
    assert len(list(ours.children())) == len(list(ref.children())) == 1
    net, net_ref = _pair(0, 2)
    net.eval(), net_ref.eval()
    assert [m.training for m in net.modules()] == [m.training for m in net_ref.modules()] == [False] * 5
    net(torch.zeros(1, 2))
    net_ref(torch.zeros(1, 2))
    assert int(net.steps) == int(net_ref.steps) == 0  # forward in eval mode skipped the update
    net.train()
    assert all(m.training for m in net.modules())


def test_torch_optimizer_trains_a_tiny_module() -> None:
    torch.manual_seed(0)
    net = TinyNet(3)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    assert opt.param_groups[0]["params"][0] is net.scale  # the optimizer holds the module's own Parameters
    x, y = torch.randn(16, 3), torch.randn(16, 3)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = (net(x) - y).pow(2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_inventory_of_builtin_layers() -> None:
    rows = {r.kind: r for r in module_inventory(nn.Sequential(
        nn.Linear(2, 2), nn.BatchNorm1d(2), nn.ReLU(), nn.Dropout(), nn.LayerNorm(2), nn.Embedding(3, 2),
        nn.MultiheadAttention(4, 2),
    ))}  # fmt: skip
    assert rows["Linear"][2:] == (("weight", "bias"), (), ())
    assert rows["BatchNorm1d"][2:] == (("weight", "bias"), ("running_mean", "running_var", "num_batches_tracked"), ())
    assert rows["ReLU"][2:] == rows["Dropout"][2:] == ((), (), ())
    assert rows["LayerNorm"][2:] == (("weight", "bias"), (), ())
    assert rows["Embedding"][2:] == (("weight",), (), ())
    assert rows["MultiheadAttention"][2:] == (("in_proj_weight", "in_proj_bias"), (), ())
    assert rows["NonDynamicallyQuantizableLinear"].name == "6.out_proj"  # out_proj.weight/bias: a child Linear
    ours = module_inventory(TinyNet(2))
    assert [r[2:] for r in ours] == [r[2:] for r in module_inventory(TorchNet(2))]
    assert ours[0].non_persistent == ("cache",)
    text = format_inventory(ours)
    assert text.splitlines()[1].split() == ["(root)", "TinyNet", "scale", "steps,", "cache", "(non-persistent)"]


def test_unregistered_things_are_invisible() -> None:
    """The page's answers: lists, functions and autograd.Functions are not registered; ModuleList is."""

    class Square(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return 2 * x * g

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.in_list = [nn.Linear(2, 2)]
            self.in_modulelist = nn.ModuleList([nn.Linear(2, 2)])
            self.fn = torch.tanh
            self.op = Square
            self.plain = torch.zeros(2)

    net = Net()
    assert list(net._modules) == ["in_modulelist"] and net._parameters == {} and net._buffers == {}
    assert list(net.state_dict()) == ["in_modulelist.0.weight", "in_modulelist.0.bias"]
    net.double()
    assert net.in_list[0].weight.dtype == torch.float32 and net.plain.dtype == torch.float32
    x = torch.randn(3, dtype=F64, requires_grad=True)
    Square.apply(x).sum().backward()
    assert_close(x.grad, 2 * x.detach())


def test_plain_tensor_attribute_breaks_forward_after_to() -> None:
    """The page's 'common mistake': .double() leaves a plain tensor attribute behind; a buffer would move."""

    class Proj(nn.Module):
        def __init__(self, as_buffer: bool) -> None:
            super().__init__()
            self.fc = nn.Linear(2, 2)
            if as_buffer:
                self.register_buffer("proj", torch.eye(2))
            else:
                self.proj = torch.eye(2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x) @ self.proj

    x = torch.zeros(1, 2, dtype=F64)
    with pytest.raises(RuntimeError, match="expected m1 and m2 to have the same dtype"):
        Proj(as_buffer=False).double()(x)
    assert Proj(as_buffer=True).double()(x).dtype == F64


def test_submodule_is_registered_at_assignment_time() -> None:
    seen = []

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            seen.append(list(self._modules))
            self.fc = nn.Linear(2, 2)
            seen.append(list(self._modules))

    net = Net()
    assert seen == [[], ["fc"]]
    net.later = nn.Linear(2, 1)
    assert list(net._modules) == ["fc", "later"]
