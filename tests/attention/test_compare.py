"""CNN vs RNN vs self-attention: dependency footprints, sequential depth, path length, FLOPs."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from snippets.attention.compare import (
    Conv1dLayer,
    ElmanRNN,
    SelfAttentionLayer,
    autograd_depth,
    complexity_table,
    count_sequential_cell_calls,
    layer_flops,
    make_stack,
    max_path_length,
    module_call_chains,
    receptive_field_via_autograd,
    sequential_steps,
)
from snippets.attention.sdpa import scaled_dot_product_attention
from tests.conftest import assert_close

F64 = torch.float64


def _stack(kind: str, d: int, layers: int, device: torch.device, k: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return make_stack(kind, d, layers, k).to(device, F64)


@pytest.mark.parametrize("seed", range(3))
def test_elman_rnn_matches_nn_rnn(seed: int, device: torch.device) -> None:
    """The written-out recurrence equals nn.RNN(batch_first=True) with copied weights, fwd + bwd."""
    torch.manual_seed(seed)
    b, t, d = 3, 7, 5
    ours, ref = ElmanRNN(d).to(device, F64), nn.RNN(d, d, batch_first=True).to(device, F64)
    with torch.no_grad():
        for lin, suffix in ((ours.ih, "ih"), (ours.hh, "hh")):
            lin.weight.copy_(getattr(ref, f"weight_{suffix}_l0"))
            lin.bias.copy_(getattr(ref, f"bias_{suffix}_l0"))
    x = torch.randn(b, t, d, dtype=F64, device=device)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, (yb, _) = ours(xa), ref(xb)
    assert_close(ya, yb)
    grad = torch.randn_like(ya)
    ya.backward(grad)
    yb.backward(grad)
    assert_close(xa.grad, xb.grad)
    pairs = [
        (ours.ih.weight, ref.weight_ih_l0),
        (ours.hh.weight, ref.weight_hh_l0),
        (ours.ih.bias, ref.bias_ih_l0),
        (ours.hh.bias, ref.bias_hh_l0),
    ]
    for a, r in pairs:
        assert_close(a.grad, r.grad)


def test_receptive_field_matches_a_jacobian(device: torch.device) -> None:
    """The one-backward-pass trick equals the non-zero pattern of the full Jacobian."""
    model = _stack("cnn", 3, 2, device)
    g = torch.Generator().manual_seed(0)
    dep = receptive_field_via_autograd(model, 8, 3, generator=g)
    x = torch.randn(1, 8, 3, generator=torch.Generator().manual_seed(0), dtype=F64).to(device)
    jac = torch.autograd.functional.jacobian(lambda x: model(x)[0], x)[:, :, 0]  # (T, d, T, d)
    assert torch.equal(dep, jac.abs().sum((1, 3)) != 0)


@pytest.mark.parametrize(("k", "layers"), [(3, 1), (3, 2), (3, 4), (5, 1), (5, 3), (7, 2)])
def test_stacked_conv_footprint_is_k_minus_1_times_L_plus_1(k: int, layers: int, device) -> None:
    size = (k - 1) * layers + 1
    T = size + 6
    dep = receptive_field_via_autograd(_stack("cnn", 2, layers, device, k), T, 2)
    t = T // 2
    assert int(dep[t].sum()) == size  # an interior output sees exactly (k-1)L+1 inputs ...
    pos = torch.arange(T, device=device)
    band = (pos[:, None] - pos[None, :]).abs() <= layers * (k - 1) // 2
    assert torch.equal(dep, band)  # ... centred on itself (clipped at the borders)


def test_one_self_attention_layer_sees_every_position(device: torch.device) -> None:
    dep = receptive_field_via_autograd(_stack("self-attention", 4, 1, device), 12, 4)
    assert bool(dep.all())
    torch.manual_seed(0)
    causal = SelfAttentionLayer(4, causal=True).to(device, F64)
    dep_causal = receptive_field_via_autograd(causal, 12, 4)
    assert torch.equal(dep_causal, torch.ones(12, 12, dtype=torch.bool, device=device).tril())


@pytest.mark.parametrize("layers", [1, 2])
def test_rnn_output_t_depends_exactly_on_inputs_up_to_t(layers: int, device: torch.device) -> None:
    dep = receptive_field_via_autograd(_stack("rnn", 4, layers, device), 10, 4)
    assert torch.equal(dep, torch.ones(10, 10, dtype=torch.bool, device=device).tril())
    dep_ref = receptive_field_via_autograd(_BuiltinRNN(4, layers).to(device, F64), 10, 4)
    assert torch.equal(dep_ref, dep)  # the built-in nn.RNN has the same footprint


class _BuiltinRNN(nn.Module):
    """nn.RNN returning only its outputs, (B, T, d) -> (B, T, d)."""

    def __init__(self, d: int, layers: int) -> None:
        super().__init__()
        self.rnn = nn.RNN(d, d, layers, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rnn(x)[0]


@pytest.mark.parametrize("n", [4, 5, 8, 9])
@pytest.mark.parametrize("k", [3, 5])
def test_cnn_max_path_length_is_the_fewest_layers_that_connect_the_ends(n: int, k: int) -> None:
    cpu, path = torch.device("cpu"), max_path_length("cnn", n, k)
    connected = {
        layers: bool(receptive_field_via_autograd(_stack("cnn", 1, layers, cpu, k), n, 1)[n - 1, 0])
        for layers in (path - 1, path)
        if layers > 0
    }
    assert connected[path] and not connected.get(path - 1, False)  # path layers connect, one fewer not


def test_sequential_depth_grows_with_n_only_for_the_rnn(device: torch.device) -> None:
    """Critical path of the autograd graph: +c per extra position for the RNN, constant otherwise."""
    depths = {}
    for kind in ("cnn", "rnn", "self-attention"):
        model = _stack(kind, 4, 1, device)
        for n in (4, 8, 16):
            x = torch.randn(1, n, 4, dtype=F64, device=device, requires_grad=True)
            depths[kind, n] = autograd_depth(model(x).sum())
    for kind in ("cnn", "self-attention"):
        assert depths[kind, 4] == depths[kind, 8] == depths[kind, 16]
        assert sequential_steps(kind, 16) == sequential_steps(kind, 4) == 1
    per_step = (depths["rnn", 8] - depths["rnn", 4]) / 4
    assert per_step >= 1 and depths["rnn", 16] - depths["rnn", 8] == 8 * per_step  # linear in n
    assert sequential_steps("rnn", 16) - sequential_steps("rnn", 8) == 8


@pytest.mark.parametrize(("n", "d", "k"), [(8, 16, 3), (16, 8, 3), (12, 12, 5)])
def test_layer_flops_match_the_flop_counter(n: int, d: int, k: int) -> None:
    torch.manual_seed(0)
    x = torch.randn(1, n, d, dtype=F64)
    layers = {
        "self-attention": lambda x: scaled_dot_product_attention(x, x, x),  # the core, no projections
        "rnn": ElmanRNN(d).double(),
        "cnn": Conv1dLayer(d, k).double(),
    }
    for kind, layer in layers.items():
        with FlopCounterMode(display=False) as counter:
            layer(x)
        assert counter.get_total_flops() == layer_flops(kind, n, d, k), kind


def test_self_attention_is_cheaper_than_an_rnn_exactly_when_n_below_d() -> None:
    for n, d in [(50, 512), (511, 512), (512, 512), (513, 512), (4096, 512)]:
        assert (layer_flops("self-attention", n, d) < layer_flops("rnn", n, d)) == (n < d)
    table = {row["layer"]: row for row in complexity_table(100, 512)}
    assert table["self-attention"]["flops"] == 20_480_000 and table["rnn"]["flops"] == 104_857_600
    assert table["cnn"]["max_path_length"] == 99 and table["rnn"]["sequential_steps"] == 100


def test_attention_is_nonlinear_in_x_but_linear_in_v(device: torch.device) -> None:
    """002 L352: attention is *not* a linear operation like (the linear part of) an RNN —
    the softmax makes it nonlinear in its input; only the final sum is linear in V."""
    g = torch.Generator().manual_seed(0)
    q, k, v1, v2 = (torch.randn(5, 4, generator=g, dtype=F64).to(device) for _ in range(4))
    f = scaled_dot_product_attention
    assert not torch.allclose(f(2 * q, 2 * k, 2 * v1), 2 * f(q, k, v1))  # not homogeneous in X
    assert_close(f(q, k, 2 * v1 + 3 * v2), 2 * f(q, k, v1) + 3 * f(q, k, v2))  # linear in V


@pytest.mark.parametrize("T", [1, 3, 8, 17])
def test_an_rnn_needs_exactly_T_sequential_cell_calls(T: int, device: torch.device) -> None:
    """10.01: h_t needs h_{t-1}, so the cell runs T times, each call waiting for the previous one."""
    assert count_sequential_cell_calls(_stack("rnn", 4, 1, device), T, 4) == T
    chains = module_call_chains(_stack("rnn", 4, 1, device), torch.randn(2, T, 4, dtype=F64, device=device))
    assert chains["0.hh"] == (T, T) and chains["0.ih"] == (1, 1)  # input projection: one batched call
    torch.manual_seed(0)
    assert count_sequential_cell_calls(_CellLoop(4).to(device, F64), T, 4) == T  # built-in nn.RNNCell too


@pytest.mark.parametrize("T", [1, 3, 8, 17])
def test_one_attention_layer_is_one_batched_call(T: int, device: torch.device) -> None:
    for kind in ("self-attention", "cnn"):
        model = _stack(kind, 4, 1, device)
        assert count_sequential_cell_calls(model, T, 4) == 1, kind
        x = torch.randn(1, T, 4, dtype=F64, device=device)
        assert all(calls == 1 for calls, _ in module_call_chains(model, x).values()), kind


def test_many_calls_are_not_a_sequential_chain(device: torch.device) -> None:
    """Calls count work; only calls that consume each other's outputs must run in sequence."""
    torch.manual_seed(0)
    model = _PerPositionLoop(4).to(device, F64)
    x = torch.randn(2, 9, 4, dtype=F64, device=device)
    assert module_call_chains(model, x)["mlp"] == (9, 1)  # 9 independent calls: parallelisable
    assert count_sequential_cell_calls(model, 9, 4) == 1


