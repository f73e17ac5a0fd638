"""Hooks: captured activations and gradients equal manual intermediates; scaled, clamped and rewritten values."""

from __future__ import annotations

import warnings
from collections import OrderedDict

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from snippets.pytorch.hooks import (
    activation_stats,
    capture_activations,
    capture_gradients,
    clamp_grad_hook,
    register_grad_clamp,
    register_input_transform,
    scale_grad_hook,
)
from tests.conftest import assert_close

F64 = torch.float64


def _mlp(seed: int, d_in: int, d_hidden: int, d_out: int, device: torch.device) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(d_in, d_hidden), nn.ReLU(), nn.Linear(d_hidden, d_hidden), nn.Tanh(), nn.Linear(d_hidden, d_out)
    ).to(device, F64)


def _no_hooks(model: nn.Module) -> bool:
    return all(
        not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks and not m._backward_pre_hooks
        for m in model.modules()
    )


@pytest.mark.parametrize("seed", range(3))
def test_captured_activations_equal_manual_intermediates(seed: int, device: torch.device) -> None:
    g = torch.Generator().manual_seed(seed)
    b, d_in, d_hidden, d_out = (int(v) for v in torch.randint(1, 7, (4,), generator=g))
    net = _mlp(seed, d_in, d_hidden, d_out, device)
    x = torch.randn(b, d_in, generator=g, dtype=F64).to(device)
    with capture_activations(net, ["0", "1", "3", ""]) as acts:
        out = net(x)
    h0 = net[0](x)
    h1 = torch.relu(h0)
    h3 = torch.tanh(net[2](h1))
    assert_close(acts["0"], h0)
    assert_close(acts["1"], h1)
    assert_close(acts["3"], h3)
    assert_close(acts[""], out)  # "" names the model itself
    assert not acts["0"].requires_grad  # detached features
    assert list(acts) == ["0", "1", "3", ""]  # filled in call order; the model's own hook fires last


def test_after_remove_nothing_is_captured() -> None:
    net = _mlp(0, 3, 4, 2, torch.device("cpu"))
    x = torch.randn(5, 3, dtype=F64)
    with capture_activations(net, ["1"]) as acts:
        net(x)
    first = acts["1"]
    assert _no_hooks(net)
    net(torch.randn(5, 3, dtype=F64))  # runs after the with block: nothing captured
    assert acts["1"] is first and list(acts) == ["1"]
    with pytest.raises(RuntimeError, match="boom"), capture_activations(net, ["1"]):
        raise RuntimeError("boom")
    assert _no_hooks(net)  # removed on an exception too
    # the raw API: register returns a handle, remove() undoes it
    seen = []
    handle = net[1].register_forward_hook(lambda m, args, out: seen.append(out.shape))
    net(x)
    handle.remove()
    net(x)
    assert seen == [torch.Size([5, 4])] and _no_hooks(net)


def test_module_called_twice_keeps_last_output() -> None:
    lin = nn.Linear(2, 2).double()
    net = nn.Sequential(lin, nn.Tanh(), lin)  # the same module used twice
    x = torch.randn(3, 2, dtype=F64)
    with capture_activations(net, ["0"]) as acts:
        out = net(x)
    assert_close(acts["0"], out)  # the second call overwrote the first


def test_forward_hook_and_pre_hook_return_values_replace() -> None:
    lin = nn.Linear(3, 2).double()
    x = torch.randn(4, 3, dtype=F64)
    ref = lin(x)
    h = lin.register_forward_hook(lambda m, args, out: out * 0)  # a return value replaces the output
    assert torch.equal(lin(x), torch.zeros_like(ref))
    h.remove()
    h = lin.register_forward_pre_hook(lambda m, args: (args[0] * 2,))  # ... or the inputs
    assert_close(lin(x), lin.forward(2 * x))
    h.remove()
    h = lin.register_forward_hook(lambda m, args, out: None)  # None keeps it
    assert_close(lin(x), ref)
    h.remove()


