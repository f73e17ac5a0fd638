"""MultiHeadAttention vs torch.nn.MultiheadAttention(batch_first=True), weights copied across."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from snippets.attention.multihead import MultiHeadAttention, merge_heads, split_heads
from tests.conftest import assert_close

F64 = torch.float64


def _pair(seed: int, device: torch.device, *, kdim=None, vdim=None, bias=True, heads=None):
    """A random nn.MultiheadAttention (train mode, dropout 0) and our copy of it, plus sizes."""
    g = torch.Generator().manual_seed(seed)
    h = heads or int(torch.randint(1, 4, (1,), generator=g))
    d = h * int(torch.randint(1, 4, (1,), generator=g))
    b, n_q, n_k = (int(x) for x in torch.randint(1, 5, (3,), generator=g))
    n_k += 1  # at least 2 keys so masks can hide one
    torch.manual_seed(seed)
    ref = nn.MultiheadAttention(d, h, bias=bias, kdim=kdim, vdim=vdim, batch_first=True, dtype=F64)
    ref = ref.to(device).train()
    ours = MultiHeadAttention(d, h, bias=bias, kdim=kdim, vdim=vdim, dtype=F64, device=device)
    ours.load_from_torch(ref).train()
    q = torch.randn(b, n_q, d, generator=g, dtype=F64)
    k = torch.randn(b, n_k, kdim or d, generator=g, dtype=F64)
    v = torch.randn(b, n_k, vdim or d, generator=g, dtype=F64)
    return ref, ours, [t.to(device) for t in (q, k, v)], g


def _ref_grads(ref: nn.MultiheadAttention) -> dict[str, torch.Tensor]:
    """nn.MultiheadAttention's parameter grads, renamed to our q_proj/k_proj/v_proj/out_proj layout."""
    if ref.in_proj_weight is not None:
        wq, wk, wv = ref.in_proj_weight.grad.chunk(3)
    else:
        wq, wk, wv = ref.q_proj_weight.grad, ref.k_proj_weight.grad, ref.v_proj_weight.grad
    grads = {"q_proj.weight": wq, "k_proj.weight": wk, "v_proj.weight": wv}
    grads["out_proj.weight"] = ref.out_proj.weight.grad
    if ref.in_proj_bias is not None:
        for name, gb in zip(("q_proj", "k_proj", "v_proj"), ref.in_proj_bias.grad.chunk(3)):
            grads[f"{name}.bias"] = gb
        grads["out_proj.bias"] = ref.out_proj.bias.grad
    return grads


