"""Training on the toy translation task: a short run learns; the metric, the split, the progress bar, attention maps."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from snippets.data.toy_translation import build_vocabs, make_toy_pairs, tensorize
from snippets.transformer.model import Transformer
from snippets.transformer.train import (
    BOS,
    EOS,
    PAD,
    TrainConfig,
    _budget_used,
    cross_attention_weights,
    exact_match,
    held_out_split,
    text_progress_bar,
    train_translation,
)
from tests.conftest import assert_close

TINY = TrainConfig(
    n_train=1000, n_test=20, d_model=32, nhead=2, num_encoder_layers=1, num_decoder_layers=1,
    dim_feedforward=64, batch_size=32, steps=80, warmup=10, lr=3e-3,
)  # fmt: skip


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny matrices gain nothing from threads, and on a busy machine threads contend: use one."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_short_run_learns(device: torch.device) -> None:
    """A few seconds of training: the loss falls well below its start (ln |V| ≈ 4.4)."""
    res = train_translation(TINY, device=device)
    assert len(res.losses) == TINY.steps
    start, end = res.losses[0], sum(res.losses[-5:]) / 5
    assert start > 4.0
    assert end < 0.6 * start, (start, end)
    assert not res.model.training  # returned in eval mode


def test_training_is_reproducible() -> None:
    cfg = TrainConfig(**{**TINY.__dict__, "steps": 5})
    assert train_translation(cfg).losses == train_translation(cfg).losses


def test_time_limit_stops_early_and_reports_progress() -> None:
    calls: list[tuple[int, float, float]] = []
    cfg = TrainConfig(**{**TINY.__dict__, "steps": 10_000, "time_limit_s": 0.5})
    res = train_translation(cfg, lambda s, loss, t: calls.append((s, loss, t)))
    assert 0 < len(res.losses) < 10_000
    assert res.seconds >= 0.5
    assert [c[0] for c in calls] == list(range(len(res.losses)))  # one call per step
    assert calls[-1][2] >= 0.5


def test_learning_rate_decays_over_the_budget() -> None:
    cfg = TrainConfig(steps=100, time_limit_s=10.0)
    assert _budget_used(cfg, 0, 0.0) == 0.0
    assert _budget_used(cfg, 50, 1.0) == 0.5  # steps dominate
    assert _budget_used(cfg, 10, 9.0) == 0.9  # the clock dominates
    assert _budget_used(cfg, 10, 20.0) == 0.99  # never exactly 0 learning rate
    assert _budget_used(TrainConfig(steps=100), 10, 1e9) == 0.1  # no time limit: steps only


def test_held_out_pairs_are_unseen_and_distinct() -> None:
    train, test = held_out_split(3000, 300, seed=4)
    assert len(train) == 3000 and len(test) == 300
    assert len(set(test)) == 300
    assert not set(test) & set(train)


class _Oracle(nn.Module):
    """Stands in for a Transformer: "decodes" by looking the source up in the reference translations."""

    def __init__(self, src: torch.Tensor, tgt: torch.Tensor, vocab: int, wrong: int | None = None) -> None:
        super().__init__()
        self.vocab, self.output = vocab, nn.Linear(1, vocab)
        self.lookup = {self._key(s): t for s, t in zip(src, tgt)}
        self.wrong = None if wrong is None else self._key(src[wrong])
        self.rows: list[torch.Tensor] = []

    @staticmethod
    def _key(ids: torch.Tensor) -> tuple[int, ...]:
        return tuple(int(i) for i in ids if i != PAD)

    def encode(self, src, src_key_padding_mask=None):
        self.rows = [self.lookup[self._key(s)].clone() for s in src]
        for s, row in zip(src, self.rows):
            if self._key(s) == self.wrong:
                row[2] = 4  # one wrong word in this sentence
        return torch.zeros(src.size(0), src.size(1), 1)

    def decode(self, ys, memory, memory_key_padding_mask=None):
        t = ys.size(1)  # the reference token after the prefix (<eos> past the end)
        nxt = torch.stack([row[t] if t < len(row) else torch.tensor(EOS) for row in self.rows])
        return nn.functional.one_hot(nxt, self.vocab).float()[:, None, :].expand(-1, t, -1)


def test_exact_match_counts_whole_sentences() -> None:
    pairs = make_toy_pairs(10, torch.Generator().manual_seed(0))
    src_vocab, tgt_vocab = build_vocabs(pairs)
    data = tensorize(pairs, src_vocab, tgt_vocab)
    v = len(tgt_vocab)
    assert exact_match(_Oracle(data.src, data.tgt, v), pairs, src_vocab, tgt_vocab) == 1.0
    assert exact_match(_Oracle(data.src, data.tgt, v, wrong=3), pairs, src_vocab, tgt_vocab) == 0.9
    assert exact_match(_Oracle(data.src, data.tgt, v, wrong=3), pairs, src_vocab, tgt_vocab, batch_size=3) == 0.9


def test_untrained_model_translates_nothing() -> None:
    res = train_translation(TrainConfig(**{**TINY.__dict__, "steps": 1}))
    assert exact_match(res.model, res.test_pairs, res.src_vocab, res.tgt_vocab) == 0.0


def test_cross_attention_weights_match_a_manual_pass() -> None:
    torch.manual_seed(0)
    model = Transformer(12, 14, 16, 4, 2, 1, 32, 0.0, dtype=torch.float64).eval()
    src, tgt = torch.randint(4, 12, (2, 6)), torch.randint(4, 14, (2, 5))
    pad = torch.zeros(2, 6, dtype=torch.bool)
    pad[1, 4:] = True
    w = cross_attention_weights(model, src, tgt, src_key_padding_mask=pad)
    assert w.shape == (2, 4, 5, 6)  # (B, h, T, S)
    with torch.no_grad():  # the same thing by hand: post-LN decoder layer, up to its cross-attention
        memory = model.encode(src, pad)
        layer = model.decoder.layers[0]
        y = model.pos(model.tgt_embed(tgt))
        sa, _ = layer.self_attn(y, y, y, is_causal=True)
        x = layer.norm1(y + sa)
        _, ref = layer.cross_attn(
            x, memory, memory, key_padding_mask=pad, need_weights=True, average_attn_weights=False
        )
    assert_close(w, ref)
    assert_close(w.sum(-1), torch.ones(2, 4, 5, dtype=torch.float64))
    assert torch.all(w[1, ..., 4:] == 0)  # padded source words get no attention
    assert len(model.decoder.layers[0].cross_attn._forward_hooks) == 0  # the hook is gone


def test_progress_bar_lines() -> None:
    buf = io.StringIO()
    bar = text_progress_bar(40, stream=buf, width=10)
    for s in range(40):
        bar(s, 1.0 / (s + 1), 0.1 * s)
    lines = buf.getvalue().splitlines()
    assert 2 <= len(lines) <= 11  # one line per 10 % when not on a terminal
    assert lines[-1].startswith("[##########] 100%  step    40  loss 0.025")


def test_progress_bar_follows_the_clock_and_redraws_on_a_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    buf = Tty()
    bar = text_progress_bar(1000, time_limit_s=2.0, stream=buf, width=4)
    bar(0, 3.0, 1.0)  # 1 step of 1000, but half of the time
    bar(1, 2.0, 2.0)  # time is up
    assert buf.getvalue() == (
        "\r[##..]  50%  step     1  loss 3.000    1.0 s\r[####] 100%  step     2  loss 2.000    2.0 s\n"
    )


def test_progress_bar_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="steps must be >= 1, got steps=0"):
        text_progress_bar(0)
    with pytest.raises(ValueError, match="time_limit_s must be > 0, got time_limit_s=0"):
        text_progress_bar(10, time_limit_s=0)


def test_special_ids_match_the_data_module() -> None:
    src_vocab, tgt_vocab = build_vocabs(make_toy_pairs(50, torch.Generator().manual_seed(0)))
    for vocab in (src_vocab, tgt_vocab):
        assert [vocab.token_to_idx[t] for t in ("<pad>", "<bos>", "<eos>")] == [PAD, BOS, EOS]
