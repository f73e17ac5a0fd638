"""Encoder / Decoder / Transformer vs nn.Transformer (and its stacks), weights copied; the parameter count."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from snippets.transformer.model import Decoder, Encoder, Transformer, count_transformer_params, ffn_grad_norms
from tests.conftest import assert_close

F64 = torch.float64
pytestmark = pytest.mark.filterwarnings("ignore:enable_nested_tensor is True:UserWarning")


def _sizes(seed: int):
    g = torch.Generator().manual_seed(seed)
    h = int(torch.randint(1, 4, (1,), generator=g))
    d = h * int(torch.randint(2, 4, (1,), generator=g))
    f = int(torch.randint(3, 10, (1,), generator=g))
    n_enc, n_dec = (int(x) for x in torch.randint(1, 4, (2,), generator=g))
    b, s, t = (int(x) for x in torch.randint(1, 4, (3,), generator=g))
    return g, d, h, f, n_enc, n_dec, b, s + 1, t + 1


def _padding(g: torch.Generator, b: int, n: int, device: torch.device) -> torch.Tensor:
    pad = torch.rand(b, n, generator=g) > 0.5
    pad[:, 0] = False
    return pad.to(device)


def _check_grads(ours: nn.Module, ref: nn.Module) -> None:
    """Every parameter grad of ours equals the built-in's, names mapped to our layout."""
    theirs: dict[str, torch.Tensor] = {}
    for name, p in ref.named_parameters():
        name = name.replace("multihead_attn.", "cross_attn.").replace("linear", "ffn.linear")
        prefix, _, leaf = name.rpartition(".")
        if leaf.startswith("in_proj_"):
            for role, chunk in zip(("q_proj", "k_proj", "v_proj"), p.grad.chunk(3)):
                theirs[f"{prefix}.{role}.{leaf.removeprefix('in_proj_')}"] = chunk
        else:
            theirs[name] = p.grad
    mine = dict(ours.named_parameters())
    assert set(mine) == set(theirs)
    for name, p in mine.items():
        assert_close(p.grad, theirs[name], msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("norm_first", [False, True], ids=["post-LN", "pre-LN"])
@pytest.mark.parametrize("seed", range(4))
def test_matches_nn_transformer(seed: int, norm_first: bool, device: torch.device) -> None:
    """Encoder + Decoder = nn.Transformer (final LayerNorms included), forward and backward, with all masks."""
    g, d, h, f, n_enc, n_dec, b, s, t = _sizes(seed)
    torch.manual_seed(seed)
    ref = nn.Transformer(d, h, n_enc, n_dec, f, dropout=0.0, batch_first=True, norm_first=norm_first, dtype=F64)
    ref = ref.to(device).train()
    kw = {"dim_feedforward": f, "dropout": 0.0, "norm_first": norm_first, "dtype": F64, "device": device}
    enc = Encoder(n_enc, d, h, **kw).load_from_torch(ref.encoder)
    dec = Decoder(n_dec, d, h, **kw).load_from_torch(ref.decoder)
    src = torch.randn(b, s, d, generator=g, dtype=F64).to(device)
    tgt = torch.randn(b, t, d, generator=g, dtype=F64).to(device)
    src_pad, tgt_pad = _padding(g, b, s, device), _padding(g, b, t, device)
    causal = nn.Transformer.generate_square_subsequent_mask(t, device=device, dtype=F64)
    a = [x.clone().requires_grad_() for x in (src, tgt)]
    r = [x.clone().requires_grad_() for x in (src, tgt)]
    masks = {"src_key_padding_mask": src_pad, "memory_key_padding_mask": src_pad}
    fpad = {k: torch.zeros(v.shape, dtype=F64, device=device).masked_fill(v, float("-inf")) for k, v in masks.items()}
    tpad = torch.zeros(b, t, dtype=F64, device=device).masked_fill(tgt_pad, float("-inf"))
    out_ref = ref(*r, tgt_mask=causal, tgt_key_padding_mask=tpad, tgt_is_causal=True, **fpad)
    memory = enc(a[0], src_key_padding_mask=src_pad)
    out = dec(a[1], memory, tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=src_pad, tgt_is_causal=True)
    assert_close(out, out_ref)
    grad = torch.randn_like(out)
    (out * grad).sum().backward()
    (out_ref * grad).sum().backward()
    for x, y in zip(a, r):
        assert_close(x.grad, y.grad)
    _check_grads(nn.ModuleList([enc, dec]), nn.ModuleList([ref.encoder, ref.decoder]))


@pytest.mark.parametrize("final_norm", [True, False])
@pytest.mark.parametrize("seed", range(3))
def test_encoder_only_matches_transformerencoder(seed: int, final_norm: bool, device: torch.device) -> None:
    """BERT-style body: an encoder stack alone (with and without the final LayerNorm)."""
    g, d, h, f, n, _, b, s, _ = _sizes(seed)
    torch.manual_seed(seed)
    layer = nn.TransformerEncoderLayer(d, h, f, dropout=0.0, batch_first=True, norm_first=True, dtype=F64)
    norm = nn.LayerNorm(d, dtype=F64) if final_norm else None
    ref = nn.TransformerEncoder(layer, n, norm=norm, enable_nested_tensor=False).to(device).train()
    ours = Encoder(n, d, h, final_norm=final_norm, dim_feedforward=f, dropout=0.0, norm_first=True, dtype=F64)
    ours = ours.to(device).load_from_torch(ref)
    x = torch.randn(b, s, d, generator=g, dtype=F64).to(device)
    pad = _padding(g, b, s, device)
    xa, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    out, out_ref = ours(xa, src_key_padding_mask=pad), ref(xr, src_key_padding_mask=pad)
    assert_close(out, out_ref)
    out.sum().backward()
    out_ref.sum().backward()
    assert_close(xa.grad, xr.grad)
    _check_grads(ours, ref)


@pytest.mark.parametrize("seed", range(3))
def test_decoder_only_matches_causal_transformerencoder(seed: int, device: torch.device) -> None:
    """GPT-style "decoder-only": self-attention layers with a causal mask and no cross-attention."""
    g, d, h, f, n, _, b, s, _ = _sizes(seed)
    torch.manual_seed(seed)
    layer = nn.TransformerEncoderLayer(d, h, f, dropout=0.0, batch_first=True, norm_first=True, dtype=F64)
    ref = nn.TransformerEncoder(layer, n, norm=nn.LayerNorm(d, dtype=F64), enable_nested_tensor=False)
    ref = ref.to(device).train()
    ours = Encoder(n, d, h, dim_feedforward=f, dropout=0.0, norm_first=True, dtype=F64, device=device)
    ours.load_from_torch(ref)
    causal = nn.Transformer.generate_square_subsequent_mask(s, device=device, dtype=F64)
    x = torch.randn(b, s, d, generator=g, dtype=F64).to(device)
    xa, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    out, out_ref = ours(xa, is_causal=True), ref(xr, mask=causal, is_causal=True)
    assert_close(out, out_ref)
    out.sum().backward()
    out_ref.sum().backward()
    assert_close(xa.grad, xr.grad)
    _check_grads(ours, ref)
    with torch.no_grad():  # position i never sees i + 1, ...
        changed = x.clone()
        changed[:, -1] += 1.0
        assert_close(ours(changed, is_causal=True)[:, :-1], ours(x, is_causal=True)[:, :-1])


@pytest.mark.parametrize("norm_first", [False, True], ids=["post-LN", "pre-LN"])
def test_transformer_is_embeddings_plus_nn_transformer_plus_linear(norm_first: bool, device: torch.device) -> None:
    """Our full model = sqrt(d)·Emb + PE → nn.Transformer (causal tgt mask, padding masks) → Linear."""
    torch.manual_seed(0)
    d, h, v_src, v_tgt = 12, 3, 11, 13
    ours = Transformer(v_src, v_tgt, d, h, 2, 2, 20, 0.0, norm_first=norm_first, max_len=16, dtype=F64, device=device)
    ref = nn.Transformer(d, h, 2, 2, 20, 0.0, batch_first=True, norm_first=norm_first, dtype=F64).to(device).train()
    ours.encoder.load_from_torch(ref.encoder)
    ours.decoder.load_from_torch(ref.decoder)
    ours.train()
    src, tgt = torch.randint(0, v_src, (3, 7), device=device), torch.randint(0, v_tgt, (3, 5), device=device)
    src_pad = torch.tensor([[False] * 7, [False] * 4 + [True] * 3, [False] * 6 + [True]], device=device)
    tgt_pad = torch.tensor([[False] * 5, [False] * 3 + [True] * 2, [False] * 5], device=device)
    logits = ours(src, tgt, src_key_padding_mask=src_pad, tgt_key_padding_mask=tgt_pad)
    emb_s = ours.pos(ours.src_embed(src))
    emb_t = ours.pos(ours.tgt_embed(tgt))
    assert_close(ours.src_embed(src), ours.src_embed.weight[src] * math.sqrt(d))
    causal = nn.Transformer.generate_square_subsequent_mask(5, device=device, dtype=F64)

    def fl(m):
        return torch.zeros(m.shape, dtype=F64, device=device).masked_fill(m, float("-inf"))

    hidden = ref(
        emb_s,
        emb_t,
        tgt_mask=causal,
        src_key_padding_mask=fl(src_pad),
        tgt_key_padding_mask=fl(tgt_pad),
        memory_key_padding_mask=fl(src_pad),
    )
    assert_close(logits, ours.output(hidden))
    assert logits.shape == (3, 5, v_tgt)


def test_causal_mask_is_built_inside_the_model() -> None:
    """Callers pass only padding masks; logits for position t do not depend on target tokens after t."""
    torch.manual_seed(0)
    model = Transformer(10, 10, 16, 2, 1, 2, 32, 0.0, dtype=F64).eval()
    src, tgt = torch.randint(0, 10, (2, 6)), torch.randint(0, 10, (2, 5))
    changed = tgt.clone()
    changed[:, 3:] = (changed[:, 3:] + 1) % 10
    with torch.no_grad():
        a, b = model(src, tgt), model(src, changed)
        assert_close(a[:, :3], b[:, :3])
        assert (a[:, 3:] - b[:, 3:]).abs().max() > 1e-6
        memory = model.encode(src)
        leaky = model.decode(tgt, memory, causal=False), model.decode(changed, memory, causal=False)
        assert (leaky[0][:, :3] - leaky[1][:, :3]).abs().max() > 1e-6  # no mask: the past sees the future


def test_padded_source_tokens_do_not_matter() -> None:
    torch.manual_seed(0)
    model = Transformer(10, 10, 16, 2, 2, 1, 32, 0.0, dtype=F64).eval()
    src, tgt = torch.randint(0, 10, (2, 6)), torch.randint(0, 10, (2, 4))
    pad = torch.zeros(2, 6, dtype=torch.bool)
    pad[1, 4:] = True
    other = src.clone()
    other[1, 4:] = (other[1, 4:] + 3) % 10
    with torch.no_grad():
        assert_close(model(src, tgt, src_key_padding_mask=pad), model(other, tgt, src_key_padding_mask=pad))


def test_count_base_model_equals_nn_transformer() -> None:
    base = sum(p.numel() for p in nn.Transformer(device="meta").parameters())
    assert base == 44_140_544 == count_transformer_params(6, 6, 512, 2048)
    per_enc = 4 * 512**2 + 4 * 512 + 2 * 512 * 2048 + 2048 + 512 + 4 * 512
    assert per_enc == 3_152_384
    assert count_transformer_params(1, 0, 512, 2048, final_norm=False) == per_enc
    per_dec = count_transformer_params(0, 1, 512, 2048, final_norm=False)
    assert per_dec - per_enc == 4 * 512**2 + 4 * 512 + 2 * 512  # + cross-attention + one LayerNorm


@pytest.mark.parametrize(
    "cfg",
    [
        {"num_encoder_layers": 6, "num_decoder_layers": 6, "d_model": 512, "dim_feedforward": 2048},
        {"num_encoder_layers": 2, "num_decoder_layers": 3, "d_model": 16, "dim_feedforward": 40, "final_norm": False},
        {"num_encoder_layers": 1, "num_decoder_layers": 1, "d_model": 8, "dim_feedforward": 8, "tie_output": True},
        {
            "num_encoder_layers": 6,
            "num_decoder_layers": 6,
            "d_model": 512,
            "dim_feedforward": 2048,
            "share_embeddings": True,
            "tie_output": True,
        },
    ],
)
def test_count_equals_our_transformer(cfg: dict) -> None:
    share = cfg.get("share_embeddings", False)
    v_src, v_tgt = (37_000, 37_000) if share else (101, 53)
    ctor = dict(cfg)
    model = Transformer(
        v_src,
        v_tgt,
        ctor.pop("d_model"),
        8 if cfg["d_model"] == 512 else 2,
        ctor.pop("num_encoder_layers"),
        ctor.pop("num_decoder_layers"),
        ctor.pop("dim_feedforward"),
        device="meta",
        **ctor,
    )
    counted = sum(p.numel() for p in model.parameters())  # shared tensors are counted once
    assert counted == count_transformer_params(src_vocab=v_src, tgt_vocab=v_tgt, **cfg)
    assert count_transformer_params(**cfg) == sum(
        p.numel() for n, p in model.named_parameters() if n.startswith(("encoder.", "decoder."))
    )


def test_base_model_with_shared_37k_vocabulary_is_about_63_million() -> None:
    """The paper's "65 M" base model: one 37k BPE matrix for both embeddings and the output layer."""
    n = count_transformer_params(6, 6, 512, 2048, 37_000, 37_000, share_embeddings=True, tie_output=True)
    assert n == 44_140_544 + 37_000 * 512 + 37_000
    assert 62e6 < n < 66e6


def test_d_ff_dominates_each_layer() -> None:
    """With d_ff = 4d the FFN holds 2/3 of an encoder layer's weights."""
    d = 512
    layer = count_transformer_params(1, 0, d, 4 * d, final_norm=False)
    assert abs(2 * d * 4 * d / layer - 2 / 3) < 0.01


def test_rejects_indivisible_d_model() -> None:
    with pytest.raises(ValueError, match="d_model=10 is not divisible by num_heads=3"):
        Transformer(5, 5, d_model=10, nhead=3, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=8)


def _tiny() -> Transformer:
    return Transformer(10, 12, 8, 2, 1, 1, 16, 0.0, max_len=6)


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (
            (torch.zeros(2, 4, dtype=torch.long), torch.zeros(3, 4, dtype=torch.long)),
            {},
            "src batch 2 != tgt_in batch 3",
        ),
        (
            (torch.zeros(2, 7, dtype=torch.long), torch.zeros(2, 4, dtype=torch.long)),
            {},
            r"src length 7 must be in \[1, max_len=6\]",
        ),
        (
            (torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 9, dtype=torch.long)),
            {},
            r"tgt_in length 9 must be in \[1, max_len=6\]",
        ),
        (
            (torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long)),
            {"src_key_padding_mask": torch.zeros(2, 3, dtype=torch.bool)},
            r"src key padding mask must be bool \(B, L\) = \(2, 4\)",
        ),
        (
            (torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long)),
            {"tgt_key_padding_mask": torch.zeros(2, 3)},
            "tgt_in key padding mask must be bool",
        ),
        ((torch.full((2, 4), 10), torch.zeros(2, 3, dtype=torch.long)), {}, r"src ids must lie in \[0, 10\)"),
        ((torch.zeros(2, 4), torch.zeros(2, 3, dtype=torch.long)), {}, "src must be integer token ids"),
        ((torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 0, dtype=torch.long)), {}, "tgt_in length 0"),
    ],
)
def test_rejects_bad_forward_input(args, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        _tiny()(*args, **kwargs)


def test_decode_rejects_bad_memory() -> None:
    model = _tiny()
    tgt = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match=r"memory \(3, 4, 8\) must be \(B, S, d_model\) with B = tgt_in batch 2"):
        model.decode(tgt, torch.zeros(3, 4, 8))
    with pytest.raises(ValueError, match=r"memory_key_padding_mask must be \(B, S\) = \(2, 4\), got \(2, 5\)"):
        model.decode(tgt, torch.zeros(2, 4, 8), torch.zeros(2, 5, dtype=torch.bool))


