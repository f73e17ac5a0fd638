"""Train the from-scratch Transformer on the toy Chinese → English task and measure exact match.

Reference: Vaswani et al. 2017, §5 (Adam with warm-up, label smoothing) and §6.1; d2l.ai §11.7.5.
Teacher forcing: the decoder reads ``tgt[:, :-1]`` (``<bos> y_1 … y_{T-1}``) and is scored on
``tgt[:, 1:]`` (``y_1 … y_T <eos>``) with a cross-entropy that ignores ``<pad>``. Evaluation
decodes greedily (:func:`~snippets.transformer.decoding.greedy_decode`) on held-out pairs and
counts sentences translated exactly.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TextIO

import torch
import torch.nn.functional as F
from torch import Tensor

from snippets.data.text import Vocab
from snippets.data.toy_translation import build_vocabs, make_toy_pairs, strip_special, tensorize
from snippets.transformer.attention_types import cross_attention_weights  # re-exported for the lab
from snippets.transformer.decoding import greedy_decode
from snippets.transformer.model import Transformer

__all__ = [
    "TrainConfig",
    "TrainResult",
    "held_out_split",
    "train_translation",
    "text_progress_bar",
    "exact_match",
    "cross_attention_weights",
]

PAD, BOS, EOS = 1, 2, 3  # snippets.data.toy_translation.SPECIALS after <unk> = 0


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a run (the defaults are the "full" configuration of the page)."""

    n_train: int = 20_000
    n_test: int = 1_000
    d_model: int = 64
    nhead: int = 4
    num_encoder_layers: int = 2
    num_decoder_layers: int = 2
    dim_feedforward: int = 128
    dropout: float = 0.0
    norm_first: bool = True
    batch_size: int = 64
    lr: float = 2e-3
    warmup: int = 100
    steps: int = 1500
    time_limit_s: float | None = None
    label_smoothing: float = 0.0
    seed: int = 0


@dataclass
class TrainResult:
    model: Transformer
    src_vocab: Vocab
    tgt_vocab: Vocab
    test_pairs: list[tuple[str, str]]
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def held_out_split(n_train: int, n_test: int, seed: int = 0) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """``n_train`` training pairs and ``n_test`` *distinct* test pairs none of which occurs in training."""
    train = make_toy_pairs(n_train, torch.Generator().manual_seed(seed))
    seen, test = set(train), []
    candidates = make_toy_pairs(4 * n_test + 100, torch.Generator().manual_seed(seed + 1_000_003))
    for pair in candidates:
        if pair not in seen:
            test.append(pair)
            seen.add(pair)
        if len(test) == n_test:
            break
    return train, test


