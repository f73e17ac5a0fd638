"""Deferred initialization: LazyLinearScratch vs nn.LazyLinear, the RNG order, optimizers and dry runs."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.parameter import UninitializedParameter, is_lazy

from snippets.pytorch.lazy_init import LazyLinearScratch, dry_run, uninitialized_modules
from tests.conftest import assert_close

CASES = [((), 3, 5, True), ((7,), 4, 2, True), ((2, 3), 6, 6, False), ((2, 1, 4), 5, 1, True)]


def test_before_the_first_forward() -> None:
    ours, ref = LazyLinearScratch(3), nn.LazyLinear(3)
    assert ours.weight is None and ours.bias is None and ours.in_features is None
    assert list(ours.parameters()) == [] and ours.state_dict() == {}
    assert ours.has_uninitialized_params() and ref.has_uninitialized_params()
    assert isinstance(ref.weight, UninitializedParameter) and is_lazy(ref.weight) and ref.in_features == 0
    assert len(list(ref.parameters())) == 2  # PyTorch registers placeholders ...
    with pytest.raises(RuntimeError, match="Can't access the shape of an uninitialized parameter"):
        ref.weight.shape  # noqa: B018  ... that have no shape yet
    with pytest.raises(ValueError, match="Attempted to use an uninitialized parameter"):
        sum(p.numel() for p in ref.parameters())
    with pytest.raises(ValueError, match="Attempted to use an uninitialized parameter"):
        nn.init.xavier_uniform_(ref.weight)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(("lead", "d_in", "d_out", "bias"), CASES)
def test_matches_lazy_linear(lead, d_in, d_out, bias, seed, device) -> None:
    x = torch.randn(*lead, d_in, dtype=torch.float64, device=device, requires_grad=True)
    gy = torch.randn(*lead, d_out, dtype=torch.float64, device=device)
    ref = nn.LazyLinear(d_out, bias=bias).to(device, torch.float64)  # PyTorch: convert first, then dry-run
    ours = LazyLinearScratch(d_out, bias=bias)  # ours: device and dtype come from the first input
    outs = []
    for layer in (ours, ref):
        torch.manual_seed(seed)
        y = layer(x)
        outs.append((y, *torch.autograd.grad(y, [x, *layer.parameters()], gy)))
    assert type(ref) is nn.Linear  # the lazy class turns into the plain one
    assert ours.weight.shape == ref.weight.shape == (d_out, d_in) and ours.in_features == d_in
    assert ours.weight.device == x.device and ours.weight.dtype == torch.float64
    assert_close(ours.weight, ref.weight)
    if bias:
        assert_close(ours.bias, ref.bias)
    for a, b in zip(outs[0], outs[1], strict=True):
        assert_close(a, b)


@pytest.mark.parametrize("layer_type", [LazyLinearScratch, nn.LazyLinear])
def test_weights_equal_a_linear_created_at_the_first_forward(layer_type) -> None:
    torch.manual_seed(0)
    lazy = layer_type(4)
    torch.randn(100)  # other random work between construction and the first forward
    torch.manual_seed(1)
    lazy(torch.zeros(2, 3))
    torch.manual_seed(1)
    eager = nn.Linear(3, 4)  # an ordinary Linear created "at that moment"
    assert torch.equal(lazy.weight, eager.weight) and torch.equal(lazy.bias, eager.bias)


@pytest.mark.parametrize("layer_type", [LazyLinearScratch, nn.LazyLinear])
def test_lazy_layers_draw_after_the_eager_ones(layer_type) -> None:
    torch.manual_seed(0)
    eager = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2))
    torch.manual_seed(0)
    lazy = nn.Sequential(layer_type(8), nn.Linear(8, 2))  # Linear(8, 2) draws first, at construction
    lazy(torch.zeros(1, 4))
    torch.manual_seed(0)
    assert torch.equal(lazy[1].weight, nn.Linear(8, 2).weight)
    assert not torch.equal(lazy[0].weight, eager[0].weight)  # same seed, different network
    assert not torch.equal(lazy[1].weight, eager[1].weight)


def test_pytorch_keeps_the_parameter_object_ours_does_not() -> None:
    ref = nn.LazyLinear(2)
    placeholder = ref.weight
    ref(torch.zeros(1, 3))
    assert ref.weight is placeholder and type(placeholder) is nn.Parameter  # materialized in place
    ours = LazyLinearScratch(2)
    ours(torch.zeros(1, 3))
    assert isinstance(ours.weight, nn.Parameter) and ours.weight.requires_grad


def test_optimizer_built_before_the_dry_run_misses_our_lazy_parameters() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), LazyLinearScratch(2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)  # too early: only the first Linear exists
    x = torch.randn(5, 4)
    model(x).sum().backward()
    w0, w2 = model[0].weight.detach().clone(), model[2].weight.detach().clone()
    opt.step()
    assert not torch.equal(model[0].weight, w0)
    assert torch.equal(model[2].weight, w2) and model[2].weight.grad is not None  # has a gradient, never updated
    assert len(opt.param_groups[0]["params"]) == 2 and len(list(model.parameters())) == 4
    with pytest.raises(ValueError, match="empty parameter list"):
        torch.optim.SGD(LazyLinearScratch(2).parameters(), lr=0.1)


def test_pytorch_lazy_parameters_and_an_early_optimizer() -> None:
    model = nn.Sequential(nn.LazyLinear(8), nn.ReLU(), nn.LazyLinear(2))
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)  # works: the same objects are materialized later
    with pytest.raises(ValueError, match="Attempted to use an uninitialized parameter"):
        torch.optim.Adagrad(model.parameters())  # reads the parameters at construction: fails
    model(torch.randn(5, 4)).sum().backward()
    w = model[0].weight.detach().clone()
    sgd.step()
    assert not torch.equal(model[0].weight, w)
    torch.optim.Adagrad(model.parameters())  # after the dry run every optimizer is fine


def test_dry_run_materializes_restores_modes_and_leaves_statistics_alone() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(LazyLinearScratch(8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.LazyLinear(2))
    model.train()
    model[2].eval()  # a mixed mode, to check it is restored exactly
    assert uninitialized_modules(model) == ["0", "3"]
    n = dry_run(model, torch.randn(4, 5))
    assert n == (5 * 8 + 8) + (8 + 8) + (8 * 2 + 2)
    assert uninitialized_modules(model) == []
    assert [m.training for m in model.modules()] == [True, True, True, False, True]
    assert torch.equal(model[1].running_mean, torch.zeros(8)) and model[1].num_batches_tracked == 0
    assert all(p.requires_grad for p in model.parameters())


def test_dry_run_reports_unreached_lazy_layers() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used, self.unused = LazyLinearScratch(3), nn.LazyLinear(3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.used(x)

    with pytest.raises(RuntimeError, match=r"did not reach the lazy module\(s\) \['unused'\]"):
        dry_run(Branchy(), torch.randn(2, 4))


def test_shape_is_fixed_by_the_first_call() -> None:
    ours, ref = LazyLinearScratch(3), nn.LazyLinear(3)
    ours(torch.randn(2, 5))
    ref(torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"x.shape\[-1\]=7 does not match in_features=5 \(fixed at the first call\)"):
        ours(torch.randn(2, 7))
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        ref(torch.randn(2, 7))


def test_dtype_pytorch_uses_the_module_ours_the_input() -> None:
    ref = nn.LazyLinear(3).double()
    with pytest.raises(RuntimeError, match="must have the same dtype"):
        ref(torch.randn(2, 4))  # float32 input, float64 placeholder: convert the model first, then dry-run
    ours = LazyLinearScratch(3)
    ours(torch.randn(2, 4, dtype=torch.float64))
    assert ours.weight.dtype == torch.float64
    ours.float()  # after materialization .to() works as usual
    assert ours.weight.dtype == torch.float32


@pytest.mark.parametrize("layer_type", [LazyLinearScratch, nn.LazyLinear])
def test_load_state_dict_into_an_uninitialized_layer(layer_type) -> None:
    src = nn.Linear(5, 3)
    lazy = layer_type(3)
    state = torch.get_rng_state()
    lazy.load_state_dict(src.state_dict())  # the shapes come from the checkpoint
    assert torch.equal(torch.get_rng_state(), state)  # no random initialisation was drawn
    assert torch.equal(lazy.weight, src.weight) and torch.equal(lazy.bias, src.bias)
    x = torch.randn(2, 5)
    assert torch.equal(lazy(x), src(x))
    nested = nn.Sequential(nn.ReLU(), layer_type(3))
    nested.load_state_dict({"1.weight": src.weight, "1.bias": src.bias})  # prefixes work too
    assert torch.equal(nested[1].weight, src.weight)


def test_state_dict_after_materialization_loads_into_linear() -> None:
    lazy = LazyLinearScratch(3, bias=False)
    lazy(torch.randn(1, 4))
    assert list(lazy.state_dict()) == ["weight"]
    plain = nn.Linear(4, 3, bias=False)
    plain.load_state_dict(lazy.state_dict())
    assert torch.equal(plain.weight, lazy.weight)
    assert "in_features=4, out_features=3, bias=False" in repr(lazy)


def test_meta_device_defers_memory_not_shapes() -> None:
    with torch.device("meta"):
        big = nn.Linear(10_000, 10_000)
    assert big.weight.is_meta and big.weight.shape == (10_000, 10_000)  # 400 MB of float32 never allocated
    with pytest.raises(RuntimeError, match="meta tensors"):
        big.weight.sum().item()
    small = nn.Linear(3, 2, device="meta").to_empty(device="cpu")  # real memory, uninitialized values
    torch.manual_seed(0)
    small.reset_parameters()
    torch.manual_seed(0)
    ref = nn.Linear(3, 2)
    assert torch.equal(small.weight, ref.weight) and torch.equal(small.bias, ref.bias)


def test_rejected_inputs() -> None:
    with pytest.raises(ValueError, match="out_features must be a positive int, got out_features=0"):
        LazyLinearScratch(0)
    with pytest.raises(ValueError, match="out_features must be a positive int, got out_features=2.0"):
        LazyLinearScratch(2.0)
    with pytest.raises(TypeError, match="bias must be a bool, got str"):
        LazyLinearScratch(2, bias="yes")
    with pytest.raises(ValueError, match="x must have at least 1 dimension"):
        LazyLinearScratch(2)(torch.tensor(1.0))
    with pytest.raises(ValueError, match=r"cannot infer in_features from x.shape\[-1\]=0"):
        LazyLinearScratch(2)(torch.zeros(3, 0))
    with pytest.raises(TypeError, match="model must be an nn.Module, got function"):
        dry_run(lambda x: x, torch.zeros(1))


def test_lazy_convolution_infers_the_channel_dimension() -> None:
    conv = nn.LazyConv2d(8, kernel_size=3)
    conv(torch.zeros(2, 5, 9, 9))  # (B, C_in, H, W): in_channels comes from dim 1, not the last one
    assert type(conv) is nn.Conv2d and conv.in_channels == 5 and conv.weight.shape == (8, 5, 3, 3)
