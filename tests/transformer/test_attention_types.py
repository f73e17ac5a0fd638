"""The three attentions (global, causal, cross) vs nn.MultiheadAttention, and the pages' claims about them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from snippets.attention.multihead import MultiHeadAttention
from snippets.transformer.attention_types import (
    causal_self_attention,
    cross_attention,
    cross_attention_weights,
    global_self_attention,
)
from snippets.transformer.model import Transformer
from tests.conftest import assert_close

F64 = torch.float64


def _pair(seed: int, device: torch.device):
    """A random nn.MultiheadAttention (train mode, dropout 0), our copy of it, and sizes B, T, S, d."""
    g = torch.Generator().manual_seed(seed)
    h = int(torch.randint(1, 4, (1,), generator=g))
    d = h * int(torch.randint(1, 4, (1,), generator=g))
    b, t, s = (int(x) for x in torch.randint(1, 6, (3,), generator=g))
    s += 1  # at least 2 source positions, so one can be padding
    torch.manual_seed(seed)
    ref = nn.MultiheadAttention(d, h, batch_first=True, dtype=F64).to(device).train()
    ours = MultiHeadAttention(d, h, dtype=F64, device=device).load_from_torch(ref).train()
    return ref, ours, (b, t, s, d), g


def _pad(b: int, n: int, g: torch.Generator, device: torch.device) -> torch.Tensor:
    pad = torch.rand(b, n, generator=g) > 0.5  # True = padding
    pad[:, 0] = False  # every sequence has at least one real token
    return pad.to(device)


def _ref_param_grads(ref: nn.MultiheadAttention) -> list[torch.Tensor]:
    wq, wk, wv = ref.in_proj_weight.grad.chunk(3)
    bq, bk, bv = ref.in_proj_bias.grad.chunk(3)
    return [wq, bq, wk, bk, wv, bv, ref.out_proj.weight.grad, ref.out_proj.bias.grad]


def _our_param_grads(ours: MultiHeadAttention) -> list[torch.Tensor]:
    lins = (ours.q_proj, ours.k_proj, ours.v_proj, ours.out_proj)
    return [p.grad for lin in lins for p in (lin.weight, lin.bias)]


def _check_fwd_bwd(out, w, out_ref, w_ref, inputs, ref_inputs, ours, ref) -> None:
    assert_close(out, out_ref)
    assert_close(w, w_ref)
    g_out, g_w = torch.randn_like(out), torch.randn_like(w)
    ((out * g_out).sum() + (w * g_w).sum()).backward()
    ((out_ref * g_out).sum() + (w_ref * g_w).sum()).backward()
    for a, b in zip(inputs, ref_inputs):
        assert_close(a.grad, b.grad)
    for a, b in zip(_our_param_grads(ours), _ref_param_grads(ref)):
        assert_close(a, b)


@pytest.mark.parametrize("seed", range(4))
def test_global_self_attention_matches_multiheadattention(seed: int, device: torch.device) -> None:
    ref, ours, (b, _, s, d), g = _pair(seed, device)
    x = torch.randn(b, s, d, generator=g, dtype=F64).to(device)
    pad = _pad(b, s, g, device)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    out, w = global_self_attention(ours, x1, pad, need_weights=True)
    out_ref, w_ref = ref(x2, x2, x2, key_padding_mask=pad, average_attn_weights=False)
    _check_fwd_bwd(out, w, out_ref, w_ref, [x1], [x2], ours, ref)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("padded", [False, True])
def test_causal_self_attention_matches_multiheadattention(seed: int, padded: bool, device: torch.device) -> None:
    ref, ours, (b, t, _, d), g = _pair(seed, device)
    y = torch.randn(b, t, d, generator=g, dtype=F64).to(device)
    pad = _pad(b, t, g, device) if padded else None
    future = torch.ones(t, t, dtype=torch.bool, device=device).triu(1)  # True = not allowed
    y1, y2 = y.clone().requires_grad_(), y.clone().requires_grad_()
    out, w = causal_self_attention(ours, y1, pad, need_weights=True)
    out_ref, w_ref = ref(y2, y2, y2, key_padding_mask=pad, attn_mask=future, is_causal=True, average_attn_weights=False)
    _check_fwd_bwd(out, w, out_ref, w_ref, [y1], [y2], ours, ref)
    assert torch.all(w.detach().triu(1) == 0)  # nothing above the diagonal


@pytest.mark.parametrize("seed", range(4))
def test_cross_attention_matches_multiheadattention(seed: int, device: torch.device) -> None:
    ref, ours, (b, t, s, d), g = _pair(seed, device)
    y = torch.randn(b, t, d, generator=g, dtype=F64).to(device)
    memory = torch.randn(b, s, d, generator=g, dtype=F64).to(device)
    pad = _pad(b, s, g, device)
    ins = [y.clone().requires_grad_(), memory.clone().requires_grad_()]
    ref_ins = [y.clone().requires_grad_(), memory.clone().requires_grad_()]
    out, w = cross_attention(ours, ins[0], ins[1], pad, need_weights=True)
    out_ref, w_ref = ref(ref_ins[0], ref_ins[1], ref_ins[1], key_padding_mask=pad, average_attn_weights=False)
    assert out.shape == (b, t, d)  # output length = target length T, whatever S is
    assert w.shape == (b, ours.num_heads, t, s)
    _check_fwd_bwd(out, w, out_ref, w_ref, ins, ref_ins, ours, ref)


@pytest.mark.parametrize("seed", range(4))
def test_causal_perturbing_future_leaves_earlier_outputs_bit_identical(seed: int, device: torch.device) -> None:
    _, ours, (b, t, _, d), g = _pair(seed, device)
    t = max(t, 2)
    y = torch.randn(b, t, d, generator=g, dtype=F64).to(device)
    with torch.no_grad():
        out, _ = causal_self_attention(ours, y)
        for cut in range(1, t):  # change every position >= cut
            y2 = y.clone()
            y2[:, cut:] += 10 * torch.randn(b, t - cut, d, generator=g, dtype=F64).to(device)
            out2, _ = causal_self_attention(ours, y2)
            assert torch.equal(out2[:, :cut], out[:, :cut])  # bit-identical, not just close
            assert not torch.allclose(out2[:, cut:], out[:, cut:])
            glob, _ = global_self_attention(ours, y)
            glob2, _ = global_self_attention(ours, y2)
            assert not torch.allclose(glob2[:, :cut], glob[:, :cut])  # without the mask the past changes


@pytest.mark.parametrize("seed", range(3))
def test_causal_equals_attention_over_the_prefix_only(seed: int, device: torch.device) -> None:
    """K and V of causal attention at position i are the prefix y[:, :i+1] (one parallel pass = T passes)."""
    _, ours, (b, t, _, d), g = _pair(seed, device)
    y = torch.randn(b, t, d, generator=g, dtype=F64).to(device)
    with torch.no_grad():
        out, _ = causal_self_attention(ours, y)
        for i in range(t):
            prefix = y[:, : i + 1]
            last, _ = ours(y[:, i : i + 1], prefix, prefix)  # one query, the prefix as keys and values
            assert_close(out[:, i : i + 1], last)


@pytest.mark.parametrize("seed", range(3))
def test_cross_attention_padded_sources_get_zero_weight_and_gradient(seed: int, device: torch.device) -> None:
    _, ours, (b, t, s, d), g = _pair(seed, device)
    y = torch.randn(b, t, d, generator=g, dtype=F64).to(device)
    memory = torch.randn(b, s, d, generator=g, dtype=F64, device=device).requires_grad_()
    pad = _pad(b, s, g, device)
    pad[0, -1] = True  # at least one padded source position
    out, w = cross_attention(ours, y, memory, pad, need_weights=True)
    assert torch.all(w.detach().permute(0, 3, 1, 2)[pad] == 0)  # (B, S, h, T) indexed by the (B, S) mask
    assert_close(w.detach().sum(-1), torch.ones(b, ours.num_heads, t, dtype=F64, device=device))
    out.sum().backward()
    assert torch.all(memory.grad[pad] == 0)  # padded source states do not influence the output
    assert torch.all(memory.grad[~pad].abs().sum(-1) > 0)  # every real source state does


@pytest.mark.parametrize("seed", range(3))
def test_cross_attention_queries_are_independent(seed: int, device: torch.device) -> None:
    """No causal mask is needed in cross-attention: target row t depends on y[:, t] and the memory only."""
    _, ours, (b, t, s, d), g = _pair(seed, device)
    y = torch.randn(b, t, d, generator=g, dtype=F64).to(device)
    memory = torch.randn(b, s, d, generator=g, dtype=F64).to(device)
    with torch.no_grad():
        full, _ = cross_attention(ours, y, memory)
        for i in range(t):
            assert_close(cross_attention(ours, y[:, i : i + 1], memory)[0], full[:, i : i + 1])


@pytest.mark.parametrize("norm_first", [False, True])
def test_cross_attention_weights_match_a_spelled_out_pass(norm_first: bool, device: torch.device) -> None:
    torch.manual_seed(0)
    model = Transformer(
        11,
        13,
        d_model=8,
        nhead=2,
        num_encoder_layers=1,
        num_decoder_layers=1,
        dim_feedforward=16,
        norm_first=norm_first,
        dtype=F64,
        device=device,
    ).eval()
    src, tgt_in = torch.randint(0, 11, (2, 6), device=device), torch.randint(0, 13, (2, 4), device=device)
    pad = torch.tensor([[False] * 6, [False] * 4 + [True] * 2], device=device)
    w = cross_attention_weights(model, src, tgt_in, pad)
    layer = model.decoder.layers[0]
    with torch.no_grad():
        memory = model.encode(src, pad)
        x = model.pos(model.tgt_embed(tgt_in))
        if norm_first:
            x = x + layer.self_attn(*(layer.norm1(x),) * 3, is_causal=True)[0]
            q = layer.norm2(x)
        else:
            q = layer.norm1(x + layer.self_attn(x, x, x, is_causal=True)[0])
        _, expected = layer.cross_attn(
            q, memory, memory, key_padding_mask=pad, need_weights=True, average_attn_weights=False
        )
    assert w.shape == (2, 2, 4, 6)
    assert_close(w, expected)
    assert torch.all(w[1, :, :, 4:] == 0)


def test_cross_attention_weights_rejects_a_missing_layer() -> None:
    model = Transformer(5, 5, d_model=8, nhead=2, num_encoder_layers=1, num_decoder_layers=2, dim_feedforward=8)
    src = torch.randint(0, 5, (1, 3))
    with pytest.raises(ValueError, match="layer=2 is out of range for a decoder with 2 layers"):
        cross_attention_weights(model, src, src, layer=2)
    assert cross_attention_weights(model, src, src, layer=-2).shape == (1, 2, 3, 3)


def test_cross_attention_rejects_batch_mismatch() -> None:
    mha = MultiHeadAttention(8, 2)
    with pytest.raises(ValueError, match="y has batch 2 but memory has batch 3"):
        cross_attention(mha, torch.randn(2, 4, 8), torch.randn(3, 5, 8))


def test_decoder_layer_has_one_self_and_one_cross_attention() -> None:
    """Erratum 'everything is self-attention': the decoder's second attention reads the encoder output."""
    torch.manual_seed(0)
    model = Transformer(
        7, 7, d_model=8, nhead=2, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=8, dropout=0.0, dtype=F64
    ).eval()
    layer = model.decoder.layers[0]
    kinds = [name for name, m in layer.named_children() if isinstance(m, MultiHeadAttention)]
    assert kinds == ["self_attn", "cross_attn"]
    y = torch.randn(1, 3, 8, dtype=F64)
    m1, m2 = torch.randn(1, 5, 8, dtype=F64), torch.randn(1, 5, 8, dtype=F64)
    with torch.no_grad():
        assert not torch.allclose(layer(y, m1, tgt_is_causal=True), layer(y, m2, tgt_is_causal=True))