# --8<-- [start:train]
def train_translation(
    config: TrainConfig = TrainConfig(),
    progress: Callable[[int, float, float], None] | None = None,
    *,
    device: torch.device | None = None,
) -> TrainResult:
    """Train a :class:`Transformer` with AdamW: linear warm-up, then linear decay to 0 at the end of the budget.

    The budget is ``config.steps`` steps or ``config.time_limit_s`` seconds, whichever runs out first;
    the learning rate decays with the larger of the two fractions used, so a run stopped by the clock
    still ends with a small learning rate. ``progress(step, loss, elapsed_seconds)`` is called after
    every step (see :func:`text_progress_bar`).
    """
    torch.manual_seed(config.seed)
    train_pairs, test_pairs = held_out_split(config.n_train, config.n_test, config.seed)
    src_vocab, tgt_vocab = build_vocabs(train_pairs)
    data = tensorize(train_pairs, src_vocab, tgt_vocab, device=device)
    model = Transformer(
        len(src_vocab),
        len(tgt_vocab),
        config.d_model,
        config.nhead,
        config.num_encoder_layers,
        config.num_decoder_layers,
        config.dim_feedforward,
        config.dropout,
        norm_first=config.norm_first,
        max_len=64,
        device=device,
    )
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(config.seed)
    result = TrainResult(model, src_vocab, tgt_vocab, test_pairs)
    start = time.perf_counter()
    model.train()
    for step in range(config.steps):
        used = _budget_used(config, step, time.perf_counter() - start)  # in [0, 1)
        for group in opt.param_groups:
            group["lr"] = config.lr * min(1.0, (step + 1) / max(1, config.warmup)) * (1.0 - used)
        idx = torch.randint(0, data.src.size(0), (config.batch_size,), generator=gen).to(data.src.device)
        loss = _batch_loss(model, data.src[idx], data.tgt[idx], config.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        result.losses.append(loss.item())
        elapsed = time.perf_counter() - start
        if progress is not None:
            progress(step, result.losses[-1], elapsed)
        if config.time_limit_s is not None and elapsed >= config.time_limit_s:
            break
    result.seconds = time.perf_counter() - start
    model.eval()
    return result


def _budget_used(config: TrainConfig, step: int, elapsed: float) -> float:
    """Fraction of the budget spent before ``step``: steps, or seconds when a time limit is set."""
    used = step / config.steps
    if config.time_limit_s is not None:
        used = max(used, elapsed / config.time_limit_s)
    return min(used, 1.0 - 1.0 / config.steps)  # the last step still moves the weights a little


def _batch_loss(model: Transformer, src: Tensor, tgt: Tensor, label_smoothing: float) -> Tensor:
    """Teacher-forced cross-entropy over the non-pad target tokens of one batch."""
    src, tgt = src[:, : int((src != PAD).sum(1).max())], tgt[:, : int((tgt != PAD).sum(1).max())]  # trim
    tgt_in, tgt_out = tgt[:, :-1], tgt[:, 1:]  # <bos> y_1 .. y_{T-1}  ->  y_1 .. y_T <eos>
    logits = model(src, tgt_in, src_key_padding_mask=src == PAD, tgt_key_padding_mask=tgt_in == PAD)
    return F.cross_entropy(
        logits.reshape(-1, logits.size(-1)), tgt_out.reshape(-1), ignore_index=PAD, label_smoothing=label_smoothing
    )


# --8<-- [end:train]


# --8<-- [start:progress]
def text_progress_bar(
    steps: int, time_limit_s: float | None = None, *, width: int = 30, stream: TextIO | None = None
) -> Callable[[int, float, float], None]:
    """A ``progress(step, loss, elapsed)`` callback drawing ``[#####.....]  42%  step 630  loss 0.153  25.1 s``.

    The bar shows the larger of the step fraction and the time fraction (when ``time_limit_s`` is set).
    On a terminal it redraws one line with ``\\r``; elsewhere (a notebook, a log file) it prints one line
    per 10 % so the output stays readable.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got steps={steps}")
    if time_limit_s is not None and time_limit_s <= 0:
        raise ValueError(f"time_limit_s must be > 0, got time_limit_s={time_limit_s}")
    state = {"shown": -1}

    def progress(step: int, loss: float, elapsed: float) -> None:
        out = stream if stream is not None else sys.stdout
        frac = (step + 1) / steps
        if time_limit_s is not None:
            frac = max(frac, elapsed / time_limit_s)
        frac = min(frac, 1.0)
        done = int(frac * width)
        bar = "#" * done + "." * (width - done)
        line = f"[{bar}] {frac:4.0%}  step {step + 1:5d}  loss {loss:.3f}  {elapsed:5.1f} s"
        last = step + 1 == steps or frac >= 1.0
        if out.isatty():
            out.write("\r" + line + ("\n" if last else ""))
        elif int(frac * 10) > state["shown"] or last:  # one line per 10 %
            state["shown"] = 10 if last else int(frac * 10)
            out.write(line + "\n")
        out.flush()

    return progress


# --8<-- [end:progress]


# --8<-- [start:exact_match]
@torch.no_grad()
def exact_match(
    model: Transformer, pairs: Sequence[tuple[str, str]], src_vocab: Vocab, tgt_vocab: Vocab, batch_size: int = 500
) -> float:
    """Fraction of ``pairs`` whose greedy translation equals the reference word for word."""
    model.eval()
    device = model.output.weight.device
    hits = 0
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i : i + batch_size]
        data = tensorize(chunk, src_vocab, tgt_vocab, device=device)
        out = greedy_decode(model, data.src, BOS, EOS, max_len=data.tgt.size(1), src_key_padding_mask=data.src == PAD)
        hits += sum(strip_special(row, tgt_vocab) == en for row, (_, en) in zip(out, chunk))
    return hits / len(pairs)


# --8<-- [end:exact_match]


def _main(argv: list[str]) -> None:
    if argv != ["full"]:  # the quick demo (under a second): a few steps of a tiny model
        cfg = TrainConfig(
            n_train=500,
            n_test=20,
            d_model=16,
            nhead=2,
            num_encoder_layers=1,
            num_decoder_layers=1,
            dim_feedforward=32,
            steps=30,
            warmup=5,
            lr=5e-3,
        )
        res = train_translation(cfg)
        print(
            f"{len(res.losses)} steps of a tiny model: loss {res.losses[0]:.2f} -> {res.losses[-1]:.2f}"
            " (the full run: python -m snippets run train full)"
        )
        return
    torch.set_num_threads(1)  # 64-wide matrices gain little from a 2nd thread, and threads contend on a busy machine
    cfg = TrainConfig(time_limit_s=60)
    res = train_translation(cfg, text_progress_bar(cfg.steps, cfg.time_limit_s))
    start = time.perf_counter()
    acc = exact_match(res.model, res.test_pairs, res.src_vocab, res.tgt_vocab)
    print(
        f"{len(res.losses)} steps in {res.seconds:.1f} s, final loss {res.losses[-1]:.4f}; "
        f"exact match on {len(res.test_pairs)} held-out pairs: {acc:.1%} ({time.perf_counter() - start:.1f} s)"
    )
    data = tensorize(res.test_pairs[:3], res.src_vocab, res.tgt_vocab)
    out = greedy_decode(res.model, data.src, BOS, EOS, max_len=data.tgt.size(1), src_key_padding_mask=data.src == PAD)
    for (zh, en), row in zip(res.test_pairs[:3], out):
        print(f"{zh.replace(' ', '')}  ->  {strip_special(row, res.tgt_vocab)}  (reference: {en})")


if __name__ == "__main__":
    _main(sys.argv[1:])
