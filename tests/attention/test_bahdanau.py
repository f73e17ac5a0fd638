"""Bahdanau attention decoder: masks, teacher forcing vs step-wise decoding, a GRUCell reference,
BLEU against hand-computed values, and attention vs plain seq2seq on long inputs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from snippets.attention.bahdanau import (
    BOS,
    EOS,
    PAD,
    EncoderDecoder,
    Seq2SeqAttentionDecoder,
    Seq2SeqDecoder,
    Seq2SeqEncoder,
    bleu,
    compare_on_long_inputs,
    greedy_decode,
    make_reverse_task,
    strip_special,
)
from tests.conftest import assert_close

V, E, H = 11, 5, 6


def _model(seed: int, device: torch.device, num_layers: int = 1, attention: bool = True) -> EncoderDecoder:
    torch.manual_seed(seed)
    dec = (Seq2SeqAttentionDecoder if attention else Seq2SeqDecoder)(V, E, H, num_layers)
    return EncoderDecoder(Seq2SeqEncoder(V, E, H, num_layers), dec).double().to(device)  # dropout 0


def _batch(seed: int, device: torch.device, n: int = 4, max_len: int = 6):
    g = torch.Generator().manual_seed(seed)
    src, lens, tgt_in, tgt_out = make_reverse_task(n, max_len, V, generator=g)
    return src.to(device), lens.to(device), tgt_in.to(device), tgt_out.to(device)


def _capture_rnn_inputs(decoder: nn.Module) -> tuple[list[torch.Tensor], torch.utils.hooks.RemovableHandle]:
    seen: list[torch.Tensor] = []
    handle = decoder.rnn.register_forward_hook(lambda mod, args, out: seen.append(args[0].detach()))
    return seen, handle


@pytest.mark.parametrize("seed", range(3))
def test_weights_sum_to_one_and_vanish_on_padding(seed: int, device: torch.device) -> None:
    model = _model(seed, device, num_layers=2)
    src, lens, tgt_in, _ = _batch(seed, device)
    model(src, tgt_in, lens)
    w = model.decoder.attention_weights  # (B, T', T)
    assert w.shape == (src.size(0), tgt_in.size(1), src.size(1))
    assert_close(w.sum(-1), torch.ones_like(w.sum(-1)))
    pad = (torch.arange(src.size(1), device=device) >= lens[:, None])[:, None, :].expand_as(w)
    assert bool((w[pad] == 0).all()) and bool((w[~pad] > 0).all())


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("attention", [True, False])
def test_teacher_forced_equals_step_wise(seed: int, attention: bool, device: torch.device) -> None:
    """One call on the whole target == T' calls of one token each, carrying the state."""
    model = _model(seed, device, num_layers=2, attention=attention)
    src, lens, tgt_in, _ = _batch(seed, device)
    state = model.decoder.init_state(*model.encoder(src, lens), lens)
    forced, _ = model.decoder(tgt_in, state)
    forced_w = model.decoder.attention_weights if attention else None
    steps, weights = [], []
    for t in range(tgt_in.size(1)):
        logits, state = model.decoder(tgt_in[:, t : t + 1], state)
        steps.append(logits)
        if attention:
            weights.append(model.decoder.attention_weights)
    assert_close(torch.cat(steps, 1), forced)
    if attention:
        assert_close(torch.cat(weights, 1), forced_w)


def _reference_logits(model: EncoderDecoder, src, lens, tgt_in) -> tuple[torch.Tensor, nn.GRUCell]:
    """One sequence at a time, unpadded; additive scores written out; nn.GRUCell with copied weights."""
    enc, dec = model.encoder, model.decoder
    cell = nn.GRUCell(E + H, H).double().to(src.device)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).copy_(getattr(dec.rnn, f"{name}_l0"))
    out = []
    for b in range(src.size(0)):
        n = int(lens[b])
        h_all, h_last = enc.rnn(enc.embedding(src[b, :n]).unsqueeze(0))  # no padding at all
        keys = h_all[0]  # (n, H)
        s = h_last[0, 0]
        rows = []
        for t in range(tgt_in.size(1)):
            e = torch.stack(
                [
                    dec.attention.w_v.weight[0]
                    @ torch.tanh(dec.attention.W_q.weight @ s + dec.attention.W_k.weight @ keys[j])
                    for j in range(n)
                ]
            )
            a = torch.softmax(e, 0)
            c = (a[:, None] * keys).sum(0)
            s = cell(torch.cat([dec.embedding.weight[tgt_in[b, t]], c])[None], s[None])[0]
            rows.append(dec.dense(s))
        out.append(torch.stack(rows))
    return torch.stack(out), cell


