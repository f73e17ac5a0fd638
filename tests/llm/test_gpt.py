"""TinyGPT: pre-LN block vs nn.TransformerEncoderLayer, causality, the LM loss, KV-cached decoding."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from snippets.data.text import load_timemachine
from snippets.llm.gpt import DecoderBlock, TinyGPT, lm_loss, random_windows, train_lm
from tests.conftest import assert_close

F64 = torch.float64
CONFIGS = [(4, 4), (4, 2), (4, 1)]  # (num_heads, num_kv_heads): MHA, GQA, MQA


def _model(h: int, g: int, device: torch.device, seed: int = 0, **kw) -> TinyGPT:
    torch.manual_seed(seed)
    model = TinyGPT(11, 16, 2, h, g, max_len=kw.pop("max_len", 24), dtype=F64, device=device, **kw)
    with torch.no_grad():  # larger than the N(0, 0.02) init so that outputs depend strongly on the input
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)
    return model.eval()


def test_block_matches_transformer_encoder_layer(device: torch.device) -> None:
    """With num_kv_heads == num_heads the block is nn.TransformerEncoderLayer(norm_first=True,
    activation='gelu') with a causal mask: forward, input and parameter gradients."""
    torch.manual_seed(0)
    d, h, d_ff = 12, 3, 20
    ref = nn.TransformerEncoderLayer(
        d,
        h,
        d_ff,
        dropout=0.0,
        activation="gelu",
        batch_first=True,
        norm_first=True,
        dtype=F64,
        device=device,
    )
    ours = DecoderBlock(d, h, h, d_ff, dtype=F64, device=device)
    with torch.no_grad():
        for lin, w, b in zip(
            (ours.attn.q_proj, ours.attn.k_proj, ours.attn.v_proj),
            ref.self_attn.in_proj_weight.chunk(3),
            ref.self_attn.in_proj_bias.chunk(3),
        ):
            lin.weight.copy_(w)
            lin.bias.copy_(b)
        pairs = [
            (ours.attn.out_proj, ref.self_attn.out_proj),
            (ours.ffn.linear1, ref.linear1),
            (ours.ffn.linear2, ref.linear2),
            (ours.ln1, ref.norm1),
            (ours.ln2, ref.norm2),
        ]
        for a, b in pairs:
            a.weight.copy_(b.weight)
            a.bias.copy_(b.bias)
    x = torch.randn(2, 7, d, dtype=F64, device=device)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    mask = nn.Transformer.generate_square_subsequent_mask(7, device=device, dtype=F64)
    out_ours, out_ref = ours(xa), ref(xb, src_mask=mask, is_causal=True)
    assert_close(out_ours, out_ref)
    grad = torch.randn_like(out_ours)
    out_ours.backward(grad)
    out_ref.backward(grad)
    assert_close(xa.grad, xb.grad)
    assert_close(ours.attn.q_proj.weight.grad, ref.self_attn.in_proj_weight.grad[:d])
    assert_close(ours.attn.v_proj.bias.grad, ref.self_attn.in_proj_bias.grad[2 * d :])
    for a, b in pairs:
        assert_close(a.weight.grad, b.weight.grad)
        assert_close(a.bias.grad, b.bias.grad)


@pytest.mark.parametrize("h,g", CONFIGS)
def test_causality(h: int, g: int, device: torch.device) -> None:
    """Changing tokens after position t leaves logits 0..t unchanged (and does change later ones)."""
    model = _model(h, g, device)
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 11, (3, 12), generator=gen).to(device)
    other = ids.clone()
    other[:, 7:] = (ids[:, 7:] + 1 + torch.randint(0, 9, (3, 5), generator=gen).to(device)) % 11
    a, b = model(ids), model(other)
    assert_close(a[:, :7], b[:, :7])
    assert (a[:, 7:] - b[:, 7:]).abs().amax(dim=-1).min() > 1e-3


def test_lm_loss_is_mean_next_token_cross_entropy(device: torch.device) -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, generator=gen, dtype=F64).to(device)
    ids = torch.randint(0, 7, (2, 5), generator=gen).to(device)
    manual = -sum(torch.log_softmax(logits[b, t], dim=-1)[ids[b, t + 1]] for b in range(2) for t in range(4)) / 8
    assert_close(lm_loss(logits, ids), manual)
    with pytest.raises(ValueError, match="must be"):
        lm_loss(logits, ids[:, :4])


def test_untrained_loss_is_log_vocab(device: torch.device) -> None:
    """With the N(0, 0.02) initialisation the first prediction is nearly uniform: loss ≈ log |V|."""
    torch.manual_seed(0)
    model = TinyGPT(50, 32, 2, 4, 2, max_len=32, device=device)
    ids = torch.randint(0, 50, (8, 32), generator=torch.Generator().manual_seed(0)).to(device)
    assert abs(lm_loss(model(ids), ids).item() - math.log(50)) < 0.02


def test_weight_tying(device: torch.device) -> None:
    tied = TinyGPT(30, 8, 1, 2, device=device)
    untied = TinyGPT(30, 8, 1, 2, tie_weights=False, device=device)
    assert tied.lm_head.weight is tied.tok_emb.weight
    assert untied.lm_head.weight is not untied.tok_emb.weight
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(untied) - count(tied) == 30 * 8


@pytest.mark.parametrize("h,g", CONFIGS)
def test_cached_logits_equal_full_forward_at_every_step(h: int, g: int, device: torch.device) -> None:
    """KV-cached incremental decoding reproduces the full causal forward at every position,
    token by token and with prefill chunks of several tokens (the offset mask)."""
    model = _model(h, g, device)
    ids = torch.randint(0, 11, (2, 20), generator=torch.Generator().manual_seed(2)).to(device)
    full = model(ids)
    for chunks in ([1] * 20, [6, 1, 1, 4, 1, 7]):
        caches = model.new_caches(2)
        start = 0
        for n in chunks:
            assert_close(model(ids[:, start : start + n], caches), full[:, start : start + n])
            start += n
        assert all(c.length == 20 for c in caches)


@pytest.mark.parametrize("h,g", CONFIGS)
def test_cached_and_uncached_generation_identical(h: int, g: int, device: torch.device) -> None:
    model = _model(h, g, device)
    prompt = torch.randint(0, 11, (3, 4), generator=torch.Generator().manual_seed(3)).to(device)
    greedy = model.generate(prompt, 18, use_cache=True)
    assert torch.equal(greedy, model.generate(prompt, 18, use_cache=False))
    assert greedy.shape == (3, 22) and torch.equal(greedy[:, :4], prompt)
    assert len(greedy[:, 4:].unique()) > 2  # a non-trivial continuation, not one repeated token
    sampled = [
        model.generate(
            prompt, 18, use_cache=c, temperature=1.0, generator=torch.Generator(device=device).manual_seed(5)
        )
        for c in (True, False)
    ]
    assert torch.equal(*sampled) and not torch.equal(sampled[0], greedy)


def test_cached_generation_runs_one_token_per_step(monkeypatch, device: torch.device) -> None:
    """With the cache a step feeds 1 token (after one prefill of the prompt); without it, the
    whole sequence so far: O(t) tokens at step t."""
    model = _model(4, 2, device)
    seen: list[int] = []
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda ids, caches=None: seen.append(ids.size(1)) or forward(ids, caches))
    prompt = torch.zeros(1, 5, dtype=torch.long, device=device)
    model.generate(prompt, 6, use_cache=True)
    assert seen == [5, 1, 1, 1, 1, 1]
    seen.clear()
    model.generate(prompt, 6, use_cache=False)
    assert seen == [5, 6, 7, 8, 9, 10]


@pytest.fixture
def one_thread():
    """Tiny matrices: intra-op threads only add overhead (and stall on a busy shared machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_char_gpt_learns_the_time_machine(one_thread) -> None:
    """A 1-layer char GPT, 60 steps (a few seconds): held-out perplexity < |V| / 2 and the loss drops
    below the unigram entropy, the best any model that ignores the context can reach."""
    ids, vocab = load_timemachine()
    split = int(0.9 * len(ids))
    counts = torch.bincount(ids[:split], minlength=len(vocab)).double()
    p = counts[counts > 0] / counts.sum()
    unigram_entropy = -(p * p.log()).sum().item()  # ≈ 2.83 nats
    torch.manual_seed(0)
    model = TinyGPT(len(vocab), 32, 1, 4, 2, max_len=32)
    losses = train_lm(model, ids[:split], 60, batch_size=32, seq_len=32, lr=1e-2, seed=0)
    assert abs(losses[0] - math.log(len(vocab))) < 0.05
    with torch.no_grad():
        held_out = random_windows(ids[split:], 64, 32, torch.Generator().manual_seed(0))
        val = lm_loss(model(held_out), held_out).item()
    assert math.exp(val) < len(vocab) / 2
    assert val < unigram_entropy - 0.2


def test_one_forward_equals_every_prefix_prediction(device: torch.device) -> None:
    """Self-supervision: one causal forward gives the prediction from each prefix x_1..x_t."""
    model = _model(4, 2, device)
    ids = torch.randint(0, 11, (2, 10), generator=torch.Generator().manual_seed(4)).to(device)
    with torch.no_grad():
        full = model(ids)
        for t in range(10):
            assert_close(model(ids[:, : t + 1])[:, -1], full[:, t])


def test_unshifted_targets_reward_copying() -> None:
    """Forgetting the shift: logits that copy the input score ~0 on unshifted targets, ~20 with lm_loss."""
    ids = torch.randint(0, 28, (4, 16), generator=torch.Generator().manual_seed(0))
    copier = 20.0 * torch.nn.functional.one_hot(ids, 28).double()
    unshifted = torch.nn.functional.cross_entropy(copier.reshape(-1, 28), ids.reshape(-1))
    assert unshifted < 1e-6
    assert lm_loss(copier, ids) > 15


def test_rejects_bad_inputs() -> None:
    model = TinyGPT(11, 8, 2, 2, max_len=10)
    with pytest.raises(ValueError, match=r"0 cached \+ n <= max_len=10"):
        model(torch.zeros(1, 11, dtype=torch.long))
    with pytest.raises(ValueError, match="need one cache per layer: 2 layers, got 1"):
        model(torch.zeros(1, 3, dtype=torch.long), model.new_caches(1)[:1])
    with pytest.raises(ValueError, match="max_new_tokens=8 must be <= max_len=10"):
        model.generate(torch.zeros(1, 3, dtype=torch.long), 8)
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        model.generate(torch.zeros(1, 3, dtype=torch.long), 2, temperature=-1.0)
    with pytest.raises(ValueError, match="vocab_size must be positive"):
        TinyGPT(0, 8, 1, 2)
    with pytest.raises(ValueError, match="num_heads=4 is not divisible by num_kv_heads=3"):
        TinyGPT(11, 8, 1, 4, 3)
    with pytest.raises(ValueError, match="at least length=5 tokens"):
        random_windows(torch.arange(4), 2, 5, torch.Generator())
    caches = model.new_caches(1)
    model(torch.zeros(1, 9, dtype=torch.long), caches)
    with pytest.raises(ValueError, match=r"9 cached \+ n <= max_len=10"):
        model(torch.zeros(1, 2, dtype=torch.long), caches)
