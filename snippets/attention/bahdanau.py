"""Bahdanau attention: a GRU encoder–decoder whose context vector changes at every decoding step.

Reference: Bahdanau, Cho & Bengio 2015, "Neural Machine Translation by Jointly Learning to Align
and Translate"; d2l.ai §11.4. At step t' the query is the previous decoder hidden state
``s_{t'-1}`` (top layer), keys = values = all encoder outputs ``h_1..h_T``, the context is
``c_{t'} = sum_t alpha(s_{t'-1}, h_t) h_t`` (additive scoring) and the GRU input is the
concatenation ``[e(y_{t'-1}); c_{t'}]``. A plain seq2seq decoder reuses one fixed context.
Layout is batch-first: ``src: (B, T)``, ``tgt: (B, T')`` token ids.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from snippets.attention.scoring import AdditiveAttention

__all__ = [
    "PAD",
    "BOS",
    "EOS",
    "Seq2SeqEncoder",
    "Seq2SeqAttentionDecoder",
    "Seq2SeqDecoder",
    "EncoderDecoder",
    "greedy_decode",
    "make_reverse_task",
    "strip_special",
    "bleu",
    "TrainResult",
    "train_reverse",
    "compare_on_long_inputs",
]

PAD, BOS, EOS = 0, 1, 2  # special token ids; symbols are 3 .. vocab_size - 1
State = tuple[Tensor, Tensor, Tensor | None]  # (enc_outputs, decoder hidden, src valid_lens)


# --8<-- [start:encoder]
class Seq2SeqEncoder(nn.Module):
    """Embedding + multi-layer GRU: ``src (B, T)`` → ``(outputs (B, T, H), state (L, B, H))``.

    With ``valid_lens: (B,)`` the padded tail is skipped (``pack_padded_sequence``): ``state`` is
    taken at each sequence's last real token and ``outputs`` are 0 at padded positions.
    """

    def __init__(
        self, vocab_size: int, embed_size: int, num_hiddens: int, num_layers: int = 1, dropout: float = 0.0
    ) -> None:
        super().__init__()
        _check_sizes(vocab_size, embed_size, num_hiddens, num_layers, dropout)
        self.embedding = nn.Embedding(vocab_size, embed_size)
        self.rnn = nn.GRU(embed_size, num_hiddens, num_layers, dropout=dropout, batch_first=True)

    def forward(self, src: Tensor, valid_lens: Tensor | None = None) -> tuple[Tensor, Tensor]:
        _check_tokens("src", src, self.embedding.num_embeddings)
        x = self.embedding(src)  # (B, T, E)
        if valid_lens is None:
            return self.rnn(x)
        _check_lens(valid_lens, src)
        rnn_utils = nn.utils.rnn
        packed = rnn_utils.pack_padded_sequence(x, valid_lens.cpu(), batch_first=True, enforce_sorted=False)
        outputs, state = self.rnn(packed)
        outputs, _ = rnn_utils.pad_packed_sequence(outputs, batch_first=True, total_length=src.size(1))
        return outputs, state


# --8<-- [end:encoder]


class Seq2SeqAttentionDecoder(nn.Module):
    """GRU decoder with additive attention over the encoder outputs.

    ``forward(tgt_in (B, T'), state)`` → ``(logits (B, T', vocab_size), new state)``; the
    attention weights of the last call are kept in ``self.attention_weights: (B, T', T)``.
    Feeding the whole target (teacher forcing) or one token at a time gives the same logits.
    """

    def __init__(
        self, vocab_size: int, embed_size: int, num_hiddens: int, num_layers: int = 1, dropout: float = 0.0
    ) -> None:
        super().__init__()
        _check_sizes(vocab_size, embed_size, num_hiddens, num_layers, dropout)
        self.attention = AdditiveAttention(num_hiddens, num_hiddens, num_hiddens, dropout)
        self.embedding = nn.Embedding(vocab_size, embed_size)
        self.rnn = nn.GRU(embed_size + num_hiddens, num_hiddens, num_layers, dropout=dropout, batch_first=True)
        self.dense = nn.Linear(num_hiddens, vocab_size)
        self.attention_weights: Tensor | None = None

    def init_state(self, enc_outputs: Tensor, enc_state: Tensor, enc_valid_lens: Tensor | None = None) -> State:
        """The decoder starts from the encoder's final state, so the first query is ``h_T``."""
        return enc_outputs, enc_state, enc_valid_lens

    # --8<-- [start:decoder]
    def forward(self, tgt_in: Tensor, state: State) -> tuple[Tensor, State]:
        _check_tokens("tgt_in", tgt_in, self.embedding.num_embeddings)
        enc_outputs, hidden, valid_lens = state  # (B, T, H), (L, B, H), (B,) or None
        emb = self.embedding(tgt_in)  # (B, T', E)
        outputs, weights = [], []
        for t in range(tgt_in.size(1)):  # sequential: the query needs the previous hidden state
            query = hidden[-1].unsqueeze(1)  # s_{t'-1}, top layer: (B, 1, H)
            context = self.attention(query, enc_outputs, enc_outputs, valid_lens)  # c_{t'}: (B, 1, H)
            x = torch.cat([emb[:, t : t + 1], context], dim=-1)  # [e(y_{t'-1}); c_{t'}]: (B, 1, E + H)
            out, hidden = self.rnn(x, hidden)  # one GRU step
            outputs.append(out)
            weights.append(self.attention.attention_weights)  # (B, 1, T)
        self.attention_weights = torch.cat(weights, dim=1)  # (B, T', T)
        return self.dense(torch.cat(outputs, dim=1)), (enc_outputs, hidden, valid_lens)

    # --8<-- [end:decoder]


# --8<-- [start:plain_decoder]
class Seq2SeqDecoder(nn.Module):
    """Plain seq2seq decoder (for comparison): the context is the encoder's final top-layer
    state ``h_T``, the *same* vector at every step, so all steps run in one GRU call."""

    def __init__(
        self, vocab_size: int, embed_size: int, num_hiddens: int, num_layers: int = 1, dropout: float = 0.0
    ) -> None:
        super().__init__()
        _check_sizes(vocab_size, embed_size, num_hiddens, num_layers, dropout)
        self.embedding = nn.Embedding(vocab_size, embed_size)
        self.rnn = nn.GRU(embed_size + num_hiddens, num_hiddens, num_layers, dropout=dropout, batch_first=True)
        self.dense = nn.Linear(num_hiddens, vocab_size)

    def init_state(self, enc_outputs: Tensor, enc_state: Tensor, enc_valid_lens: Tensor | None = None) -> State:
        return enc_outputs, enc_state, enc_state[-1]  # third slot: the fixed context h_T

    def forward(self, tgt_in: Tensor, state: State) -> tuple[Tensor, State]:
        _check_tokens("tgt_in", tgt_in, self.embedding.num_embeddings)
        enc_outputs, hidden, context = state
        emb = self.embedding(tgt_in)  # (B, T', E)
        ctx = context.unsqueeze(1).expand(-1, tgt_in.size(1), -1)  # (B, T', H), same at every step
        out, hidden = self.rnn(torch.cat([emb, ctx], dim=-1), hidden)
        return self.dense(out), (enc_outputs, hidden, context)


# --8<-- [end:plain_decoder]


class EncoderDecoder(nn.Module):
    """``logits = decoder(tgt_in, decoder.init_state(*encoder(src, src_valid_lens), src_valid_lens))``."""

    def __init__(self, encoder: Seq2SeqEncoder, decoder: Seq2SeqAttentionDecoder | Seq2SeqDecoder) -> None:
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def forward(self, src: Tensor, tgt_in: Tensor, src_valid_lens: Tensor | None = None) -> Tensor:
        state = self.decoder.init_state(*self.encoder(src, src_valid_lens), src_valid_lens)
        return self.decoder(tgt_in, state)[0]  # (B, T', vocab_size)


# --8<-- [start:greedy]
@torch.no_grad()
def greedy_decode(
    model: EncoderDecoder, src: Tensor, src_valid_lens: Tensor | None, num_steps: int
) -> tuple[Tensor, Tensor | None]:
    """Feed back the argmax token one step at a time: ``(tokens (B, num_steps), attention
    (B, num_steps, T) or None)``. Tokens after a sequence's ``EOS`` are set to ``PAD``."""
    state = model.decoder.init_state(*model.encoder(src, src_valid_lens), src_valid_lens)
    y = torch.full((src.size(0), 1), BOS, dtype=torch.long, device=src.device)
    tokens, weights = [], []
    for _ in range(num_steps):
        logits, state = model.decoder(y, state)  # one step, state carried over
        y = logits.argmax(-1)  # (B, 1)
        tokens.append(y)
        if isinstance(model.decoder, Seq2SeqAttentionDecoder):
            weights.append(model.decoder.attention_weights)
    tokens = torch.cat(tokens, dim=1)
    finished = (tokens == EOS).long().cumsum(1) - (tokens == EOS).long() > 0  # strictly after EOS
    return tokens.masked_fill(finished, PAD), (torch.cat(weights, dim=1) if weights else None)


# --8<-- [end:greedy]


# --8<-- [start:task]
def make_reverse_task(
    n: int,
    max_len: int = 8,
    vocab_size: int = 12,
    *,
    min_len: int = 1,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A toy translation task: the output is the input reversed.

    Returns ``src (n, max_len)`` (padded with ``PAD``), ``src_valid_lens (n,)``, ``tgt_in
    (n, max_len + 1)`` = ``[BOS, y...]`` and ``tgt_out (n, max_len + 1)`` = ``[y..., EOS]``
    (padded with ``PAD``, which the loss ignores)."""
    if n <= 0 or not 1 <= min_len <= max_len or vocab_size <= 3:
        raise ValueError(
            f"need n > 0, 1 <= min_len <= max_len, vocab_size > 3; got {n=}, {min_len=}, {max_len=}, {vocab_size=}"
        )
    lens = torch.randint(min_len, max_len + 1, (n,), generator=generator)
    tokens = torch.randint(3, vocab_size, (n, max_len), generator=generator)
    pos = torch.arange(max_len)
    src = tokens.masked_fill(pos >= lens[:, None], PAD)
    rev_idx = (lens[:, None] - 1 - pos).clamp(min=0)  # position t of the target = source L-1-t
    rev = torch.gather(src, 1, rev_idx).masked_fill(pos >= lens[:, None], PAD)
    pad = torch.full((n, 1), PAD, dtype=torch.long)
    tgt_out = torch.cat([rev, pad], dim=1).scatter(1, lens[:, None], EOS)
    tgt_in = torch.cat([torch.full((n, 1), BOS, dtype=torch.long), rev], dim=1)
    return src, lens, tgt_in, tgt_out


# --8<-- [end:task]


# --8<-- [start:bleu]
def strip_special(ids: Tensor) -> list[int]:
    """Token ids ``(T,)`` → a list up to (excluding) the first ``EOS``, without ``PAD``/``BOS``."""
    out = []
    for i in ids.tolist():
        if i == EOS:
            break
        if i not in (PAD, BOS):
            out.append(i)
    return out


def bleu(pred: Sequence, label: Sequence, k: int = 2) -> float:
    """BLEU as in d2l.ai §10.7: ``exp(min(0, 1 - len_label / len_pred)) * prod_n p_n ** (1 / 2**n)``.

    ``p_n`` (n = 1 .. min(k, len_pred)) is the clipped n-gram precision: each n-gram of ``pred``
    counts as a match at most as often as it occurs in ``label``. 1.0 means an exact match; an
    empty prediction scores 0.0 (d2l's formula divides by zero there).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got k={k}")
    if len(label) == 0:
        raise ValueError("label is empty: BLEU needs at least one reference token")
    pred, label = list(pred), list(label)
    if not pred:
        return 0.0
    score = math.exp(min(0.0, 1.0 - len(label) / len(pred)))  # brevity penalty
    for n in range(1, min(k, len(pred)) + 1):
        left = collections.Counter(tuple(label[i : i + n]) for i in range(len(label) - n + 1))
        matches = 0
        for i in range(len(pred) - n + 1):
            gram = tuple(pred[i : i + n])
            if left[gram] > 0:
                matches += 1
                left[gram] -= 1
        score *= (matches / (len(pred) - n + 1)) ** (0.5**n)
    return score


# --8<-- [end:bleu]


@dataclass
class TrainResult:
    """What :func:`train_reverse` measured: training losses and held-out greedy-decoding scores."""

    attention: bool
    losses: list[float]  # masked cross-entropy per step (nats per target token)
    token_accuracy: float  # held-out, greedy decoding, over target tokens incl. EOS
    sequence_accuracy: float  # held-out, whole output exactly right (exact match)
    bleu: float  # held-out, mean BLEU (k = 2) of the outputs up to EOS
    model: EncoderDecoder


# --8<-- [start:train]
def train_reverse(
    attention: bool = True,
    *,
    max_len: int = 8,
    min_len: int = 1,
    vocab_size: int = 12,
    embed_size: int = 16,
    num_hiddens: int = 32,
    steps: int = 300,
    batch_size: int = 64,
    lr: float = 0.01,
    seed: int = 0,
    n_eval: int = 256,
) -> TrainResult:
    """Train a GRU encoder–decoder (with or without attention) on :func:`make_reverse_task` with
    Adam and teacher forcing; evaluate by greedy decoding on held-out sequences (lengths
    ``min_len .. max_len``): token accuracy, exact match and mean BLEU."""
    torch.manual_seed(seed)
    data = torch.Generator().manual_seed(seed)
    decoder_cls = Seq2SeqAttentionDecoder if attention else Seq2SeqDecoder
    model = EncoderDecoder(
        Seq2SeqEncoder(vocab_size, embed_size, num_hiddens), decoder_cls(vocab_size, embed_size, num_hiddens)
    )
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss(ignore_index=PAD)
    losses = []
    for _ in range(steps):
        src, lens, tgt_in, tgt_out = make_reverse_task(batch_size, max_len, vocab_size, min_len=min_len, generator=data)
        loss = loss_fn(model(src, tgt_in, lens).flatten(0, 1), tgt_out.flatten())
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    src, lens, _, tgt_out = make_reverse_task(
        n_eval, max_len, vocab_size, min_len=min_len, generator=torch.Generator().manual_seed(2**31 - 1)
    )
    pred, _ = greedy_decode(model, src, lens, max_len + 1)
    real = tgt_out != PAD
    token_acc = ((pred == tgt_out) & real).sum().item() / real.sum().item()
    seq_acc = ((pred == tgt_out) | ~real).all(1).double().mean().item()
    scores = [bleu(strip_special(p), strip_special(t)) for p, t in zip(pred, tgt_out)]
    return TrainResult(attention, losses, token_acc, seq_acc, sum(scores) / len(scores), model)


# --8<-- [end:train]


# --8<-- [start:compare]
def compare_on_long_inputs(
    max_len: int = 12, min_len: int = 10, steps: int = 300, **kw
) -> tuple[TrainResult, TrainResult]:
    """Same data, seed, sizes and steps for both decoders on long reversals: ``(attention, plain)``.

    The plain decoder must squeeze all ``min_len .. max_len`` tokens into the one vector ``h_T``;
    the attention decoder looks up the source token it needs at every step.
    """
    kw = {"num_hiddens": 32, "batch_size": 64, "lr": 0.02, **kw}
    return tuple(  # type: ignore[return-value]
        train_reverse(attention=a, max_len=max_len, min_len=min_len, steps=steps, **kw) for a in (True, False)
    )


# --8<-- [end:compare]


def _check_sizes(vocab_size: int, embed_size: int, num_hiddens: int, num_layers: int, dropout: float) -> None:
    sizes = {"vocab_size": vocab_size, "embed_size": embed_size, "num_hiddens": num_hiddens}
    for name, v in {**sizes, "num_layers": num_layers}.items():
        if v <= 0:
            raise ValueError(f"{name} must be positive, got {name}={v}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")


def _check_tokens(name: str, ids: Tensor, vocab_size: int) -> None:
    if ids.dim() != 2 or ids.dtype != torch.long:
        raise ValueError(f"{name} must be a (B, T) tensor of int64 token ids, got {tuple(ids.shape)}, {ids.dtype}")
    if ids.size(1) == 0:
        raise ValueError(f"{name} must hold at least one time step, got shape {tuple(ids.shape)}")
    if bool(((ids < 0) | (ids >= vocab_size)).any()):
        raise ValueError(f"{name} holds ids outside [0, vocab_size={vocab_size})")


def _check_lens(valid_lens: Tensor, src: Tensor) -> None:
    if valid_lens.shape != (src.size(0),):
        raise ValueError(f"valid_lens must be (B,) = ({src.size(0)},), got {tuple(valid_lens.shape)}")
    if bool(((valid_lens < 1) | (valid_lens > src.size(1))).any()):
        raise ValueError(f"valid_lens must lie in [1, T={src.size(1)}], got {valid_lens.tolist()}")


if __name__ == "__main__":
    torch.manual_seed(0)
    model = EncoderDecoder(Seq2SeqEncoder(12, 8, 16), Seq2SeqAttentionDecoder(12, 8, 16))
    src, lens, tgt_in, _ = make_reverse_task(2, 5, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        model(src, tgt_in, lens)
    w = model.decoder.attention_weights  # (B, T', T), untrained
    print("source lengths", lens.tolist(), "-> weights of step 1 (zero on padding):")
    for row in w[:, 0]:
        print("  ", [round(x, 3) for x in row.tolist()])
    print("rows sum to 1:", bool(torch.allclose(w.sum(-1), torch.ones(()))))
    print("BLEU('a b c d', 'a b c e') =", round(bleu("abcd", "abce"), 4), "= (3/4)**(1/2) * (2/3)**(1/4)")
    print(
        "full comparison: python -c 'from snippets.attention.bahdanau import compare_on_long_inputs as c; "
        "print([(r.bleu, r.sequence_accuracy) for r in c()])'"
    )
