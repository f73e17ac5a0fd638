"""PositionwiseFFN vs nn.Sequential(nn.Linear, nn.ReLU, nn.Linear) and vs 1x1 nn.Conv1d, weights copied."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from snippets.attention.sdpa import scaled_dot_product_attention
from snippets.transformer.ffn import PositionwiseFFN, position_mixing
from tests.conftest import assert_close

F64 = torch.float64


def _ffn(seed: int, device: torch.device, activation: str = "relu"):
    """A random FFN of random size and an input (B, L, d_model) for it."""
    g = torch.Generator().manual_seed(seed)
    b, seq, d, d_ff = (int(v) for v in torch.randint(1, 9, (4,), generator=g))
    torch.manual_seed(seed)
    ffn = PositionwiseFFN(d, d_ff, activation=activation, dtype=F64, device=device)
    x = torch.randn(b, seq, d, generator=g, dtype=F64).to(device)
    return ffn, x


def _compare(ours: nn.Module, ref: nn.Module, x: torch.Tensor, to_ref=lambda t: t, from_ref=lambda t: t) -> None:
    """Forward, input grad and every parameter grad (``ours`` and ``ref`` list parameters alike)."""
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    out, out_ref = ours(xa), from_ref(ref(to_ref(xb)))
    assert_close(out, out_ref)
    grad = torch.randn_like(out)
    out.backward(grad)
    out_ref.backward(grad)
    assert_close(xa.grad, xb.grad)
    for p, q in zip(ours.parameters(), ref.parameters(), strict=True):
        assert_close(p.grad, q.grad.reshape(p.shape))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(("activation", "act"), [("relu", nn.ReLU), ("gelu", nn.GELU)])
def test_matches_sequential_linear_relu_linear(seed: int, activation: str, act, device: torch.device) -> None:
    ffn, x = _ffn(seed, device, activation)
    d, d_ff = ffn.linear1.in_features, ffn.linear1.out_features
    ref = nn.Sequential(nn.Linear(d, d_ff), act(), nn.Linear(d_ff, d)).to(device, F64)
    ref.load_state_dict(
        {
            "0.weight": ffn.linear1.weight,
            "0.bias": ffn.linear1.bias,
            "2.weight": ffn.linear2.weight,
            "2.bias": ffn.linear2.bias,
        }
    )
    _compare(ffn, ref, x)


@pytest.mark.parametrize("seed", range(5))
def test_matches_conv1d_kernel_size_1(seed: int, device: torch.device) -> None:
    ffn, x = _ffn(seed, device)
    d, d_ff = ffn.linear1.in_features, ffn.linear1.out_features
    conv = nn.Sequential(nn.Conv1d(d, d_ff, kernel_size=1), nn.ReLU(), nn.Conv1d(d_ff, d, kernel_size=1))
    conv = conv.to(device, F64)
    with torch.no_grad():  # Conv1d weight (out, in, 1) = Linear weight (out, in) with a kernel dim
        conv[0].weight.copy_(ffn.linear1.weight[..., None])
        conv[0].bias.copy_(ffn.linear1.bias)
        conv[2].weight.copy_(ffn.linear2.weight[..., None])
        conv[2].bias.copy_(ffn.linear2.bias)
    _compare(ffn, conv, x, to_ref=lambda t: t.transpose(1, 2), from_ref=lambda t: t.transpose(1, 2))


@pytest.mark.parametrize("seed", range(3))
def test_permuting_positions_permutes_outputs(seed: int, device: torch.device) -> None:
    ffn, x = _ffn(seed, device)
    perm = torch.randperm(x.size(1), generator=torch.Generator().manual_seed(seed)).to(device)
    assert_close(ffn(x[:, perm]), ffn(x)[:, perm])


@pytest.mark.parametrize("seed", range(3))
def test_per_position_application_equals_batched(seed: int, device: torch.device) -> None:
    ffn, x = _ffn(seed, device)
    looped = torch.stack([ffn(x[:, t]) for t in range(x.size(1))], dim=1)  # one position at a time
    assert_close(looped, ffn(x))
    assert_close(ffn(x.reshape(-1, x.size(-1))).reshape(x.shape), ffn(x))  # positions as one big batch


def test_position_mixing_of_a_linear_map_is_its_norm_on_the_diagonal() -> None:
    w = torch.randn(4, 6, dtype=F64)
    m = position_mixing(lambda t: t @ w, torch.randn(5, 4, dtype=F64))
    assert_close(m, torch.eye(5, dtype=F64) * w.norm())


def test_ffn_mixes_channels_only_attention_mixes_positions(device: torch.device) -> None:
    torch.manual_seed(0)
    ffn = PositionwiseFFN(8, 32, dtype=F64, device=device)
    x = torch.randn(6, 8, dtype=F64, device=device)
    m_ffn = position_mixing(ffn, x)
    m_att = position_mixing(lambda t: scaled_dot_product_attention(t, t, t), x)
    off = ~torch.eye(6, dtype=torch.bool, device=device)
    assert torch.all(m_ffn[off] == 0) and torch.all(m_ffn.diagonal() > 0)  # channels of one position only
    assert torch.all(m_att[off] > 0)  # every output position depends on every input position


def test_paper_sizes_and_parameter_count() -> None:
    ffn = PositionwiseFFN(512, 4 * 512)
    assert ffn.linear1.weight.shape == (2048, 512) and ffn.linear2.weight.shape == (512, 2048)
    assert sum(p.numel() for p in ffn.parameters()) == 2 * 512 * 2048 + 2048 + 512 == 2_099_712


def test_dropout_only_in_training() -> None:
    torch.manual_seed(0)
    ffn = PositionwiseFFN(4, 64, dropout=0.5, dtype=F64)
    x = torch.randn(3, 5, 4, dtype=F64)
    plain = ffn.linear2(torch.relu(ffn.linear1(x)))
    assert_close(ffn.eval()(x), plain)
    assert not torch.allclose(ffn.train()(x), plain)


def test_notes_typos_are_not_pytorch_names() -> None:
    assert not hasattr(nn, "Relu") and not hasattr(nn, "Linera")
    assert hasattr(nn, "ReLU") and hasattr(nn, "Linear")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"d_model": 0, "d_ff": 4}, "d_model and d_ff must be positive, got d_model=0"),
        ({"d_model": 4, "d_ff": -1}, "d_ff=-1"),
        ({"d_model": 4, "d_ff": 8, "activation": "tanh"}, "activation must be 'relu' or 'gelu', got 'tanh'"),
        ({"d_model": 4, "d_ff": 8, "dropout": 1.0}, r"dropout must be in \[0, 1\), got 1.0"),
    ],
)
def test_rejects_bad_arguments(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        PositionwiseFFN(**kwargs)


def test_rejects_wrong_feature_size() -> None:
    with pytest.raises(ValueError, match="x has last dim 5, expected d_model=4"):
        PositionwiseFFN(4, 8)(torch.randn(2, 3, 5))


def test_position_mixing_rejects_batches() -> None:
    with pytest.raises(ValueError, match=r"one sequence \(L, d\), got shape \(2, 3, 4\)"):
        position_mixing(PositionwiseFFN(4, 8), torch.randn(2, 3, 4))
