"""EncoderLayer / DecoderLayer vs nn.TransformerEncoderLayer / nn.TransformerDecoderLayer, weights copied."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from snippets.transformer.layers import DecoderLayer, EncoderLayer
from tests.conftest import assert_close

F64 = torch.float64


def _sizes(seed: int) -> tuple[torch.Generator, int, int, int, int, int, int]:
    """Random (generator, d_model, nhead, d_ff, B, L, S) for one seed."""
    g = torch.Generator().manual_seed(seed)
    h = int(torch.randint(1, 4, (1,), generator=g))
    d = h * int(torch.randint(2, 5, (1,), generator=g))
    f = int(torch.randint(3, 12, (1,), generator=g))
    b, n, s = (int(x) for x in torch.randint(1, 5, (3,), generator=g))
    return g, d, h, f, b, n + 1, s + 1  # at least 2 positions so masks can hide one


def _ref_param_grads(ref: nn.Module) -> dict[str, torch.Tensor]:
    """Parameter grads of a built-in layer, renamed to our layout (q/k/v/out_proj, ffn.linear1/2)."""
    grads: dict[str, torch.Tensor] = {}
    for name, p in ref.named_parameters():
        name = name.replace("multihead_attn.", "cross_attn.").replace("linear", "ffn.linear")
        prefix, _, leaf = name.rpartition(".")
        if leaf in ("in_proj_weight", "in_proj_bias"):
            kind = leaf.removeprefix("in_proj_")
            for role, chunk in zip(("q_proj", "k_proj", "v_proj"), p.grad.chunk(3)):
                grads[f"{prefix}.{role}.{kind}"] = chunk
        else:
            grads[f"{prefix}.{leaf}"] = p.grad
    return grads


def _compare(ours: nn.Module, ref: nn.Module, inputs: list[torch.Tensor], **kw) -> None:
    """Forward outputs, then gradients w.r.t. every input and every parameter."""
    ours_in = [t.detach().clone().requires_grad_() for t in inputs]
    ref_in = [t.detach().clone().requires_grad_() for t in inputs]
    out, out_ref = ours(*ours_in, **kw), ref(*ref_in, **kw)
    assert_close(out, out_ref)
    grad = torch.randn_like(out)
    (out * grad).sum().backward()
    (out_ref * grad).sum().backward()
    for a, b in zip(ours_in, ref_in):
        assert_close(a.grad, b.grad)
    theirs = _ref_param_grads(ref)
    mine = dict(ours.named_parameters())
    assert set(mine) == set(theirs)
    for name, p in mine.items():
        assert_close(p.grad, theirs[name], msg=lambda m, n=name: f"{n}: {m}")


def _encoder_pair(seed: int, device: torch.device, norm_first: bool, activation: str = "relu"):
    g, d, h, f, b, n, _ = _sizes(seed)
    torch.manual_seed(seed)
    ref = nn.TransformerEncoderLayer(
        d, h, f, dropout=0.0, activation=activation, batch_first=True, norm_first=norm_first, dtype=F64
    )
    ref = ref.to(device).train()  # train mode: the documented math path, not the fused fast path
    ours = EncoderLayer(d, h, f, dropout=0.0, activation=activation, norm_first=norm_first, dtype=F64, device=device)
    ours.load_from_torch(ref).train()
    return ref, ours, torch.randn(b, n, d, generator=g, dtype=F64).to(device), g


def _decoder_pair(seed: int, device: torch.device, norm_first: bool):
    g, d, h, f, b, n, s = _sizes(seed)
    torch.manual_seed(seed)
    ref = nn.TransformerDecoderLayer(d, h, f, dropout=0.0, batch_first=True, norm_first=norm_first, dtype=F64)
    ref = ref.to(device).train()
    ours = DecoderLayer(d, h, f, dropout=0.0, norm_first=norm_first, dtype=F64, device=device)
    ours.load_from_torch(ref).train()
    tgt = torch.randn(b, n, d, generator=g, dtype=F64).to(device)
    memory = torch.randn(b, s, d, generator=g, dtype=F64).to(device)
    return ref, ours, [tgt, memory], g


def _padding(g: torch.Generator, b: int, n: int, device: torch.device) -> torch.Tensor:
    pad = torch.rand(b, n, generator=g) > 0.5  # True = padding (ignored)
    pad[:, 0] = False  # every sequence keeps its first position
    return pad.to(device)


@pytest.mark.parametrize("norm_first", [False, True], ids=["post-LN", "pre-LN"])
@pytest.mark.parametrize("seed", range(4))
def test_matches_transformerencoderlayer(seed: int, norm_first: bool, device: torch.device) -> None:
    ref, ours, x, g = _encoder_pair(seed, device, norm_first)
    _compare(ours, ref, [x])
    ref.zero_grad()
    ours.zero_grad()
    _compare(ours, ref, [x], src_key_padding_mask=_padding(g, *x.shape[:2], device))


@pytest.mark.parametrize("norm_first", [False, True], ids=["post-LN", "pre-LN"])
@pytest.mark.parametrize("kind", ["bool", "float"])
@pytest.mark.parametrize("seed", range(3))
def test_matches_transformerencoderlayer_src_mask(seed: int, kind: str, norm_first: bool, device: torch.device) -> None:
    ref, ours, x, g = _encoder_pair(seed, device, norm_first)
    n = x.size(1)
    hide = torch.rand(n, n, generator=g) > 0.6  # True = not allowed
    hide[:, 0] = False
    mask = hide if kind == "bool" else torch.randn(n, n, generator=g, dtype=F64).masked_fill(hide, float("-inf"))
    pad = _padding(g, *x.shape[:2], device)
    if kind == "float":  # the built-in wants both masks of one type
        pad = torch.zeros(pad.shape, dtype=F64, device=device).masked_fill(pad, float("-inf"))
    _compare(ours, ref, [x], src_mask=mask.to(device), src_key_padding_mask=pad)


@pytest.mark.parametrize("norm_first", [False, True], ids=["post-LN", "pre-LN"])
@pytest.mark.parametrize("seed", range(2))
def test_matches_transformerencoderlayer_causal_and_gelu(seed: int, norm_first: bool, device: torch.device) -> None:
    """The decoder-only (GPT) use of an encoder layer: causal self-attention; GELU as in BERT/GPT."""
    ref, ours, x, _ = _encoder_pair(seed, device, norm_first, activation="gelu")
    causal = nn.Transformer.generate_square_subsequent_mask(x.size(1), device=device, dtype=F64)
    _compare(ours, ref, [x], src_mask=causal, is_causal=True)
    with torch.no_grad():  # ours builds the causal mask itself when only the flag is given
        assert_close(ours(x, is_causal=True), ref(x, src_mask=causal, is_causal=True))


@pytest.mark.parametrize("norm_first", [False, True], ids=["post-LN", "pre-LN"])
@pytest.mark.parametrize("seed", range(4))
def test_matches_transformerdecoderlayer(seed: int, norm_first: bool, device: torch.device) -> None:
    ref, ours, (tgt, memory), g = _decoder_pair(seed, device, norm_first)
    t = tgt.size(1)
    causal = nn.Transformer.generate_square_subsequent_mask(t, device=device, dtype=F64)  # -inf above diagonal
    mem_pad = _padding(g, *memory.shape[:2], device)
    tgt_pad = _padding(g, *tgt.shape[:2], device)
    _compare(ours, ref, [tgt, memory], tgt_mask=causal, memory_key_padding_mask=mem_pad)
    ref.zero_grad()
    ours.zero_grad()
    bool_causal = torch.ones(t, t, dtype=torch.bool, device=device).triu(1)  # True = future, not allowed
    _compare(
        ours,
        ref,
        [tgt, memory],
        tgt_mask=bool_causal,
        tgt_is_causal=True,
        tgt_key_padding_mask=tgt_pad,
        memory_key_padding_mask=mem_pad,
    )


@pytest.mark.parametrize("norm_first", [False, True], ids=["post-LN", "pre-LN"])
@pytest.mark.parametrize("seed", range(2))
def test_matches_transformerdecoderlayer_memory_mask(seed: int, norm_first: bool, device: torch.device) -> None:
    ref, ours, (tgt, memory), g = _decoder_pair(seed, device, norm_first)
    hide = torch.rand(tgt.size(1), memory.size(1), generator=g) > 0.5  # (T, S), True = not allowed
    hide[:, 0] = False
    _compare(ours, ref, [tgt, memory], memory_mask=hide.to(device))


def test_decoder_builds_causal_mask_from_flag(device: torch.device) -> None:
    ref, ours, (tgt, memory), _ = _decoder_pair(5, device, norm_first=False)
    causal = nn.Transformer.generate_square_subsequent_mask(tgt.size(1), device=device, dtype=F64)
    with torch.no_grad():
        assert_close(ours(tgt, memory, tgt_is_causal=True), ref(tgt, memory, tgt_mask=causal, tgt_is_causal=True))


def test_decoder_position_t_ignores_the_future(device: torch.device) -> None:
    """With the causal mask, changing target positions > t leaves output t unchanged."""
    _, ours, (tgt, memory), g = _decoder_pair(1, device, norm_first=False)
    tgt = torch.randn(2, 6, tgt.size(-1), generator=g, dtype=F64).to(device)
    memory = torch.randn(2, 4, tgt.size(-1), generator=g, dtype=F64).to(device)
    changed = tgt.clone()
    changed[:, 3:] += 1.0
    with torch.no_grad():
        a, b = ours(tgt, memory, tgt_is_causal=True), ours(changed, memory, tgt_is_causal=True)
        assert_close(a[:, :3], b[:, :3])
        assert (a[:, 3:] - b[:, 3:]).abs().max() > 1e-3
        a, b = ours(tgt, memory), ours(changed, memory)  # without the mask the past sees the future
        assert (a[:, :3] - b[:, :3]).abs().max() > 1e-3


@pytest.mark.parametrize("norm_first", [False, True], ids=["post-LN", "pre-LN"])
def test_matches_in_eval_mode(norm_first: bool, device: torch.device) -> None:
    """In eval mode under no_grad the built-in may take its fused fast path; the numbers agree."""
    ref, ours, x, g = _encoder_pair(7, device, norm_first)
    pad = _padding(g, *x.shape[:2], device)
    ref.eval()
    ours.eval()
    with torch.no_grad():
        assert_close(ours(x), ref(x))
        keep = ~pad[..., None]  # the fast path may leave padded positions as zeros: compare the rest
        assert_close(ours(x, src_key_padding_mask=pad) * keep, ref(x, src_key_padding_mask=pad) * keep)


def test_post_ln_output_is_normalised_pre_ln_is_not() -> None:
    """Post-LN ends with LayerNorm (every position has mean 0, std 1); pre-LN ends on the residual stream."""
    torch.manual_seed(0)
    x = 3.0 + 5.0 * torch.randn(2, 7, 16, dtype=F64)
    post = EncoderLayer(16, 4, 32, dropout=0.0, dtype=F64)(x)
    pre = EncoderLayer(16, 4, 32, dropout=0.0, norm_first=True, dtype=F64)(x)
    assert_close(post.mean(-1), torch.zeros(2, 7, dtype=F64), atol=1e-10, rtol=0)
    assert_close(post.var(-1, unbiased=False), torch.ones(2, 7, dtype=F64), atol=1e-4, rtol=0)  # eps = 1e-5
    assert pre.std(-1).min() > 2.0  # the input's scale (std 5) survives the identity path


def test_parameter_layout_matches_builtin() -> None:
    enc = EncoderLayer(16, 4, 48)
    dec = DecoderLayer(16, 4, 48)
    n = sum(p.numel() for p in enc.parameters())
    assert n == sum(p.numel() for p in nn.TransformerEncoderLayer(16, 4, 48).parameters())
    assert n == (4 * 16 * 16 + 4 * 16) + (2 * 16 * 48 + 48 + 16) + 2 * (2 * 16)
    m = sum(p.numel() for p in dec.parameters())
    assert m == sum(p.numel() for p in nn.TransformerDecoderLayer(16, 4, 48).parameters())
    assert m - n == (4 * 16 * 16 + 4 * 16) + 2 * 16  # + cross-attention and its LayerNorm


def test_dropout_only_in_training() -> None:
    torch.manual_seed(0)
    layer = EncoderLayer(16, 4, 32, dropout=0.3, dtype=F64)
    x = torch.randn(2, 5, 16, dtype=F64)
    layer.eval()
    assert_close(layer(x), layer(x))
    layer.train()
    assert (layer(x) - layer(x)).abs().max() > 1e-3


def test_fully_padded_sequence_raises() -> None:
    layer = EncoderLayer(8, 2, 16)
    pad = torch.zeros(2, 3, dtype=torch.bool)
    pad[1] = True  # sequence 1 has no real token: its softmax row would be 0/0
    with pytest.raises(ValueError, match="every key masked"):
        layer(torch.randn(2, 3, 8), src_key_padding_mask=pad)


@pytest.mark.parametrize("cls", [EncoderLayer, DecoderLayer])
def test_rejects_indivisible_d_model(cls) -> None:
    with pytest.raises(ValueError, match="d_model=10 is not divisible by num_heads=3"):
        cls(10, 3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"src_key_padding_mask": torch.zeros(2, 4, dtype=torch.bool)}, r"key_padding_mask must have shape \(B, n_k\)"),
        ({"src_mask": torch.zeros(4, 3, dtype=torch.bool)}, r"attn_mask must have shape \(3, 3\)"),
        ({"src_mask": torch.zeros(3, 3, dtype=torch.long)}, "attn_mask must be bool"),
    ],
)
def test_encoder_rejects_bad_masks(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        EncoderLayer(8, 2, 16)(torch.randn(2, 3, 8), **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"memory_key_padding_mask": torch.zeros(2, 3, dtype=torch.bool)}, r"\(B, n_k\) = \(2, 5\), got \(2, 3\)"),
        ({"tgt_mask": torch.zeros(3, 5, dtype=torch.bool)}, r"attn_mask must have shape \(3, 3\)"),
        ({"memory_mask": torch.zeros(3, 3, dtype=torch.bool)}, r"attn_mask must have shape \(3, 5\)"),
    ],
)
def test_decoder_rejects_bad_masks(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        DecoderLayer(8, 2, 16)(torch.randn(2, 3, 8), torch.randn(2, 5, 8), **kwargs)


def test_decoder_rejects_mismatched_memory() -> None:
    with pytest.raises(ValueError, match="batch sizes differ"):
        DecoderLayer(8, 2, 16)(torch.randn(2, 3, 8), torch.randn(3, 5, 8))
    with pytest.raises(ValueError, match=r"key/value feature dims \(6, 6\) do not match kdim=8"):
        DecoderLayer(8, 2, 16)(torch.randn(2, 3, 8), torch.randn(2, 5, 6))


def test_load_from_torch_rejects_mismatches() -> None:
    with pytest.raises(ValueError, match="norm_first differs: ours False, theirs True"):
        EncoderLayer(8, 2, 16).load_from_torch(nn.TransformerEncoderLayer(8, 2, 16, norm_first=True))
    with pytest.raises(ValueError, match="FFN size mismatch: ours d_model=8, d_ff=16; theirs d_model=8, d_ff=32"):
        DecoderLayer(8, 2, 16).load_from_torch(nn.TransformerDecoderLayer(8, 2, 32))
