"""BERT from scratch: input representation, the encoder, and its two pretraining tasks (MLM and NSP).

Reference: Devlin et al. 2019, "BERT: Pre-training of Deep Bidirectional Transformers for Language
Understanding", §3.1 (input ``[CLS] A [SEP] B [SEP]``, token + segment + learned position embeddings,
Figure 2), §3.1 Task #1 (masked LM: 15 % of positions, of those 80 % ``[MASK]``, 10 % random,
10 % unchanged) and Task #2 (next-sentence prediction, 50 % IsNext); d2l.ai §15.8–15.10. The
encoder is a stack of post-LN :class:`~snippets.transformer.layers.EncoderLayer` with GELU, the same
math as ``nn.TransformerEncoder(activation="gelu", batch_first=True)``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from snippets.data.text import TIMEMACHINE, Vocab, clean_text
from snippets.transformer.layers import EncoderLayer

__all__ = [
    "CLS",
    "SEP",
    "PAD",
    "MASK",
    "SPECIAL_TOKENS",
    "get_tokens_and_segments",
    "BERTEmbedding",
    "BERTEncoder",
    "mask_tokens",
    "MaskLM",
    "mlm_loss",
    "make_nsp_pairs",
    "NextSentencePred",
    "BERTModel",
    "bert_vocab",
    "encode_pairs",
    "timemachine_paragraphs",
    "pretrain_bert",
]

CLS, SEP, PAD, MASK = "[CLS]", "[SEP]", "[PAD]", "[MASK]"
SPECIAL_TOKENS = (PAD, CLS, SEP, MASK)
IGNORE_INDEX = -100  # the label of positions the MLM loss skips (F.cross_entropy's default ignore_index)


# --8<-- [start:tokens_segments]
def get_tokens_and_segments(
    tokens_a: Sequence[str], tokens_b: Sequence[str] | None = None
) -> tuple[list[str], list[int]]:
    """``[CLS] A [SEP]`` (one sentence) or ``[CLS] A [SEP] B [SEP]`` (a pair), and segment ids:
    0 for ``[CLS]``, A and the first ``[SEP]``; 1 for B and the last ``[SEP]``."""
    if not tokens_a:
        raise ValueError("tokens_a must not be empty")
    if tokens_b is not None and not tokens_b:
        raise ValueError("tokens_b must be None (one sentence) or non-empty, got []")
    if bad := [t for t in (*tokens_a, *(tokens_b or ())) if t in SPECIAL_TOKENS]:
        raise ValueError(f"tokens must not contain special tokens {SPECIAL_TOKENS}, got {bad}")
    tokens = [CLS, *tokens_a, SEP]
    segments = [0] * len(tokens)
    if tokens_b is not None:
        tokens += [*tokens_b, SEP]
        segments += [1] * (len(tokens_b) + 1)
    return tokens, segments


# --8<-- [end:tokens_segments]


# --8<-- [start:embedding]
class BERTEmbedding(nn.Module):
    """``E = E_tok[tokens] + E_seg[segments] + E_pos[0..L-1]``: three learned tables, summed.

    ``forward(tokens: (B, L), segments: (B, L) | None) -> (B, L, d_model)``; ``segments=None``
    means all zeros (one sentence). Unlike the Transformer's fixed sinusoidal encoding, the position
    table ``E_pos`` is an ordinary trained ``nn.Embedding(max_len, d_model)``, so ``L <= max_len``.
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        max_len: int = 512,
        num_segments: int = 2,
        *,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if min(vocab_size, d_model, max_len, num_segments) <= 0:
            raise ValueError(
                f"vocab_size, d_model, max_len and num_segments must be positive, got {vocab_size}, "
                f"{d_model}, {max_len}, {num_segments}"
            )
        kw = {"device": device, "dtype": dtype}
        self.max_len = max_len
        self.token = nn.Embedding(vocab_size, d_model, **kw)
        self.segment = nn.Embedding(num_segments, d_model, **kw)
        self.position = nn.Embedding(max_len, d_model, **kw)  # learned, not sinusoidal

    def forward(self, tokens: Tensor, segments: Tensor | None = None) -> Tensor:
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be (B, L), got shape {tuple(tokens.shape)}")
        if tokens.size(1) > self.max_len:
            raise ValueError(f"sequence length {tokens.size(1)} exceeds max_len={self.max_len}")
        segments = torch.zeros_like(tokens) if segments is None else segments
        if segments.shape != tokens.shape:
            raise ValueError(f"segments must have shape {tuple(tokens.shape)}, got {tuple(segments.shape)}")
        for name, ids, table in (("tokens", tokens, self.token), ("segments", segments, self.segment)):
            if ids.numel() and not (0 <= int(ids.min()) and int(ids.max()) < table.num_embeddings):
                raise ValueError(f"{name} must lie in [0, {table.num_embeddings}), got [{ids.min()}, {ids.max()}]")
        positions = torch.arange(tokens.size(1), device=tokens.device)  # (L,), broadcast over the batch
        return self.token(tokens) + self.segment(segments) + self.position(positions)