def test_causal_attention_parallel_in_training_sequential_in_generation(device: torch.device) -> None:
    """10.01/10.08: one call computes all T outputs under teacher forcing; generating T tokens
    feeds each output back in, a chain of T - 1 calls, and gives the same numbers."""
    torch.manual_seed(0)
    layer = SelfAttentionLayer(4, causal=True).to(device, F64)
    gen = _Generate(layer)
    x = torch.randn(1, 6, 4, dtype=F64, device=device)
    generated = gen(x)  # (1, 6, 4): the first row is the prompt, the rest was generated
    assert module_call_chains(gen, x)["layer"] == (5, 5)
    assert module_call_chains(layer, generated)[""] == (1, 1)  # training: one call ...
    assert_close(layer(generated)[:, :-1], generated[:, 1:])  # ... same outputs, all positions at once


def test_rnn_gradient_from_distant_inputs_vanishes_attention_does_not(device: torch.device) -> None:
    """10.01 ("only h_{t-1}", vanishing gradients): |d y_last / d x_s| shrinks geometrically with the
    distance through the recurrence; one attention layer reaches every input in one step."""
    torch.manual_seed(0)
    T, d = 40, 8
    x = torch.randn(1, T, d, dtype=F64, device=device, requires_grad=True)
    size = {}
    for kind in ("rnn", "self-attention"):
        model = make_stack(kind, d).to(device, F64)
        (grad,) = torch.autograd.grad(model(x)[0, -1].sum(), x)
        size[kind] = grad[0].norm(dim=-1)  # (T,)
    assert size["rnn"][0] < 1e-6 * size["rnn"][-1]
    assert (size["rnn"][:-1] / size["rnn"][1:]).max() < 1  # every step back loses signal
    assert size["self-attention"][0] > 1e-2 * size["self-attention"][-1]