def test_rejects_bad_constructor_and_stack_mismatch() -> None:
    with pytest.raises(ValueError, match="num_layers must be >= 1, got num_layers=0"):
        Encoder(0, 8, 2)
    with pytest.raises(ValueError, match="num_layers must be >= 1"):
        Decoder(0, 8, 2)
    with pytest.raises(ValueError, match="share_embeddings needs src_vocab == tgt_vocab, got 5 != 6"):
        Transformer(5, 6, 8, 2, 1, 1, 16, share_embeddings=True)
    ref = nn.Transformer(8, 2, 2, 1, 16, batch_first=True)
    with pytest.raises(ValueError, match="layer count differs: ours 1, theirs 2"):
        Encoder(1, 8, 2, dim_feedforward=16).load_from_torch(ref.encoder)
    with pytest.raises(ValueError, match="final norm differs: ours False, theirs True"):
        Decoder(1, 8, 2, dim_feedforward=16, final_norm=False).load_from_torch(ref.decoder)


def test_pre_ln_last_layer_gradient_shrinks_with_depth_post_ln_does_not() -> None:
    """Xiong et al. 2020, Theorem 1, on our stacks at initialisation (the page's figure)."""
    for seed in (0, 1):
        post = [ffn_grad_norms(False, n, batch=4, length=8, seed=seed)[-1] for n in (1, 32)]
        pre = [ffn_grad_norms(True, n, batch=4, length=8, seed=seed)[-1] for n in (1, 32)]
        assert post[1] > 0.8 * post[0], post
        assert pre[1] < 0.6 * pre[0], pre


def test_table3_base_and_big_model_sizes() -> None:
    """Paper Table 3: base ≈ 65 M, big ≈ 213 M parameters (37k shared BPE vocabulary)."""
    base = count_transformer_params(6, 6, 512, 2048, 37_000, 37_000, share_embeddings=True, tie_output=True)
    big = count_transformer_params(6, 6, 1024, 4096, 37_000, 37_000, share_embeddings=True, tie_output=True)
    assert round(base / 1e6, 1) == 63.1 and round(big / 1e6, 1) == 214.3