# --8<-- [end:embedding]


# --8<-- [start:encoder]
class BERTEncoder(nn.Module):
    """Embeddings → LayerNorm → ``num_layers`` × post-LN :class:`EncoderLayer` with GELU.

    ``forward(tokens: (B, L), segments: (B, L) | None, key_padding_mask: (B, L) | None)`` →
    ``(B, L, d_model)``, one contextual vector per token (row 0 is ``[CLS]``). ``key_padding_mask``
    follows PyTorch: True = padding, never attended to. Like BERT (and unlike
    ``nn.TransformerEncoder(norm=...)``) there is no final LayerNorm; the embedding sum is
    normalised (and dropped out) before the first layer. BERT-base: 12 layers, d_model 768,
    12 heads, d_ff 3072, max_len 512, LayerNorm eps 1e-12.
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int = 768,
        num_layers: int = 12,
        num_heads: int = 12,
        d_ff: int = 3072,
        max_len: int = 512,
        dropout: float = 0.1,
        layer_norm_eps: float = 1e-12,
        *,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got num_layers={num_layers}")
        kw = {"device": device, "dtype": dtype}
        self.embedding = BERTEmbedding(vocab_size, d_model, max_len, **kw)
        self.embed_norm = nn.LayerNorm(d_model, eps=layer_norm_eps, **kw)
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            EncoderLayer(d_model, num_heads, d_ff, dropout, "gelu", layer_norm_eps, norm_first=False, **kw)
            for _ in range(num_layers)
        )

    def forward(self, tokens: Tensor, segments: Tensor | None = None, key_padding_mask: Tensor | None = None) -> Tensor:
        x = self.dropout(self.embed_norm(self.embedding(tokens, segments)))  # (B, L, d_model)
        for layer in self.layers:
            x = layer(x, src_key_padding_mask=key_padding_mask)
        return x

    # --8<-- [end:encoder]

    @torch.no_grad()
    def load_from_torch(self, ref: nn.TransformerEncoder) -> BERTEncoder:
        """Copy the layers of a GELU ``nn.TransformerEncoder`` (post-LN, no final norm) into ours."""
        if len(ref.layers) != len(self.layers) or ref.norm is not None:
            raise ValueError(
                f"need {len(self.layers)} layers and no final norm, got {len(ref.layers)} layers, norm={ref.norm}"
            )
        for ours, theirs in zip(self.layers, ref.layers):
            if theirs.activation_relu_or_gelu != 2:
                raise ValueError("the reference layers must use activation='gelu'")
            ours.load_from_torch(theirs)
        return self


# --8<-- [start:mask_tokens]
def mask_tokens(
    ids: Tensor,
    vocab_size: int,
    mask_id: int,
    special_ids: Sequence[int],
    p: float = 0.15,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """BERT's masking for the MLM task: ``ids: (..., L)`` → ``(inputs, labels)``, same shape.

    Every position whose token is not in ``special_ids`` (nor ``mask_id``) is selected independently
    with probability ``p``. A selected position becomes ``mask_id`` with probability 0.8, a random
    non-special token with probability 0.1 (which may, by chance, be the original one), and stays
    unchanged with probability 0.1; its label is the original token. Unselected positions keep their
    token and get the label ``-100`` (``F.cross_entropy``'s ``ignore_index``).
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got p={p}")
    if ids.dtype != torch.long:
        raise ValueError(f"ids must be int64 token ids, got {ids.dtype}")
    if not 0 <= mask_id < vocab_size:
        raise ValueError(f"mask_id={mask_id} must lie in [0, vocab_size={vocab_size})")
    if ids.numel() and not (0 <= int(ids.min()) and int(ids.max()) < vocab_size):
        raise ValueError(f"ids must lie in [0, vocab_size={vocab_size}), got [{ids.min()}, {ids.max()}]")
    special = torch.tensor(sorted({*special_ids, mask_id}), device=ids.device)
    if bool(((special < 0) | (special >= vocab_size)).any()):
        raise ValueError(f"special_ids must lie in [0, vocab_size={vocab_size}), got {list(special_ids)}")
    normal = torch.ones(vocab_size, dtype=torch.bool, device=ids.device)
    normal[special] = False
    candidates = normal.nonzero().squeeze(1)  # the ids a random replacement is drawn from
    if candidates.numel() == 0:
        raise ValueError("every id is special: there is no token to predict or to draw")

    draw_on = generator.device if generator is not None else ids.device
    u_select = torch.rand(ids.shape, generator=generator, device=draw_on).to(ids.device)  # selected?
    u_how = torch.rand(ids.shape, generator=generator, device=draw_on).to(ids.device)  # which of 80/10/10
    pick = torch.randint(0, candidates.numel(), ids.shape, generator=generator, device=draw_on)
    random_ids = candidates[pick.to(ids.device)]
    selected = normal[ids] & (u_select < p)  # special tokens are never selected
    inputs = torch.where(selected & (u_how < 0.8), mask_id, ids)  # 80 %: [MASK]
    inputs = torch.where(selected & (u_how >= 0.8) & (u_how < 0.9), random_ids, inputs)  # 10 %: random token
    labels = torch.where(selected, ids, IGNORE_INDEX)  # (the other 10 % keep their token)
    return inputs, labels


# --8<-- [end:mask_tokens]


# --8<-- [start:mlm_head]
class MaskLM(nn.Module):
    """MLM head: ``Linear → GELU → LayerNorm → Linear(d_model, vocab_size)`` on every position.

    ``forward(h: (B, L, d_model)) -> logits (B, L, vocab_size)``. (BERT also ties the last weight
    to the token embedding; here it is a separate matrix.)
    """

    def __init__(self, vocab_size: int, d_model: int, layer_norm_eps: float = 1e-12, **kw) -> None:
        super().__init__()
        self.transform = nn.Sequential(
            nn.Linear(d_model, d_model, **kw), nn.GELU(), nn.LayerNorm(d_model, eps=layer_norm_eps, **kw)
        )
        self.decoder = nn.Linear(d_model, vocab_size, **kw)

    def forward(self, h: Tensor) -> Tensor:
        return self.decoder(self.transform(h))


def mlm_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """``-mean_{i in M} log P(x_i | x~)`` over the selected positions ``M = {labels != -100}``.

    ``logits: (B, L, V)``, ``labels: (B, L)``; equal to ``F.cross_entropy(logits.flatten(0, 1),
    labels.flatten(), ignore_index=-100)``, except that an empty ``M`` raises instead of giving NaN.
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} do not match")
    chosen = labels != IGNORE_INDEX  # (B, L)
    if not bool(chosen.any()):
        raise ValueError("no position is selected (all labels are -100): the MLM loss is undefined")
    logp = torch.log_softmax(logits[chosen], dim=-1)  # (|M|, V)
    return -logp.gather(1, labels[chosen][:, None]).mean()


# --8<-- [end:mlm_head]


# --8<-- [start:nsp_head]
class NextSentencePred(nn.Module):
    """NSP head on ``[CLS]``: ``P(IsNext) = softmax(W tanh(W_p h_[CLS] + b_p))``.

    ``forward(h: (B, L, d_model)) -> logits (B, 2)``; class 1 = IsNext, 0 = NotNext. The
    ``Linear + tanh`` is BERT's "pooler".
    """

    def __init__(self, d_model: int, **kw) -> None:
        super().__init__()
        self.pooler = nn.Linear(d_model, d_model, **kw)
        self.output = nn.Linear(d_model, 2, **kw)

    def forward(self, h: Tensor) -> Tensor:
        return self.output(torch.tanh(self.pooler(h[:, 0])))  # row 0 is [CLS]


# --8<-- [end:nsp_head]


# --8<-- [start:nsp_pairs]
def make_nsp_pairs(
    paragraphs: Sequence[Sequence[Sequence[str]]], generator: torch.Generator | None = None, max_len: int = 512
) -> list[tuple[list[str], list[int], bool]]:
    """NSP examples ``(tokens, segments, is_next)`` from ``paragraphs`` (lists of tokenised sentences).

    For each pair of consecutive sentences ``(A, B)`` of a paragraph a fair coin decides: keep ``B``
    (``is_next=True``), or replace it by a random sentence of *another* paragraph (``False``). Pairs
    longer than ``max_len`` (with ``[CLS]`` and two ``[SEP]``) are truncated, the longer sentence
    losing its last token first, as in BERT's ``truncate_seq_pair``.
    """
    sentences = [(i, s) for i, par in enumerate(paragraphs) for s in par if s]
    if len({i for i, _ in sentences}) < 2:
        raise ValueError("make_nsp_pairs needs at least 2 paragraphs with non-empty sentences")
    if max_len < 5:
        raise ValueError(f"max_len must be >= 5 ([CLS] a [SEP] b [SEP]), got max_len={max_len}")
    consecutive = [(i, list(a), list(b)) for i, par in enumerate(paragraphs) for a, b in zip(par, par[1:]) if a and b]
    if not consecutive:
        raise ValueError("no paragraph has two consecutive non-empty sentences: no NSP pair to make")
    coins = torch.rand(len(consecutive), generator=generator).lt(0.5).tolist()
    picks = torch.randint(0, len(sentences), (len(consecutive), 16), generator=generator).tolist()
    pairs = []
    for (i, a, b), is_next, tries in zip(consecutive, coins, picks):
        if not is_next:  # a random sentence from a different paragraph (16 tries, then any sentence)
            j = next((j for j in tries if sentences[j][0] != i), tries[0])
            b = list(sentences[j][1])
        while len(a) + len(b) + 3 > max_len:
            (a if len(a) > len(b) else b).pop()
        pairs.append((*get_tokens_and_segments(a, b), is_next))
    return pairs


# --8<-- [end:nsp_pairs]


# --8<-- [start:model]
class BERTModel(nn.Module):
    """:class:`BERTEncoder` + :class:`MaskLM` + :class:`NextSentencePred`.

    ``forward(tokens, segments, key_padding_mask)`` → ``(h (B, L, d), mlm_logits (B, L, V),
    nsp_logits (B, 2))``.
    """

    def __init__(self, vocab_size: int, d_model: int, num_layers: int, num_heads: int, d_ff: int, **kw) -> None:
        super().__init__()
        dk = {k: kw[k] for k in ("device", "dtype") if k in kw}
        self.encoder = BERTEncoder(vocab_size, d_model, num_layers, num_heads, d_ff, **kw)
        self.mlm = MaskLM(vocab_size, d_model, **dk)
        self.nsp = NextSentencePred(d_model, **dk)

    def forward(
        self, tokens: Tensor, segments: Tensor | None = None, key_padding_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        h = self.encoder(tokens, segments, key_padding_mask)
        return h, self.mlm(h), self.nsp(h)


# --8<-- [end:model]


def bert_vocab(paragraphs: Sequence[Sequence[Sequence[str]]], min_freq: int = 1) -> Vocab:
    """Word vocabulary with ``<unk>`` = 0 and the special tokens ``[PAD] [CLS] [SEP] [MASK]`` = 1..4."""
    return Vocab((w for par in paragraphs for s in par for w in s), min_freq, reserved=SPECIAL_TOKENS)


def encode_pairs(
    pairs: Sequence[tuple[list[str], list[int], bool]], vocab: Vocab, *, device: torch.device | None = None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Right-pad NSP examples into ``(tokens (N, L), segments (N, L), key_padding_mask (N, L),
    is_next (N,))``; padding is ``[PAD]`` with segment 0 and mask True."""
    if not pairs:
        raise ValueError("pairs must not be empty")
    n, length = len(pairs), max(len(t) for t, _, _ in pairs)
    tokens = torch.full((n, length), vocab.token_to_idx[PAD], dtype=torch.long)
    segments = torch.zeros(n, length, dtype=torch.long)
    for r, (toks, segs, _) in enumerate(pairs):
        tokens[r, : len(toks)] = vocab.encode(toks)
        segments[r, : len(segs)] = torch.tensor(segs)
    pad = tokens == vocab.token_to_idx[PAD]
    is_next = torch.tensor([nxt for _, _, nxt in pairs], dtype=torch.long)
    return tokens.to(device), segments.to(device), pad.to(device), is_next.to(device)


def timemachine_paragraphs(path: str | Path | None = None) -> list[list[list[str]]]:
    """The Time Machine as paragraphs (blank-line separated) of sentences (split at ``. ! ?``) of
    lower-case words; paragraphs with fewer than 2 sentences are dropped (no NSP pair in them)."""
    raw = Path(TIMEMACHINE if path is None else path).read_text(encoding="utf-8")
    paragraphs = []
    for block in re.split(r"\n\s*\n", raw):
        sentences = [clean_text(s).split() for s in re.split(r"[.!?]+", block)]
        sentences = [s for s in sentences if s]
        if len(sentences) >= 2:
            paragraphs.append(sentences)
    return paragraphs


# --8<-- [start:pretrain]
def pretrain_bert(
    model: BERTModel,
    data: tuple[Tensor, Tensor, Tensor, Tensor],
    vocab: Vocab,
    steps: int,
    *,
    batch_size: int = 32,
    lr: float = 1e-3,
    nsp_weight: float = 1.0,
    seed: int = 0,
) -> list[tuple[float, float]]:
    """Minimise ``L_MLM + nsp_weight * L_NSP`` with AdamW on random batches of ``data`` (from
    :func:`encode_pairs`), re-masking each batch afresh; returns ``(mlm_loss, nsp_loss)`` per step.
    ``nsp_weight=0`` is RoBERTa's recipe (MLM only; the NSP head then gets no gradient)."""
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got steps={steps}, batch_size={batch_size}")
    if nsp_weight < 0:
        raise ValueError(f"nsp_weight must be >= 0, got nsp_weight={nsp_weight}")
    tokens, segments, pad, is_next = data
    gen = torch.Generator().manual_seed(seed)
    special = [vocab.token_to_idx[t] for t in SPECIAL_TOKENS]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    losses = []
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, tokens.size(0), (batch_size,), generator=gen).to(tokens.device)
        inputs, labels = mask_tokens(tokens[idx], len(vocab), vocab.token_to_idx[MASK], special, generator=gen)
        _, mlm_logits, nsp_logits = model(inputs, segments[idx], pad[idx])
        l_mlm, l_nsp = mlm_loss(mlm_logits, labels), F.cross_entropy(nsp_logits, is_next[idx])
        opt.zero_grad()
        (l_mlm if nsp_weight == 0 else l_mlm + nsp_weight * l_nsp).backward()  # 0: NSP not in the graph
        opt.step()
        losses.append((l_mlm.item(), l_nsp.item()))
    model.eval()
    return losses


# --8<-- [end:pretrain]


if __name__ == "__main__":
    tokens, segments = get_tokens_and_segments(["the", "time", "machine"], ["it", "vanished"])
    print(" ".join(tokens), segments)
    paragraphs = timemachine_paragraphs()[:60]
    vocab = bert_vocab(paragraphs)
    data = encode_pairs(make_nsp_pairs(paragraphs, torch.Generator().manual_seed(0), max_len=48), vocab)
    torch.manual_seed(0)
    model = BERTModel(len(vocab), 32, 2, 2, 64, max_len=48, dropout=0.0)
    losses = pretrain_bert(model, data, vocab, 30, batch_size=16, lr=3e-3)
    print(f"{data[0].shape[0]} NSP pairs; MLM loss {losses[0][0]:.2f} -> {losses[-1][0]:.2f}")