@pytest.mark.parametrize("seed", range(3))
def test_matches_grucell_reference(seed: int, device: torch.device) -> None:
    """Forward and parameter gradients vs an unbatched, unpadded re-implementation built on
    nn.GRUCell (weights copied from the decoder's nn.GRU)."""
    model = _model(seed, device)
    src, lens, tgt_in, _ = _batch(seed, device)
    ours = model(src, tgt_in, lens)
    ref, cell = _reference_logits(model, src, lens, tgt_in)
    assert_close(ours, ref)
    grad = torch.randn_like(ours)
    shared = [p for n, p in model.named_parameters() if "decoder.rnn" not in n]  # used by both paths
    rnn = model.decoder.rnn
    ours_rnn = [rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0]
    ref_rnn = [cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh]  # the copies
    g_ours = torch.autograd.grad(ours, shared + ours_rnn, grad)
    g_ref = torch.autograd.grad(ref, shared + ref_rnn, grad)
    assert len(shared) == 11  # encoder (embedding + GRU) 5, attention 3, embedding 1, dense 2
    for a, b in zip(g_ours, g_ref):
        assert_close(a, b)


def test_padding_content_is_ignored(device: torch.device) -> None:
    model = _model(0, device, num_layers=2)
    src, lens, tgt_in, _ = _batch(0, device, n=6)
    assert bool((lens < src.size(1)).any())
    noisy = src.masked_fill(torch.arange(src.size(1), device=device) >= lens[:, None], 7)
    assert_close(model(noisy, tgt_in, lens), model(src, tgt_in, lens))
    assert not torch.allclose(model(noisy, tgt_in), model(src, tgt_in))  # without valid_lens it matters


def test_query_is_previous_state_and_input_is_embedding_then_context(device: torch.device) -> None:
    """003 L347–358: first query = encoder's final top-layer state; the GRU input at step t' is
    cat(e(y_{t'-1}), c_{t'}) — embedding first, context second — and c_{t'} changes with t'."""
    model = _model(1, device, num_layers=2)
    src, lens, tgt_in, _ = _batch(1, device)
    enc_out, enc_state = model.encoder(src, lens)
    state = model.decoder.init_state(enc_out, enc_state, lens)
    seen, handle = _capture_rnn_inputs(model.decoder)
    model.decoder(tgt_in, state)
    handle.remove()
    w = model.decoder.attention_weights
    first = model.decoder.attention(enc_state[-1].unsqueeze(1), enc_out, enc_out, lens)  # query h_T
    assert_close(w[:, :1], model.decoder.attention.attention_weights)
    x = torch.cat(seen, dim=1)  # (B, T', E + H)
    assert_close(x[..., :E], model.decoder.embedding(tgt_in))
    assert_close(x[..., E:], w @ enc_out)  # c_{t'} = sum_t alpha_{t', t} h_t
    assert_close(x[:, :1, E:], first)
    assert not torch.allclose(x[:, 0, E:], x[:, 1, E:])  # the context varies over steps


def test_plain_decoder_context_is_fixed(device: torch.device) -> None:
    model = _model(2, device, attention=False)
    src, lens, tgt_in, _ = _batch(2, device)
    _, enc_state = model.encoder(src, lens)
    seen, handle = _capture_rnn_inputs(model.decoder)
    model(src, tgt_in, lens)
    handle.remove()
    ctx = seen[0][..., E:]  # (B, T', H)
    assert_close(ctx, enc_state[-1].unsqueeze(1).expand_as(ctx))  # the same h_T at every step


def test_reverse_task_layout() -> None:
    src, lens, tgt_in, tgt_out = make_reverse_task(50, 5, generator=torch.Generator().manual_seed(0))
    for b in range(50):
        n = int(lens[b])
        body = src[b, :n].flip(0)
        assert torch.equal(tgt_out[b, : n + 1], torch.cat([body, torch.tensor([EOS])]))
        assert torch.equal(tgt_in[b, : n + 1], torch.cat([torch.tensor([BOS]), body]))
        assert bool((src[b, n:] == PAD).all() and (tgt_out[b, n + 1 :] == PAD).all())
        assert bool((src[b, :n] >= 3).all())