@pytest.mark.parametrize("s", [0.5, -3.0, 10.0])
def test_hooked_gradient_is_s_times_unhooked(s: float, device: torch.device) -> None:
    net = _mlp(1, 4, 5, 3, device)
    x = torch.randn(6, 4, dtype=F64, device=device)
    target = torch.randn(6, 3, dtype=F64, device=device)

    def grads(hook_s: float | None) -> list[torch.Tensor]:
        net.zero_grad(set_to_none=True)
        h1 = net[1](net[0](x))
        if hook_s is not None:
            h1.register_hook(scale_grad_hook(hook_s))  # on the activation between the two halves
        out = net[4](net[3](net[2](h1)))
        ((out - target) ** 2).sum().backward()
        return [p.grad.clone() for p in net.parameters()]

    plain, hooked = grads(None), grads(s)
    for before, after in zip(plain[:2], hooked[:2], strict=True):  # upstream of the hook: scaled by s
        assert_close(after, s * before)
    for before, after in zip(plain[2:], hooked[2:], strict=True):  # downstream: untouched
        assert_close(after, before)


def test_captured_gradients_equal_retain_grad(device: torch.device) -> None:
    net = _mlp(2, 3, 4, 2, device)
    x = torch.randn(5, 3, dtype=F64, device=device, requires_grad=True)
    with capture_gradients(net, ["0", "2", "4"]) as grads:
        net(x).pow(2).sum().backward()
    assert _no_hooks(net)
    # the same quantities with retain_grad on a manual forward pass
    h0 = net[0](x)
    h2 = net[2](torch.relu(h0))
    out = net[4](torch.tanh(h2))
    for t in (h0, h2, out):
        t.retain_grad()
    out.pow(2).sum().backward()
    assert_close(grads["0"], h0.grad)
    assert_close(grads["2"], h2.grad)
    assert_close(grads["4"], out.grad)


def test_full_backward_hook_grad_input_is_gradient_wrt_input(device: torch.device) -> None:
    lin = nn.Linear(3, 2).to(device, F64)
    seen = {}
    lin.register_full_backward_hook(lambda m, gin, gout: seen.update(gin=gin, gout=gout))
    x = torch.randn(4, 3, dtype=F64, device=device, requires_grad=True)
    lin(x).sum().backward()
    assert_close(seen["gin"][0], x.grad)
    assert_close(seen["gout"][0], torch.ones(4, 2, dtype=F64, device=device))
    seen.clear()
    with pytest.warns(UserWarning, match="since no inputs require gradients"):
        lin(x.detach()).sum().backward()  # an input that needs no gradient gets None, and PyTorch warns
    assert seen["gin"] == (None,)
    seen.clear()
    lin.register_full_backward_hook(lambda m, gin, gout: (gin[0] * 0,))  # a return value replaces grad_input
    x.grad = None
    lin(x).sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_hook_order() -> None:
    log: list[str] = []
    lin = nn.Linear(3, 2)
    lin.register_forward_pre_hook(lambda m, args: log.append("forward_pre_hook"))
    lin.register_forward_hook(lambda m, args, out: log.append("forward_hook"))
    lin.register_full_backward_pre_hook(lambda m, gout: log.append("full_backward_pre_hook"))
    lin.register_full_backward_hook(lambda m, gin, gout: log.append("full_backward_hook"))
    x = torch.randn(4, 3, requires_grad=True)
    x.register_hook(lambda g: log.append("tensor hook on x"))
    lin(x).sum().backward()
    assert log == [
        "forward_pre_hook",
        "forward_hook",
        "full_backward_pre_hook",
        "full_backward_hook",
        "tensor hook on x",
    ]


def test_grad_clamp_equals_clip_grad_value_including_tied_weights() -> None:
    torch.manual_seed(0)
    model = nn.Module()
    model.w = nn.Parameter(torch.randn(4, 4, dtype=F64))
    model.head = nn.Linear(4, 2).double()
    x = torch.randn(8, 4, dtype=F64) * 5

    def loss() -> torch.Tensor:
        return model.head(x @ model.w @ model.w).pow(2).sum()  # w is used twice

    loss().backward()
    torch.nn.utils.clip_grad_value_(model.parameters(), 0.1)  # the usual way: clip after backward
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    handles = register_grad_clamp(model, 0.1)
    loss().backward()
    for p, e in zip(model.parameters(), expected, strict=True):
        assert_close(p.grad, e)  # the hook saw the summed gradient of both uses of w
    assert max(p.grad.abs().max().item() for p in model.parameters()) == pytest.approx(0.1)
    for h in handles:
        h.remove()
    model.zero_grad(set_to_none=True)
    loss().backward()
    assert max(p.grad.abs().max().item() for p in model.parameters()) > 0.1  # clipping is off again


