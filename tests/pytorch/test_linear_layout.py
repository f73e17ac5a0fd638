"""nn.Linear's (out, in) weight: linear() vs F.linear / nn.Linear, forward and backward, and the page's claims."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from snippets.pytorch.linear_layout import from_in_out_kernel, linear, linear_by_rows, linear_grads
from tests.conftest import assert_close

CASES = [  # (leading dims, in_features, out_features, bias)
    ((), 3, 5, True),
    ((7,), 4, 2, True),
    ((2, 3), 6, 6, False),
    ((2, 1, 4), 5, 1, True),
    ((3,), 2, 9, False),
]


def _data(lead, d_in, d_out, bias, seed, device):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*lead, d_in, generator=g, dtype=torch.float64).to(device).requires_grad_()
    w = torch.randn(d_out, d_in, generator=g, dtype=torch.float64).to(device).requires_grad_()
    b = torch.randn(d_out, generator=g, dtype=torch.float64).to(device).requires_grad_() if bias else None
    gy = torch.randn(*lead, d_out, generator=g, dtype=torch.float64).to(device)
    return x, w, b, gy


def _grads(fn, x, w, b, gy):
    y = fn(x, w, b)
    inputs = [x, w] + ([b] if b is not None else [])
    return y, torch.autograd.grad(y, inputs, gy)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(("lead", "d_in", "d_out", "bias"), CASES)
@pytest.mark.parametrize("fn", [linear, linear_by_rows], ids=["linear", "linear_by_rows"])
def test_matches_f_linear(fn, lead, d_in, d_out, bias, seed, device) -> None:
    x, w, b, gy = _data(lead, d_in, d_out, bias, seed, device)
    y, grads = _grads(fn, x, w, b, gy)
    y_ref, grads_ref = _grads(F.linear, x, w, b, gy)
    assert y.shape == (*lead, d_out)
    assert_close(y, y_ref)
    for g, g_ref in zip(grads, grads_ref, strict=True):
        assert_close(g, g_ref)


@pytest.mark.parametrize(("lead", "d_in", "d_out", "bias"), CASES)
def test_matches_nn_linear_with_copied_weights(lead, d_in, d_out, bias, device) -> None:
    torch.manual_seed(0)
    layer = nn.Linear(d_in, d_out, bias=bias, device=device, dtype=torch.float64)
    x = torch.randn(*lead, d_in, dtype=torch.float64, device=device, requires_grad=True)
    w = layer.weight.detach().clone().requires_grad_()
    b = layer.bias.detach().clone().requires_grad_() if bias else None
    y, y_ref = linear(x, w, b), layer(x)
    assert_close(y, y_ref)
    gy = torch.randn_like(y)
    (y * gy).sum().backward()
    (y_ref * gy).sum().backward()
    assert_close(w.grad, layer.weight.grad)
    if bias:
        assert_close(b.grad, layer.bias.grad)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(("lead", "d_in", "d_out", "bias"), CASES)
def test_hand_written_grads_match_autograd(lead, d_in, d_out, bias, seed, device) -> None:
    x, w, b, gy = _data(lead, d_in, d_out, True, seed, device)
    _, (gx_ref, gw_ref, gb_ref) = _grads(F.linear, x, w, b, gy)
    gx, gw, gb = linear_grads(x.detach(), w.detach(), gy)
    assert gw.shape == w.shape  # the gradient comes out in the stored (out, in) layout
    assert_close(gx, gx_ref)
    assert_close(gw, gw_ref)
    assert_close(gb, gb_ref)


def test_gradcheck() -> None:
    x, w, b, _ = _data((2, 3), 4, 3, True, 0, "cpu")
    assert torch.autograd.gradcheck(linear, (x, w, b))


def test_weight_is_stored_out_in_and_row_i_is_unit_i() -> None:
    layer = nn.Linear(3, 5)
    assert layer.weight.shape == (5, 3) and layer.bias.shape == (5,)
    assert (layer.in_features, layer.out_features) == (3, 5)
    x = torch.randn(4, 3, dtype=layer.weight.dtype)
    before = layer(x).detach()
    with torch.no_grad():
        layer.weight[2] += 1.0  # change the weights of output unit 2 only
    changed = (layer(x).detach() - before).abs().sum(0) > 0
    assert changed.tolist() == [False, False, True, False, False]
    assert layer.weight[2].is_contiguous()  # one unit's weights are one contiguous row


def test_transpose_is_a_view_not_a_copy() -> None:
    w = nn.Linear(3, 5).weight
    wt = w.mT
    assert wt.shape == (3, 5) and wt.data_ptr() == w.data_ptr()
    assert w.stride() == (3, 1) and wt.stride() == (1, 3) and not wt.is_contiguous()
    assert torch.equal(w.t(), wt) and torch.equal(w.T, wt)


def test_gradient_has_the_weight_layout() -> None:
    layer = nn.Linear(3, 5)
    layer(torch.randn(4, 3)).sum().backward()
    assert layer.weight.grad.shape == layer.weight.shape == (5, 3)


def test_default_init_uses_fan_in_from_dim_1() -> None:
    d_in, d_out = 16, 300
    torch.manual_seed(0)
    layer = nn.Linear(d_in, d_out)
    assert nn.init._calculate_fan_in_and_fan_out(layer.weight) == (d_in, d_out)
    bound = 1 / math.sqrt(d_in)
    assert layer.weight.abs().max() <= bound and layer.bias.abs().max() <= bound
    assert layer.weight.abs().max() > 0.9 * bound  # U(-1/sqrt(in), 1/sqrt(in)) is actually used


def test_weight_tying_with_an_embedding_needs_no_transpose() -> None:
    vocab, d = 11, 4
    emb, head = nn.Embedding(vocab, d), nn.Linear(d, vocab, bias=False)
    assert head.weight.shape == emb.weight.shape == (vocab, d)
    head.weight = emb.weight  # tie: the same Parameter object
    h = torch.randn(2, d)
    assert torch.equal(head(h), h @ emb.weight.T)
    assert len(list(nn.ModuleList([emb, head]).parameters())) == 1


def test_conv_weights_put_out_channels_first_too() -> None:
    torch.manual_seed(0)
    conv = nn.Conv1d(4, 6, kernel_size=1, dtype=torch.float64)
    assert conv.weight.shape == (6, 4, 1)
    assert nn.Conv2d(3, 8, 5).weight.shape == (8, 3, 5, 5)
    x = torch.randn(2, 4, 7, dtype=torch.float64)  # (B, C_in, L)
    y_lin = linear(x.mT, conv.weight[..., 0], conv.bias).mT  # a 1x1 convolution is a Linear over channels
    assert_close(conv(x), y_lin)


def test_porting_an_in_out_kernel() -> None:
    torch.manual_seed(0)
    d_in, d_out = 3, 5
    kernel = torch.randn(d_in, d_out, dtype=torch.float64)  # Keras/Flax layout: y = x @ kernel + b
    b = torch.randn(d_out, dtype=torch.float64)
    x = torch.randn(4, d_in, dtype=torch.float64)
    layer = nn.Linear(d_in, d_out, dtype=torch.float64)
    layer.load_state_dict({"weight": from_in_out_kernel(kernel), "bias": b})
    assert layer.weight.is_contiguous()
    assert_close(layer(x), x @ kernel + b)
    with pytest.raises(RuntimeError, match=r"size mismatch for weight"):
        layer.load_state_dict({"weight": kernel, "bias": b})  # not transposed: caught when in != out


def test_square_kernel_loaded_without_transpose_is_silently_wrong() -> None:
    torch.manual_seed(0)
    kernel = torch.randn(4, 4, dtype=torch.float64)
    x = torch.randn(3, 4, dtype=torch.float64)
    layer = nn.Linear(4, 4, bias=False, dtype=torch.float64)
    layer.load_state_dict({"weight": kernel})  # no error: the shapes agree
    assert not torch.allclose(layer(x), x @ kernel)
    layer.load_state_dict({"weight": from_in_out_kernel(kernel)})
    assert_close(layer(x), x @ kernel)


def test_rejected_inputs() -> None:
    w = torch.zeros(5, 3)
    with pytest.raises(ValueError, match=r"weight must be 2-D \(out_features, in_features\), got weight.shape=\(15,\)"):
        linear(torch.zeros(3), w.flatten())
    with pytest.raises(ValueError, match="x must have at least 1 dimension"):
        linear(torch.tensor(1.0), w)
    with pytest.raises(ValueError, match=r"x.shape\[-1\]=5 must equal weight.shape\[1\]=3"):
        linear(torch.zeros(2, 5), w)  # passing an (in, out) weight by mistake
    with pytest.raises(ValueError, match=r"bias must have shape \(out_features,\)=\(5,\), got bias.shape=\(3,\)"):
        linear(torch.zeros(2, 3), w, torch.zeros(3))
    with pytest.raises(TypeError, match="weight must be a torch.Tensor, got list"):
        linear(torch.zeros(2, 3), [[0.0] * 3] * 5)
    with pytest.raises(ValueError, match=r"x.shape\[-1\]=4 must equal weight.shape\[1\]=3"):
        linear_by_rows(torch.zeros(2, 4), w)
    with pytest.raises(ValueError, match=r"grad_y.shape=\(2, 3\) must be x.shape\[:-1\] \+ \(out_features,\)=\(2, 5\)"):
        linear_grads(torch.zeros(2, 3), w, torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"kernel must be 2-D \(in_features, out_features\), got kernel.shape=\(3,\)"):
        from_in_out_kernel(torch.zeros(3))
    with pytest.raises(TypeError, match="kernel must be a torch.Tensor, got ndarray"):
        from_in_out_kernel(torch.zeros(3, 5).numpy())


def test_zero_output_units() -> None:
    x = torch.randn(2, 3)
    w = torch.zeros(0, 3)
    assert linear_by_rows(x, w).shape == linear(x, w).shape == F.linear(x, w).shape == (2, 0)
