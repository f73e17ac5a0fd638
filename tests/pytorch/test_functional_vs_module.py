"""Modules vs functional ops: ReLUModule/DropoutModule vs nn.ReLU/nn.Dropout, and the F.dropout eval() pitfall."""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from snippets.pytorch.functional_vs_module import (
    DropoutMLP,
    DropoutModule,
    ReLUModule,
    functional_dropout_pitfall,
)
from tests.conftest import assert_close

SHAPES = [(5,), (3, 4), (2, 3, 4)]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_nn_relu_and_f_relu(shape, seed, device) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=torch.float64).to(device).requires_grad_()
    gy = torch.randn(*shape, generator=g, dtype=torch.float64).to(device)
    outs = [f(x) for f in (ReLUModule(), nn.ReLU(), F.relu)]
    grads = [torch.autograd.grad(y, x, gy)[0] for y in outs]
    for y, gx in zip(outs[1:], grads[1:], strict=True):
        assert_close(outs[0], y)
        assert_close(grads[0], gx)
    a, b = x.detach().clone(), x.detach().clone()
    ReLUModule(inplace=True)(a)
    nn.ReLU(inplace=True)(b)
    assert torch.equal(a, b) and torch.equal(a, x.detach().clamp_min(0))  # modified in place


@pytest.mark.parametrize("p", [0.0, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("shape", SHAPES)
def test_dropout_module_matches_nn_dropout(shape, p, device) -> None:
    x = torch.randn(*shape, dtype=torch.float64, device=device, requires_grad=True)
    gy = torch.randn(*shape, dtype=torch.float64, device=device)
    ours, ref = DropoutModule(p), nn.Dropout(p)
    outs = []
    for layer in (ours, ref):
        torch.manual_seed(0)
        if device.type == "cuda":
            torch.cuda.manual_seed(0)
        y = layer(x)
        outs.append((y, torch.autograd.grad(y, x, gy)[0]))
    assert_close(outs[0][0], outs[1][0])
    assert_close(outs[0][1], outs[1][1])
    for layer in (ours.eval(), ref.eval()):
        assert torch.equal(layer(x), x)  # evaluation mode: the identity
    assert repr(ours) == repr(ref).replace("Dropout(p=", "DropoutModule(p=").replace(", inplace=False", "")


def test_modules_wrap_the_functional_ops(monkeypatch) -> None:
    calls = []

    def spy(name):
        real = getattr(F, name)

        def wrapped(*args, **kwargs):
            calls.append(name)
            return real(*args, **kwargs)

        monkeypatch.setattr(F, name, wrapped)

    for name in ("relu", "linear", "dropout"):
        spy(name)
    x = torch.randn(2, 3)
    nn.ReLU()(x)
    nn.Linear(3, 4)(x)
    nn.Dropout()(x)
    ReLUModule()(x)
    DropoutModule()(x)
    assert calls == ["relu", "linear", "dropout", "relu", "dropout"]


def test_f_dropout_defaults_to_training_true() -> None:
    assert inspect.signature(F.dropout).parameters["training"].default is True
    x = torch.ones(1000)
    torch.manual_seed(0)
    assert (F.dropout(x, 0.5) == 0).any()  # nothing tells it about a model's eval()
    assert torch.equal(F.dropout(x, 0.5, training=False), x)


def test_functional_dropout_pitfall() -> None:
    state = torch.get_rng_state()
    assert functional_dropout_pitfall() == {"module": True, "functional": True, "functional_bug": False}
    assert functional_dropout_pitfall(p=0.2, seed=3) == {"module": True, "functional": True, "functional_bug": False}
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left alone


@pytest.mark.parametrize("seed", [0, 1])
def test_the_three_styles_agree_in_training_and_two_in_eval(seed, device) -> None:
    x = torch.randn(6, 4, dtype=torch.float64, device=device)
    models = {}
    for style in ("module", "functional", "functional_bug"):
        torch.manual_seed(seed)
        models[style] = DropoutMLP(4, 8, 3, p=0.4, style=style).to(device, torch.float64)
    train_out = {}
    for style, model in models.items():
        torch.manual_seed(100)
        if device.type == "cuda":
            torch.cuda.manual_seed(100)
        train_out[style] = model(x)
    assert_close(train_out["module"], train_out["functional"])
    assert_close(train_out["module"], train_out["functional_bug"])  # same RNG draws: identical in training
    m = models["module"].eval()
    no_dropout = m.out(F.relu(m.hidden(x)))
    for style in ("module", "functional"):
        assert_close(models[style].eval()(x), no_dropout)
    assert not torch.allclose(models["functional_bug"].eval()(x), no_dropout)


def test_eval_reaches_every_submodule_and_nothing_else() -> None:
    model = DropoutMLP(4, 8, 3, style="module").eval()
    assert [m.training for m in model.modules()] == [False] * 4  # model, hidden, out, dropout
    model.train()
    assert all(m.training for m in model.modules())
    assert not hasattr(F.dropout, "training")  # a function has no mode to set


def test_which_layers_hold_state() -> None:
    def state(m: nn.Module) -> tuple[int, int]:
        return len(list(m.parameters())), len(list(m.buffers()))

    assert state(nn.ReLU()) == (0, 0) and state(nn.MaxPool2d(2)) == (0, 0)
    assert state(nn.Dropout()) == (0, 0) and nn.Dropout().state_dict() == {}  # no state to save ...
    d = nn.Dropout().eval()
    x = torch.randn(100)
    assert torch.equal(d(x), x) and not torch.equal(d.train()(x), x)  # ... but behaviour depends on the mode
    assert state(nn.Linear(2, 3)) == (2, 0)
    assert state(nn.BatchNorm1d(3)) == (2, 3)  # weight, bias; running_mean, running_var, num_batches_tracked


def test_print_and_hooks_see_modules_only() -> None:
    as_module = DropoutMLP(4, 8, 3, style="module")
    as_function = DropoutMLP(4, 8, 3, style="functional")
    assert "(dropout): Dropout(p=0.5" in repr(as_module) and "Dropout(p=" not in repr(as_function)
    seen = []
    relu = ReLUModule()
    relu.register_forward_hook(lambda mod, inp, out: seen.append(out.shape))
    nn.Sequential(nn.Linear(4, 3), relu)(torch.randn(2, 4))
    assert seen == [torch.Size([2, 3])]


class _LayerMadeInForward(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.Linear(x.shape[-1], 2)(x)  # BUG: a new, untrained, unregistered layer per call


def test_a_layer_created_in_forward_is_not_registered() -> None:
    model = _LayerMadeInForward()
    x = torch.randn(3, 4)
    assert not torch.equal(model(x), model(x))  # new random weights every call
    assert list(model.parameters()) == [] and model.state_dict() == {}
    with pytest.raises(ValueError, match="empty parameter list"):
        torch.optim.SGD(model.parameters(), lr=0.1)


def test_a_plain_tensor_attribute_is_not_module_state() -> None:
    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.randn(2, 3)  # plain tensor: not a Parameter, not a buffer

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.linear(x, self.w)

    m = Functional().to(torch.float64)
    assert m.w.dtype == torch.float32  # .to() did not move it
    assert list(m.parameters()) == [] and m.state_dict() == {}


def test_a_stateless_module_can_be_reused() -> None:
    relu = nn.ReLU()
    x = torch.randn(5)
    assert torch.equal(relu(relu(x)), F.relu(x))  # no state: calling it twice is harmless
    shared = nn.Linear(3, 3)
    net = nn.Sequential(shared, nn.ReLU(), shared)  # a module with parameters reused = shared weights
    assert len(list(net.parameters())) == 2


def test_rejected_inputs() -> None:
    with pytest.raises(TypeError, match="inplace must be a bool, got int"):
        ReLUModule(inplace=1)
    with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1, got p=1.5"):
        DropoutModule(1.5)
    with pytest.raises(TypeError, match="p must be a float, got str"):
        DropoutModule("0.5")
    with pytest.raises(ValueError, match="style='functinal' is not one of"):
        DropoutMLP(4, 8, 2, style="functinal")
    with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1, got p=-0.1"):
        DropoutMLP(4, 8, 2, p=-0.1)
    with pytest.raises(ValueError, match=r"p=0.0 must be in \(0, 1\) for dropout to be random"):
        functional_dropout_pitfall(p=0.0)


@pytest.mark.parametrize(
    ("make", "depends_on_mode"),
    [
        (lambda: nn.ReLU(), False),
        (lambda: nn.MaxPool1d(2), False),
        (lambda: nn.Linear(4, 4), False),
        (lambda: nn.Dropout(0.5), True),
        (lambda: nn.BatchNorm1d(4), True),
    ],
    ids=["ReLU", "MaxPool", "Linear", "Dropout", "BatchNorm"],
)
def test_which_layers_depend_on_the_mode(make, depends_on_mode: bool) -> None:
    torch.manual_seed(0)
    layer = make()
    x = torch.randn(8, 4, 4) if isinstance(layer, nn.MaxPool1d) else torch.randn(8, 4)
    with torch.no_grad():
        assert torch.equal(layer.train()(x), layer.eval()(x)) is not depends_on_mode