def test_clamp_grad_hook_on_a_tensor() -> None:
    h = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    h.register_hook(clamp_grad_hook(1.5))
    (h * torch.tensor([1.0, -2.0, 3.0])).sum().backward()
    assert h.grad.tolist() == [1.0, -1.5, 1.5]


def test_input_transform_pre_hook() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    images = torch.randint(0, 256, (3, 2, 2), dtype=torch.uint8)
    handle = register_input_transform(model, lambda x: x.float() / 255)
    out = model(images)  # uint8 in, the hook converts
    handle.remove()
    torch.testing.assert_close(out, model(images.float() / 255), rtol=0, atol=0)
    with pytest.raises(RuntimeError):  # without the hook the Linear refuses uint8
        model(images)


def test_pre_hook_sees_positional_args_only_unless_with_kwargs() -> None:
    class Scale(nn.Module):
        def forward(self, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
            return x * scale

    m = Scale()
    seen: list = []
    h1 = m.register_forward_pre_hook(lambda mod, args: seen.append(args))
    h2 = m.register_forward_pre_hook(lambda mod, args, kwargs: seen.append(kwargs), with_kwargs=True)
    m(torch.ones(1), scale=3.0)
    assert len(seen[0]) == 1 and seen[1] == {"scale": 3.0}
    h1.remove()
    h2.remove()
    hook = register_input_transform(m, lambda x: x + 1)
    assert m(torch.ones(1), scale=3.0).item() == 6.0  # keyword arguments pass through untouched
    hook.remove()
    with pytest.raises(ValueError, match="Scale was called without a positional input"):
        register_input_transform(m, lambda x: x)
        m(x=torch.ones(1))


def test_activation_stats_match_manual(device: torch.device) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU()).to(device, F64)
    with torch.no_grad():
        net[2].bias[:3] = -100.0  # three units that are always off: dead ReLUs
    x = torch.randn(32, 5, dtype=F64, device=device)
    stats = activation_stats(net, x)
    assert list(stats) == ["1", "3"]
    h1 = torch.relu(net[0](x))
    h3 = torch.relu(net[2](h1))
    for s, h in ((stats["1"], h1), (stats["3"], h3)):
        assert s.mean == pytest.approx(h.mean().item(), rel=1e-12)
        assert s.std == pytest.approx(h.std().item(), rel=1e-12)
        assert s.frac_zero == pytest.approx((h == 0).double().mean().item(), rel=1e-12)
        assert s.shape == (32, 6)
    assert stats["3"].frac_zero >= 0.5  # at least the 3 dead units of 6
    assert stats["3"].frac_dead == (h3 == 0).all(0).double().mean().item() >= 0.5
    assert _no_hooks(net)
    by_type = activation_stats(net, x, types=(nn.Linear,))
    assert list(by_type) == ["0", "2"]


def test_activation_stats_dead_channels_of_a_conv() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())
    with torch.no_grad():
        net[0].bias[0] = -100.0  # channel 0 always off
    s = activation_stats(net, torch.randn(2, 1, 6, 6))["1"]
    assert s.shape == (2, 4, 4, 4) and s.frac_dead == 0.25
    flat = activation_stats(nn.Sequential(nn.ReLU()), torch.tensor([-1.0, 2.0]))["0"]
    assert flat.frac_zero == 0.5 and flat.frac_dead != flat.frac_dead  # nan: no unit dimension


def test_activation_stats_removes_hooks_on_error() -> None:
    net = nn.Sequential(nn.Linear(3, 3), nn.ReLU())
    with pytest.raises(RuntimeError):
        activation_stats(net, torch.randn(2, 4))  # wrong width
    assert _no_hooks(net)


def test_hooks_fire_only_through_call() -> None:
    lin = nn.Linear(2, 2)
    calls = []
    lin.register_forward_hook(lambda m, a, o: calls.append(1))
    lin(torch.randn(1, 2))
    lin.forward(torch.randn(1, 2))  # bypasses __call__: no hooks
    assert calls == [1]