def _compare(ref, ours, qkv, ref_kw=None, **kw) -> None:
    """Forward (outputs and returned weights) and backward (inputs and every parameter)."""
    ours_in = [t.detach().clone().requires_grad_() for t in qkv]
    ref_in = [t.detach().clone().requires_grad_() for t in qkv]
    out, w = ours(*ours_in, **kw)
    out_ref, w_ref = ref(*ref_in, **(kw if ref_kw is None else ref_kw))
    assert_close(out, out_ref)
    if kw.get("need_weights"):
        assert_close(w, w_ref)
    else:
        assert w is None
    grad = torch.randn_like(out)
    loss, loss_ref = (out * grad).sum(), (out_ref * grad).sum()
    if kw.get("need_weights"):  # the returned weights take part in backward too
        wgrad = torch.randn_like(w)
        loss, loss_ref = loss + (w * wgrad).sum(), loss_ref + (w_ref * wgrad).sum()
    loss.backward()
    loss_ref.backward()
    for a, b in zip(ours_in, ref_in):
        assert_close(a.grad, b.grad)
    theirs = _ref_grads(ref)
    ours_grads = dict(ours.named_parameters())
    assert set(ours_grads) == set(theirs)
    for name, p in ours_grads.items():
        assert_close(p.grad, theirs[name], msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("seed", range(4))
def test_matches_multiheadattention_unmasked(seed: int, device: torch.device) -> None:
    ref, ours, qkv, _ = _pair(seed, device)
    _compare(ref, ours, qkv)
    ref.zero_grad()
    ours.zero_grad()
    _compare(ref, ours, qkv, need_weights=True)  # average_attn_weights=True (default)


@pytest.mark.parametrize("seed", range(4))
def test_matches_multiheadattention_per_head_weights(seed: int, device: torch.device) -> None:
    ref, ours, qkv, _ = _pair(seed, device, heads=3)
    _compare(ref, ours, qkv, need_weights=True, average_attn_weights=False)
    _, w = ours(*qkv, need_weights=True, average_attn_weights=False)
    _, w_mean = ours(*qkv, need_weights=True)
    assert w.shape == (qkv[0].shape[0], 3, qkv[0].shape[1], qkv[1].shape[1])
    assert_close(w.mean(dim=1), w_mean)  # averaged weights = mean of the per-head weights


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("kind", ["bool", "float"])
def test_matches_multiheadattention_key_padding_mask(seed: int, kind: str, device: torch.device) -> None:
    ref, ours, qkv, g = _pair(seed, device)
    b, n_k = qkv[0].shape[0], qkv[1].shape[1]
    pad = torch.rand(b, n_k, generator=g) > 0.5  # True = padding (ignored)
    pad[:, 0] = False  # every row keeps key 0
    mask = pad if kind == "bool" else torch.zeros(b, n_k, dtype=F64).masked_fill(pad, float("-inf"))
    if kind == "float":
        mask[:, 0] = torch.randn(b, generator=g, dtype=F64)  # a finite additive bias as well
    _compare(ref, ours, qkv, key_padding_mask=mask.to(device), need_weights=True)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("kind", ["bool", "float"])
@pytest.mark.parametrize("three_d", [False, True])
def test_matches_multiheadattention_attn_mask(
    seed: int, kind: str, three_d: bool, device: torch.device
) -> None:
    ref, ours, qkv, g = _pair(seed, device)
    b, n_q, n_k = qkv[0].shape[0], qkv[0].shape[1], qkv[1].shape[1]
    shape = (b * ref.num_heads, n_q, n_k) if three_d else (n_q, n_k)
    hide = torch.rand(shape, generator=g) > 0.6  # True = not allowed
    hide[..., 0] = False
    if kind == "bool":
        mask = hide
    else:
        mask = torch.randn(shape, generator=g, dtype=F64).masked_fill(hide, float("-inf"))
    _compare(ref, ours, qkv, attn_mask=mask.to(device), need_weights=True, average_attn_weights=False)


@pytest.mark.parametrize("seed", range(3))
def test_matches_multiheadattention_both_masks(seed: int, device: torch.device) -> None:
    ref, ours, qkv, g = _pair(seed, device)
    b, n_q, n_k = qkv[0].shape[0], qkv[0].shape[1], qkv[1].shape[1]
    pad = torch.rand(b, n_k, generator=g) > 0.5
    hide = torch.rand(n_q, n_k, generator=g) > 0.5
    pad[:, 0] = hide[:, 0] = False
    _compare(ref, ours, qkv, key_padding_mask=pad.to(device), attn_mask=hide.to(device))


@pytest.mark.parametrize("seed", range(3))
def test_matches_multiheadattention_is_causal(seed: int, device: torch.device) -> None:
    ref, ours, qkv, _ = _pair(seed, device)
    n_q, n_k = qkv[0].shape[1], qkv[1].shape[1]
    future = torch.ones(n_q, n_k, dtype=torch.bool, device=device).triu(1)  # True = not allowed
    # nn.MultiheadAttention needs the mask with the is_causal hint; ours builds it.
    _compare(ref, ours, qkv, ref_kw={"attn_mask": future, "is_causal": True}, is_causal=True)
    ref.zero_grad()
    ours.zero_grad()
    _compare(ref, ours, qkv, attn_mask=future, is_causal=True)  # with a mask, is_causal is a hint
    _, w = ours(*qkv, is_causal=True, need_weights=True, average_attn_weights=False)
    assert torch.all(w.masked_select(future) == 0)


@pytest.mark.parametrize("seed", range(3))
def test_matches_multiheadattention_kdim_vdim(seed: int, device: torch.device) -> None:
    ref, ours, qkv, g = _pair(seed, device, kdim=5, vdim=3)
    assert ref.in_proj_weight is None  # the separate q/k/v weights path of nn.MultiheadAttention
    pad = torch.zeros(qkv[0].shape[0], qkv[1].shape[1], dtype=torch.bool)
    pad[-1, -1] = True
    _compare(ref, ours, qkv, key_padding_mask=pad.to(device), need_weights=True)


@pytest.mark.parametrize("seed", range(2))
def test_matches_multiheadattention_without_bias(seed: int, device: torch.device) -> None:
    ref, ours, qkv, _ = _pair(seed, device, bias=False)
    _compare(ref, ours, qkv, is_causal=False, need_weights=True)


def test_self_attention_matches_in_eval_mode(device: torch.device) -> None:
    """In eval mode nn.MultiheadAttention may take its fused fast path; the result is the same."""
    ref, ours, (q, _, _), _ = _pair(7, device)
    ref.eval()
    ours.eval()
    with torch.no_grad():
        assert_close(ours(q, q, q)[0], ref(q, q, q, need_weights=False)[0])


@pytest.mark.parametrize(("d_model", "heads"), [(8, 1), (8, 2), (8, 4), (8, 8), (12, 3), (12, 6)])
def test_parameter_count_is_4d2_plus_4d_independent_of_heads(d_model: int, heads: int) -> None:
    ours = MultiHeadAttention(d_model, heads)
    ref = nn.MultiheadAttention(d_model, heads)
    n = sum(p.numel() for p in ours.parameters())
    assert n == 4 * d_model**2 + 4 * d_model == sum(p.numel() for p in ref.parameters())
    n_kv = sum(p.numel() for p in MultiHeadAttention(d_model, heads, kdim=5, vdim=3).parameters())
    assert n_kv == 2 * d_model**2 + d_model * (5 + 3) + 4 * d_model  # kdim/vdim change W^K, W^V only


def test_split_merge_roundtrip_and_layout(device: torch.device) -> None:
    x = torch.randn(2, 5, 12, dtype=F64, device=device)
    s = split_heads(x, 3)
    assert s.shape == (2, 3, 5, 4)
    assert torch.equal(s[:, 1], x[..., 4:8])  # head i = feature columns i*d .. (i+1)*d - 1
    assert torch.equal(merge_heads(s), x)


def test_dropout_acts_only_in_training() -> None:
    torch.manual_seed(0)
    mha = MultiHeadAttention(8, 2, dropout=0.5, dtype=F64)
    x = torch.randn(2, 6, 8, dtype=F64)
    mha.eval()
    _, clean = mha(x, x, x, need_weights=True, average_attn_weights=False)
    assert_close(clean.sum(-1), torch.ones_like(clean.sum(-1)))  # eval: no dropout
    mha.train()
    _, w = mha(x, x, x, need_weights=True, average_attn_weights=False)
    kept = w != 0
    assert 0 < kept.double().mean().item() < 1  # some weights dropped, some kept
    assert_close(w[kept], clean[kept] / 0.5)  # survivors rescaled by 1 / (1 - p)


def _x(*shape):
    return torch.randn(*shape)


@pytest.mark.parametrize(
    ("ctor", "match"),
    [
        ({"d_model": 0, "num_heads": 2}, "d_model and num_heads must be positive"),
        ({"d_model": 8, "num_heads": -1}, "d_model and num_heads must be positive"),
        ({"d_model": 10, "num_heads": 3}, "d_model=10 is not divisible by num_heads=3"),
        ({"d_model": 8, "num_heads": 2, "dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"d_model": 8, "num_heads": 2, "dropout": -0.1}, r"dropout must be in \[0, 1\)"),
        ({"d_model": 8, "num_heads": 2, "kdim": 0}, "kdim and vdim must be positive, got kdim=0"),
        ({"d_model": 8, "num_heads": 2, "vdim": -3}, "kdim and vdim must be positive"),
    ],
)
def test_rejects_bad_constructor_arguments(ctor, match) -> None:
    with pytest.raises(ValueError, match=match):
        MultiHeadAttention(**ctor)


@pytest.mark.parametrize(
    ("shapes", "kwargs", "match"),
    [
        (((2, 3, 8), (2, 4, 8), (4, 8)), {}, r"value must be \(B, L, E\)"),
        (((3, 8), (2, 4, 8), (2, 4, 8)), {}, r"query must be \(B, L, E\)"),
        (((2, 3, 6), (2, 4, 8), (2, 4, 8)), {}, "query has E=6 but d_model=8"),
        (((2, 3, 8), (2, 4, 5), (2, 4, 8)), {}, r"key/value feature dims \(5, 8\) do not match kdim=8"),
        (((2, 3, 8), (2, 4, 8), (2, 4, 7)), {}, "do not match"),
        (((2, 3, 8), (3, 4, 8), (3, 4, 8)), {}, "batch sizes differ: query 2, key 3, value 3"),
        (((2, 3, 8), (2, 4, 8), (2, 5, 8)), {}, "key and value lengths differ: 4 vs 5"),
        (
            ((2, 3, 8), (2, 4, 8), (2, 4, 8)),
            {"attn_mask": torch.zeros(4, 3, dtype=torch.bool)},
            r"attn_mask must have shape \(3, 4\) or \(4, 3, 4\), got \(4, 3\)",
        ),
        (
            ((2, 3, 8), (2, 4, 8), (2, 4, 8)),
            {"attn_mask": torch.zeros(2, 3, 4, dtype=torch.bool)},  # (B, ...) instead of (B*h, ...)
            r"attn_mask must have shape",
        ),
        (
            ((2, 3, 8), (2, 4, 8), (2, 4, 8)),
            {"key_padding_mask": torch.zeros(2, 3, dtype=torch.bool)},
            r"key_padding_mask must have shape \(B, n_k\) = \(2, 4\), got \(2, 3\)",
        ),
        (
            ((2, 3, 8), (2, 4, 8), (2, 4, 8)),
            {"attn_mask": torch.zeros(3, 4, dtype=torch.long)},
            "attn_mask must be bool .* or floating, got torch.int64",
        ),
        (
            ((2, 3, 8), (2, 4, 8), (2, 4, 8)),
            {"key_padding_mask": torch.zeros(2, 4, dtype=torch.int32)},
            "key_padding_mask must be bool .* or floating, got torch.int32",
        ),
        (
            ((2, 3, 8), (2, 4, 8), (2, 4, 8)),
            {"key_padding_mask": torch.ones(2, 4, dtype=torch.bool)},  # every key is padding
            "every key masked",
        ),
    ],
)
def test_rejects_bad_forward_input(shapes, kwargs, match) -> None:
    mha = MultiHeadAttention(8, 2)
    with pytest.raises(ValueError, match=match):
        mha(*(_x(*s) for s in shapes), **kwargs)


def test_fully_masked_rows_zero_option() -> None:
    torch.manual_seed(0)
    mha = MultiHeadAttention(8, 2)
    x = torch.randn(2, 3, 8)
    pad = torch.zeros(2, 3, dtype=torch.bool)
    pad[1] = True  # sequence 1 is all padding
    out, w = mha(x, x, x, key_padding_mask=pad, need_weights=True, fully_masked="zero")
    assert torch.all(w[1] == 0)
    assert torch.isfinite(out).all()


def test_rejects_mismatched_reference() -> None:
    msg = r"size mismatch: ours \(d_model=8, h=2\), theirs \(embed_dim=8, num_heads=4\)"
    with pytest.raises(ValueError, match=msg):
        MultiHeadAttention(8, 2).load_from_torch(nn.MultiheadAttention(8, 4))
    with pytest.raises(ValueError, match="size mismatch"):
        MultiHeadAttention(8, 2).load_from_torch(nn.MultiheadAttention(6, 2))


def test_split_heads_rejects_indivisible_width() -> None:
    with pytest.raises(ValueError, match="feature dim 10 is not divisible by num_heads=4"):
        split_heads(torch.randn(1, 2, 10), 4)