def test_greedy_decode_is_consistent_with_teacher_forcing(device: torch.device) -> None:
    model = _model(3, device)
    src, lens, _, _ = _batch(3, device)
    tokens, w = greedy_decode(model, src, lens, 5)
    raw_in = torch.cat([torch.full_like(tokens[:, :1], BOS), tokens[:, :-1]], dim=1)
    # feeding the greedy outputs back as a teacher-forced target reproduces them (before any EOS)
    forced = model(src, raw_in.masked_fill(raw_in == PAD, EOS), lens).argmax(-1)
    alive = (tokens == EOS).long().cumsum(1) - (tokens == EOS).long() == 0
    assert torch.equal(forced[alive], tokens[alive])
    assert w.shape == (src.size(0), 5, src.size(1))


@pytest.fixture
def one_thread():
    """Tiny models train several times faster on one thread (no per-op thread sync)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_attention_beats_plain_seq2seq_on_long_inputs(one_thread) -> None:
    """Small variant of compare_on_long_inputs(): sources of 8-10 tokens, 80 steps each, same seed,
    data and sizes. Measured: BLEU 0.75 vs 0.58, token accuracy 0.45 vs 0.33, loss 0.9 vs 1.4."""
    att, plain = compare_on_long_inputs(max_len=10, min_len=8, steps=80, num_hiddens=24, batch_size=32, n_eval=128)
    assert att.attention and not plain.attention
    assert sum(p.numel() for p in att.model.parameters()) > sum(p.numel() for p in plain.model.parameters())
    for r in (att, plain):  # both learn something: the loss falls from ~ln(10) nats per token
        assert r.losses[0] > 2.0 and sum(r.losses[-10:]) / 10 < 0.8 * r.losses[0]
    assert sum(att.losses[-10:]) < 0.85 * sum(plain.losses[-10:])
    assert att.bleu > plain.bleu + 0.1
    assert att.token_accuracy > plain.token_accuracy + 0.05


def test_bleu_matches_hand_computed_values() -> None:
    # p_1 = 3/4, p_2 = 2/3 (ab, bc match; cd does not), no brevity penalty
    assert bleu("abcd", "abce") == pytest.approx(math.sqrt(3 / 4) * (2 / 3) ** 0.25, rel=1e-12)
    assert bleu([5, 6, 7], [5, 6, 7]) == 1.0  # exact match
    # too short: brevity penalty exp(1 - 4/2), both precisions 1
    assert bleu("ab", "abcd") == pytest.approx(math.exp(-1.0), rel=1e-12)
    # clipping: "a" occurs once in the label, so only one of the three predicted "a" counts
    assert bleu("aaa", "ab", k=1) == pytest.approx((1 / 3) ** 0.5, rel=1e-12)
    assert bleu("aaa", "ab", k=2) == 0.0  # no bigram matches
    assert bleu("ba", "ab", k=1) == 1.0 and bleu("ba", "ab", k=2) == 0.0  # order only shows with n >= 2
    assert bleu([], [1, 2]) == 0.0
    # k larger than the prediction: only n <= len(pred) enters (d2l's min(k, len_pred))
    assert bleu("a", "a", k=4) == 1.0


def test_strip_special_cuts_at_eos() -> None:
    assert strip_special(torch.tensor([BOS, 5, 6, EOS, 7, PAD])) == [5, 6]
    assert strip_special(torch.tensor([5, PAD, 6])) == [5, 6]
    assert strip_special(torch.tensor([EOS, 5])) == []


def test_bleu_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="k must be >= 1, got k=0"):
        bleu("ab", "ab", k=0)
    with pytest.raises(ValueError, match="label is empty"):
        bleu("ab", "")


SRC, TGT = torch.ones(2, 3, dtype=torch.long), torch.ones(2, 2, dtype=torch.long)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m: m(torch.ones(2, 3), TGT), "int64 token ids"),
        (lambda m: m(torch.full((2, 3), V), TGT), r"outside \[0, vocab_size=11\)"),
        (lambda m: m(SRC, torch.ones(2, 0, dtype=torch.long)), "at least one"),
        (lambda m: m(SRC, TGT, torch.tensor([0, 3])), r"valid_lens must lie in \[1, T=3\]"),
        (lambda m: m(SRC, TGT, torch.tensor([3])), r"valid_lens must be \(B,\) = \(2,\)"),
    ],
)
def test_rejects_bad_input(call, match) -> None:
    torch.manual_seed(0)
    model = EncoderDecoder(Seq2SeqEncoder(V, E, H), Seq2SeqAttentionDecoder(V, E, H))
    with pytest.raises(ValueError, match=match):
        call(model)


def test_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="num_hiddens must be positive, got num_hiddens=0"):
        Seq2SeqAttentionDecoder(V, E, 0)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        Seq2SeqEncoder(V, E, H, dropout=1.5)
    with pytest.raises(ValueError, match="min_len <= max_len"):
        make_reverse_task(4, max_len=3, min_len=4)