def test_hooks_are_not_in_state_dict() -> None:
    lin = nn.Linear(2, 2)
    before = list(lin.state_dict())
    lin.register_forward_hook(lambda m, a, o: None)
    assert list(lin.state_dict()) == before and len(lin._forward_hooks) == 1


def test_legacy_backward_hook_is_deprecated_and_sees_only_the_last_node() -> None:
    m = nn.Sequential(nn.Linear(3, 2), nn.ReLU())
    seen = {}
    m.register_backward_hook(lambda mod, gin, gout: seen.update(gin=gin))
    x = torch.randn(4, 3, requires_grad=True)
    with pytest.warns(FutureWarning, match="This hook will be missing some grad_input"):
        m(x).sum().backward()
    assert seen["gin"][0].shape == (4, 2) != x.shape  # ReLU's input gradient, not the block's


def test_pruning_is_a_forward_pre_hook() -> None:
    lin = nn.Linear(3, 3)
    prune.l1_unstructured(lin, "weight", amount=0.5)
    (hook,) = lin._forward_pre_hooks.values()
    assert isinstance(hook, prune.L1Unstructured)


def test_capture_gradients_works_where_full_backward_hook_does_not() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 3), nn.ReLU(inplace=True)).double()
    x = torch.randn(2, 3, dtype=F64)
    handle = net[0].register_full_backward_hook(lambda m, gin, gout: None)
    with pytest.raises(RuntimeError, match="is a view and is being modified inplace"):
        net(x)  # the in-place ReLU modifies the hooked output
    net[1].inplace = False
    with pytest.warns(UserWarning, match="since no inputs require gradients"):  # x needs no gradient
        net(x).sum().backward()
    handle.remove()
    net[1].inplace = True
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with capture_gradients(net, ["0"]) as grads:
            net(x).sum().backward()
    h0 = net[0](x).detach().requires_grad_()
    torch.relu(h0).sum().backward()
    assert_close(grads["0"], h0.grad)  # the gradient w.r.t. the value before the in-place ReLU
    with torch.no_grad(), capture_gradients(net, ["0"]) as nothing:
        net(x)
    assert nothing == {}


def test_named_sequential_feature_extraction() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(
        OrderedDict(conv=nn.Conv2d(1, 4, 3), relu=nn.ReLU(), pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten())
    )
    x = torch.randn(2, 1, 8, 8)
    with capture_activations(net, ["pool"]) as feats:
        net(x)
    assert feats["pool"].shape == (2, 4, 1, 1)


def test_rejected_inputs() -> None:
    net = _mlp(0, 2, 2, 2, torch.device("cpu"))
    with pytest.raises(ValueError, match=r"names=\['9'\] are not submodules of the model; available: \['', '0'"):
        with capture_activations(net, ["9"]):
            pass
    with pytest.raises(TypeError, match="names must be a list of module names, not a str: got names='01'"):
        with capture_gradients(net, "01"):
            pass
    with pytest.raises(ValueError, match="s must be a finite real number, got s=nan"):
        scale_grad_hook(float("nan"))
    with pytest.raises(ValueError, match="bound must be a positive number, got bound=0"):
        clamp_grad_hook(0)
    with pytest.raises(ValueError, match="bound must be a positive number, got bound=-1"):
        register_grad_clamp(net, -1)
    with pytest.raises(TypeError, match="fn must be callable, got int"):
        register_input_transform(net, 3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="capture_gradients needs '' to return a tensor, got tuple"):
        lstm = nn.LSTM(2, 2)
        with capture_gradients(lstm, [""]):
            lstm(torch.randn(3, 1, 2))  # returns (output, (h, c))
    with pytest.raises(TypeError, match="types must be a non-empty tuple of nn.Module subclasses"):
        activation_stats(net, torch.randn(1, 2), types=(int,))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="types must be a non-empty tuple of nn.Module subclasses"):
        activation_stats(net, torch.randn(1, 2), types=nn.ReLU)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"the model has no submodule of types=\('Conv2d',\)"):
        activation_stats(net, torch.randn(1, 2), types=(nn.Conv2d,))
    assert _no_hooks(net)