class _CellLoop(nn.Module):
    """The textbook loop over the built-in nn.RNNCell, (B, T, d) -> (B, T, d)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.cell = nn.RNNCell(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, out = torch.zeros_like(x[:, 0]), []
        for t in range(x.size(1)):
            h = self.cell(x[:, t], h)
            out.append(h)
        return torch.stack(out, 1)


class _PerPositionLoop(nn.Module):
    """A Linear applied position by position in a Python loop: T calls, none waits for another."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.mlp = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.mlp(x[:, t]) for t in range(x.size(1))], 1)


class _Generate(nn.Module):
    """Greedy-style generation with a causal layer: the output at the last position becomes the
    next input token. Only x[:, :1] (the prompt) is read; returns the prompt + T - 1 new tokens."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq = x[:, :1]
        for _ in range(x.size(1) - 1):
            seq = torch.cat([seq, self.layer(seq)[:, -1:]], 1)
        return seq


def test_attention_with_a_local_bias_reproduces_a_convolution(device: torch.device) -> None:
    """9.13 erratum (002 L533): attention is not weaker at "grabbing information" -- with a distance
    bias it computes a 3-tap mean filter exactly; locality is just not built in, it must be learned."""
    g = torch.Generator().manual_seed(0)
    n, d = 10, 3
    x = torch.randn(1, n, d, generator=g, dtype=F64).to(device)
    pos = torch.arange(n, device=device)
    near = (pos[:, None] - pos[None, :]).abs() <= 1
    bias = torch.zeros(n, n, dtype=F64, device=device).masked_fill(~near, float("-inf"))
    q = k = torch.zeros_like(x)  # all scores 0: uniform weights over the allowed window
    att = scaled_dot_product_attention(q, k, x, attn_mask=bias)
    conv = nn.Conv1d(d, d, 3, padding=1, bias=False, groups=d).to(device, F64)
    with torch.no_grad():
        conv.weight.fill_(1 / 3)
    ref = conv(x.transpose(1, 2)).transpose(1, 2)
    assert_close(att[:, 1:-1], ref[:, 1:-1])  # identical away from the zero-padded borders
    unbiased = receptive_field_via_autograd(_stack("self-attention", d, 1, device), n, d)
    assert bool(unbiased.all())  # without the bias nothing makes it local


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        sequential_steps("transformer", 4)
    with pytest.raises(ValueError, match="kernel_size must be odd and positive"):
        Conv1dLayer(4, 4)
    with pytest.raises(ValueError, match="kernel_size must be odd and > 1, got 2"):
        max_path_length("cnn", 5, 2)
    with pytest.raises(ValueError, match="n must be positive, got n=0"):
        max_path_length("rnn", 0)
    with pytest.raises(ValueError, match="d must be positive, got d=0"):
        layer_flops("cnn", 4, 0)
    with pytest.raises(ValueError, match="T and d_in must be positive"):
        receptive_field_via_autograd(make_stack("cnn", 2), 0, 2)
    with pytest.raises(ValueError, match=r"must map \(B, T, d_in\)"):
        receptive_field_via_autograd(nn.Flatten(), 3, 2)
    with pytest.raises(ValueError, match="no grad_fn"):
        autograd_depth(torch.ones(3))
    with pytest.raises(ValueError, match="num_layers must be positive"):
        make_stack("rnn", 4, 0)
    with pytest.raises(ValueError, match="T and d_in must be positive, got T=0"):
        count_sequential_cell_calls(make_stack("rnn", 4), 0, 4)
