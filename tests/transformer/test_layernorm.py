"""layer_norm vs nn.LayerNorm / F.layer_norm, batch_norm vs nn.BatchNorm1d; statistic shapes and padding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from snippets.transformer.layernorm import batch_norm, layer_norm, norm_stats, padded_batch_demo, stats_shapes_demo
from tests.conftest import assert_close

F64 = torch.float64


def _x(seed: int, device: torch.device) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    b, seq, d = (int(v) for v in torch.randint(1, 7, (3,), generator=g))
    return (3.0 + 2.0 * torch.randn(b, seq + 1, d + 1, generator=g, dtype=F64)).to(device)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("trailing", [1, 2])  # normalized_shape (d,) and (seq, d)
def test_matches_nn_layernorm(seed: int, trailing: int, device: torch.device) -> None:
    x = _x(seed, device)
    shape = tuple(x.shape[-trailing:])
    torch.manual_seed(seed)
    ref = nn.LayerNorm(shape, dtype=F64, device=device)
    with torch.no_grad():  # random γ, β so the affine part is tested too
        ref.weight.normal_()
        ref.bias.normal_()
    w, b = ref.weight.detach().clone().requires_grad_(), ref.bias.detach().clone().requires_grad_()
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    out, out_ref = layer_norm(xa, shape, w, b), ref(xb)
    assert_close(out, out_ref)
    grad = torch.randn_like(out)
    out.backward(grad)
    out_ref.backward(grad)
    assert_close(xa.grad, xb.grad)
    assert_close(w.grad, ref.weight.grad)
    assert_close(b.grad, ref.bias.grad)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("trailing", [1, 2])
def test_matches_f_layer_norm_without_affine(seed: int, trailing: int, device: torch.device) -> None:
    x = _x(seed, device)
    shape = tuple(x.shape[-trailing:])
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    out, out_ref = layer_norm(xa, shape, eps=1e-3), F.layer_norm(xb, shape, eps=1e-3)
    assert_close(out, out_ref)
    grad = torch.randn_like(out)
    out.backward(grad)
    out_ref.backward(grad)
    assert_close(xa.grad, xb.grad)
    assert_close(layer_norm(x, x.size(-1)), F.layer_norm(x, (x.size(-1),)))  # an int normalized_shape


@pytest.mark.parametrize("seed", range(5))
def test_batch_norm_matches_batchnorm1d_over_batch_and_time(seed: int, device: torch.device) -> None:
    x = _x(seed, device)
    d = x.size(-1)
    torch.manual_seed(seed)
    ref = nn.BatchNorm1d(d, dtype=F64, device=device).train()
    with torch.no_grad():
        ref.weight.normal_()
        ref.bias.normal_()
    w, b = ref.weight.detach().clone().requires_grad_(), ref.bias.detach().clone().requires_grad_()
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = batch_norm(xa, w, b)
    out_ref = ref(xb.transpose(1, 2)).transpose(1, 2)  # BatchNorm1d wants (B, C, L)
    assert_close(out, out_ref)
    grad = torch.randn_like(out)
    out.backward(grad)
    out_ref.backward(grad)
    assert_close(xa.grad, xb.grad)
    assert_close(w.grad, ref.weight.grad)
    assert_close(b.grad, ref.bias.grad)


def test_statistic_shapes() -> None:
    shapes = stats_shapes_demo(bs=4, seq=5, f=8)
    assert shapes == {
        "BatchNorm1d(f) on (bs, f)": (1, 8),
        "LayerNorm(f) on (bs, f)": (4, 1),
        "BatchNorm over (bs, seq) on (bs, seq, f)": (1, 1, 8),
        "LayerNorm(f) on (bs, seq, f)": (4, 5, 1),
        "LayerNorm((seq, f)) on (bs, seq, f)": (4, 1, 1),
    }


@pytest.mark.parametrize(("shape", "stat_shape"), [((8,), (4, 5, 1)), ((5, 8), (4, 1, 1))])
def test_pytorch_layernorm_keeps_the_same_statistics(shape, stat_shape) -> None:
    x = torch.randn(4, 5, 8, dtype=F64)
    _, mean, rstd = torch.native_layer_norm(x, shape, None, None, 1e-5)  # the statistics PyTorch saves
    assert tuple(mean.shape) == tuple(rstd.shape) == stat_shape
    ours_mean, ours_var = norm_stats(x, tuple(range(-len(shape), 0)))
    assert_close(mean, ours_mean)
    assert_close(rstd, (ours_var + 1e-5).rsqrt())


def test_padding_changes_batchnorm_and_seq_layernorm_but_not_token_layernorm() -> None:
    for seed in range(3):
        change = padded_batch_demo(seed=seed)
        assert change["LayerNorm(d)"] == 0.0  # exactly: every token only sees its own features
        assert change["BatchNorm(batch+time)"] > 0.1
        assert change["LayerNorm((seq, d))"] > 0.1
    assert all(v == 0.0 for v in padded_batch_demo(extra_pad=0).values())  # no extra padding: no change


def test_nn_layernorm_d_model_ignores_appended_padding() -> None:
    torch.manual_seed(0)
    ln = nn.LayerNorm(8, dtype=F64)
    x = torch.randn(2, 5, 8, dtype=F64)
    padded = torch.cat([x, torch.zeros(2, 3, 8, dtype=F64)], dim=1)
    assert torch.equal(ln(padded)[:, :5], ln(x))


def test_layernorm_is_identical_in_train_and_eval_batchnorm_is_not() -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 4, 6, dtype=F64) * 2 + 1
    ln = nn.LayerNorm(6, dtype=F64)
    assert list(ln.buffers()) == []  # no running statistics to switch to
    assert torch.equal(ln.train()(x), ln.eval()(x))
    bn = nn.BatchNorm1d(6, dtype=F64)
    train_out = bn.train()(x.transpose(1, 2))
    assert not torch.allclose(train_out, bn.eval()(x.transpose(1, 2)))  # eval uses running estimates


def test_gamma_beta_are_learned_by_the_same_backward_and_step() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, dtype=F64)
    ln = nn.LayerNorm(4, dtype=F64)
    target = torch.randn(2, 3, 4, dtype=F64)
    loss = (ln(x) - target).pow(2).sum()
    loss.backward()
    x_hat = layer_norm(x, 4)
    g = 2 * (x_hat * ln.weight + ln.bias - target).detach()  # dL/dy
    assert_close(ln.weight.grad, (g * x_hat).sum(dim=(0, 1)))  # dL/dγ = Σ_tokens g ⊙ x̂
    assert_close(ln.bias.grad, g.sum(dim=(0, 1)))  # dL/dβ = Σ_tokens g
    params = list(ln.parameters())  # what an optimizer is handed: γ and β, nothing else
    assert len(params) == 2 and params[0] is ln.weight and params[1] is ln.bias
    assert all(p.requires_grad for p in params)


def test_constant_token_gives_zeros_not_nan() -> None:
    x = torch.full((2, 3, 4), 7.0, dtype=F64)
    assert torch.equal(layer_norm(x, 4), torch.zeros_like(x))


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (((2, 3, 4), (5,)), {}, r"x of shape \(2, 3, 4\) does not end with normalized_shape=\(5,\)"),
        (((4,), (3, 4)), {}, "does not end with normalized_shape"),
        (((2, 4), ()), {}, "normalized_shape must be a non-empty tuple of positive sizes"),
        (((2, 4), (0,)), {}, "positive sizes"),
        (((2, 4), (4,)), {"weight": torch.ones(3)}, r"weight must have shape \(4,\), got \(3,\)"),
        (((2, 4), (4,)), {"bias": torch.ones(4, 1)}, r"bias must have shape \(4,\), got \(4, 1\)"),
        (((2, 4), (4,)), {"eps": 0.0}, "eps must be positive"),
    ],
)
def test_layer_norm_rejects_bad_input(args, kwargs, match) -> None:
    shape, normalized = args
    with pytest.raises(ValueError, match=match):
        layer_norm(torch.randn(shape), normalized, **kwargs)


def test_batch_norm_and_demo_reject_bad_input() -> None:
    with pytest.raises(ValueError, match=r"x must be \(B, L, d\), got shape \(4, 3\)"):
        batch_norm(torch.randn(4, 3))
    with pytest.raises(ValueError, match="at least 2 values per feature, got B\\*L=1"):
        batch_norm(torch.randn(1, 1, 3))
    with pytest.raises(ValueError, match=r"weight must have shape \(3,\)"):
        batch_norm(torch.randn(2, 2, 3), weight=torch.ones(2))
    with pytest.raises(ValueError, match="eps must be positive"):
        batch_norm(torch.randn(2, 2, 3), eps=-1.0)
    with pytest.raises(ValueError, match=r"lengths must be positive, got \(3, 0\)"):
        padded_batch_demo(lengths=(3, 0))
    with pytest.raises(ValueError, match="extra_pad must be >= 0, got -1"):
        padded_batch_demo(extra_pad=-1)
