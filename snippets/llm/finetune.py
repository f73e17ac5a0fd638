"""Pretraining, transfer and fine-tuning: reuse a language model's body for a labelled task.

Reference: Radford et al. 2018 (GPT), §3.2 "Supervised fine-tuning" (a linear head on the last
token's final hidden state); Howard & Ruder 2018 (ULMFiT: discriminative learning rates);
d2l.ai §14.2 (fine-tuning). Pretraining minimises ``L_pre(θ)`` on unlabelled text; fine-tuning
minimises ``L_task(θ, φ)`` on the downstream task's labelled examples, starting from ``θ_pre``
(``φ``: the new head). Freezing keeps ``θ`` fixed (a "linear probe").

Two demos, each compared with the same classifier trained from scratch on the same labelled
examples, steps and learning rate:

- :func:`finetune_demo` (BERT route): a tiny :class:`~snippets.llm.bert.BERTEncoder` pretrained
  with masked language modelling on the characters of The Time Machine, then fine-tuned to tell
  held-out snippets of the book as written from the same snippets with every word spelled
  backwards (Devlin et al. 2019, §3.2: fine-tuning adds one linear layer on the encoder's output).
- :func:`transfer_demo` (GPT route): a :class:`~snippets.llm.gpt.TinyGPT` pretrained as a
  word-level LM on the generated toy corpus, then fine-tuned to tell grammatical sentences from
  ones with two adjacent words swapped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from snippets.data.text import Vocab, is_toy_sentence, make_toy_corpus
from snippets.llm.bert import (
    SPECIAL_TOKENS,
    BERTEncoder,
    BERTModel,
    bert_vocab,
    encode_pairs,
    get_tokens_and_segments,
    pretrain_bert,
    timemachine_paragraphs,
)
from snippets.llm.gpt import TinyGPT, train_lm

__all__ = [
    "freeze",
    "param_groups_with_lr",
    "SequenceClassifier",
    "toy_lm_stream",
    "make_grammaticality_task",
    "finetune",
    "sentence_nll",
    "fit_threshold",
    "accuracy",
    "compare_uses",
    "transfer_demo",
    "text_snippets",
    "reverse_words",
    "encode_snippets",
    "make_reversal_task",
    "finetune_demo",
]


# --8<-- [start:freeze]
def freeze(module: nn.Module) -> nn.Module:
    """Stop training ``module``: its parameters get no gradient and stay exactly as they are."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def param_groups_with_lr(body: nn.Module, head: nn.Module, base_lr: float, head_lr: float) -> list[dict]:
    """Optimizer groups: the pretrained ``body`` at ``base_lr``, the new ``head`` at ``head_lr``.

    Frozen parameters (``requires_grad=False``) are left out, so the optimizer never sees them.
    """
    if base_lr < 0 or head_lr < 0:
        raise ValueError(f"learning rates must be >= 0, got base_lr={base_lr}, head_lr={head_lr}")
    groups = [
        {"params": [p for p in body.parameters() if p.requires_grad], "lr": base_lr},
        {"params": [p for p in head.parameters() if p.requires_grad], "lr": head_lr},
    ]
    return [g for g in groups if g["params"]]


# --8<-- [end:freeze]


# --8<-- [start:classifier]
class SequenceClassifier(nn.Module):
    """A pretrained body + a linear head on its final hidden states.

    ``forward(ids: (B, n), lengths: (B,)) -> logits (B, num_classes)``. Sequences are right-padded.
    The body is a causal :class:`~snippets.llm.gpt.TinyGPT` or a bidirectional
    :class:`~snippets.llm.bert.BERTEncoder`; the encoder gets a ``key_padding_mask`` built from
    ``lengths`` (True = padding, never attended to), the causal LM needs none (no real token
    attends to the padding after it). ``pool="mean"`` averages the hidden states of the real
    tokens; ``pool="last"`` reads each sequence's last real token (GPT's choice); ``pool="cls"``
    reads position 0, the ``[CLS]`` token (BERT's choice; encoder bodies only, since position 0 of a
    causal LM sees nothing but the first token).
    """

    def __init__(
        self, body: TinyGPT | BERTEncoder, num_classes: int, pool: Literal["mean", "last", "cls"] = "mean"
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got num_classes={num_classes}")
        if pool not in ("mean", "last", "cls"):
            raise ValueError(f"pool must be 'mean', 'last' or 'cls', got {pool!r}")
        if isinstance(body, BERTEncoder):
            w = body.embedding.token.weight
        elif isinstance(body, TinyGPT):
            w = body.tok_emb.weight
        else:
            raise ValueError(f"body must be a TinyGPT or a BERTEncoder, got {type(body).__name__}")
        if pool == "cls" and not isinstance(body, BERTEncoder):
            raise ValueError("pool='cls' needs a BERTEncoder body: position 0 of a causal LM sees only itself")
        self.body, self.pool = body, pool
        self.head = nn.Linear(w.size(1), num_classes, device=w.device, dtype=w.dtype)

    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        if lengths.shape != ids.shape[:1] or bool(((lengths < 1) | (lengths > ids.size(1))).any()):
            raise ValueError(f"lengths must be (B,) with values in [1, {ids.size(1)}], got {lengths.tolist()}")
        pad = torch.arange(ids.size(1), device=ids.device) >= lengths[:, None]  # (B, n), True = padding
        if isinstance(self.body, BERTEncoder):
            h = self.body(ids, key_padding_mask=pad)  # (B, n, d_model)
        else:
            h = self.body.features(ids)  # (B, n, d_model)
        if self.pool == "cls":
            return self.head(h[:, 0])
        if self.pool == "last":
            return self.head(h[torch.arange(ids.size(0), device=ids.device), lengths - 1])
        real = (~pad).to(h.dtype)  # (B, n)
        return self.head((h * real[..., None]).sum(dim=1) / lengths[:, None].to(h.dtype))


# --8<-- [end:classifier]


# --8<-- [start:data]
def toy_lm_stream(n_sentences: int, generator: torch.Generator) -> tuple[Tensor, Vocab]:
    """Unlabelled pretraining text: word ids ``(N,)`` of toy sentences, each ended by ``<eos>``."""
    words = [w for s in make_toy_corpus(n_sentences, generator) for w in (*s.split(), "<eos>")]
    vocab = Vocab(words, reserved=["<pad>", "<eos>"])
    return vocab.encode(words), vocab


def make_grammaticality_task(n: int, vocab: Vocab, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Labelled downstream data: ``(ids (n, L), lengths (n,), labels (n,))``, right-padded with
    ``<pad>``, each sentence ended by ``<eos>``. Every second sentence gets two adjacent words
    swapped; the label is 1 when the result is grammatical (checked with the recogniser)."""
    rows, labels = [], []
    for i, sentence in enumerate(make_toy_corpus(n, generator)):
        words = sentence.split()
        if i % 2:
            j = int(torch.randint(0, len(words) - 1, (1,), generator=generator))
            words[j], words[j + 1] = words[j + 1], words[j]
        labels.append(int(is_toy_sentence(" ".join(words))))
        rows.append(vocab.encode([*words, "<eos>"]))
    lengths = torch.tensor([len(r) for r in rows])
    ids = torch.full((n, int(lengths.max())), vocab.token_to_idx["<pad>"], dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
    return ids, lengths, torch.tensor(labels)


# --8<-- [end:data]


# --8<-- [start:finetune]
def finetune(
    model: SequenceClassifier,
    data: tuple[Tensor, Tensor, Tensor],
    steps: int,
    *,
    base_lr: float = 3e-3,
    head_lr: float = 3e-3,
    batch_size: int = 32,
    seed: int = 0,
) -> list[float]:
    """Minimise the task's cross-entropy from the current weights; returns the loss per step."""
    ids, lengths, labels = data
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(param_groups_with_lr(model.body, model.head, base_lr, head_lr), weight_decay=0.01)
    losses = []
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, labels.numel(), (batch_size,), generator=gen).to(ids.device)
        loss = F.cross_entropy(model(ids[idx], lengths[idx]), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    return losses


# --8<-- [end:finetune]


# --8<-- [start:lm_score]
@torch.no_grad()
def sentence_nll(lm: TinyGPT, ids: Tensor, lengths: Tensor, bos_id: int) -> Tensor:
    """Mean negative log-likelihood per token ``(B,)`` of each right-padded sentence under ``lm``,
    each read after a ``bos_id`` token (the pretraining stream's sentence separator)."""
    x = torch.cat([torch.full_like(ids[:, :1], bos_id), ids], dim=1)  # (B, 1 + n)
    logp = torch.log_softmax(lm(x[:, :-1]), dim=-1).gather(-1, x[:, 1:, None]).squeeze(-1)  # (B, n)
    real = torch.arange(ids.size(1), device=ids.device) < lengths[:, None]
    return -(logp * real).sum(dim=1) / lengths


def fit_threshold(scores: Tensor, labels: Tensor) -> float:
    """The threshold ``t`` for which "label 1 iff score <= t" is most accurate on these examples."""
    candidates = scores.sort().values
    acc = ((scores[None, :] <= candidates[:, None]) == labels.bool()[None, :]).double().mean(dim=1)
    return candidates[acc.argmax()].item()


# --8<-- [end:lm_score]


@torch.no_grad()
def accuracy(model: SequenceClassifier, data: tuple[Tensor, Tensor, Tensor]) -> float:
    """Fraction of correctly classified examples."""
    ids, lengths, labels = data
    return _accuracy(model(ids, lengths).argmax(dim=-1), labels)


def _accuracy(predicted: Tensor, labels: Tensor) -> float:
    return (predicted == labels).double().mean().item()


# --8<-- [start:demo]
def compare_uses(
    new_body: Callable[[], TinyGPT | BERTEncoder],
    pretrained: dict[str, Tensor],
    train: tuple[Tensor, Tensor, Tensor],
    test: tuple[Tensor, Tensor, Tensor],
    uses: Sequence[str],
    steps: int,
    lr: float,
    pool: Literal["mean", "last", "cls"],
    seed: int,
    curves: dict[str, list[float]] | None = None,
) -> dict[str, float]:
    """Test accuracy of each use named in ``uses`` (other names are ignored) of the same labelled
    ``train`` examples: ``scratch`` (``new_body()`` as initialised), ``finetuned`` (``new_body()``
    loaded with the ``pretrained`` weights, all trained), ``probe`` (the same, frozen: only the head
    trains). Same head initialisation, steps and learning rate for all; each model's loss per step
    goes into ``curves`` when given."""
    result = {}
    for name in [m for m in ("scratch", "finetuned", "probe") if m in uses]:
        body = new_body()
        if name != "scratch":
            body.load_state_dict(pretrained)  # transfer θ_pre
        if name == "probe":
            freeze(body)
        torch.manual_seed(seed + 3)  # the same head initialisation for all three
        model = SequenceClassifier(body, 2, pool)
        losses = finetune(model, train, steps, base_lr=lr, head_lr=lr, seed=seed)
        result[name] = accuracy(model, test)
        if curves is not None:
            curves[name] = losses
    return result


def transfer_demo(
    n_labelled: int = 64,
    pretrain_steps: int = 150,
    finetune_steps: int = 100,
    *,
    n_pretrain_sentences: int = 2000,
    n_test: int = 1000,
    d_model: int = 32,
    lr: float = 3e-3,
    pool: Literal["mean", "last"] = "mean",
    methods: tuple[str, ...] = ("scratch", "finetuned", "probe", "lm_score"),
    seed: int = 0,
    curves: dict[str, list[float]] | None = None,
) -> dict[str, float]:
    """Test accuracy on the grammaticality task of four uses of the same labelled examples:
    ``scratch`` (random init, all weights trained), ``finetuned`` (pretrained body, all weights
    trained), ``probe`` (pretrained body frozen, only the head trained) — same architecture,
    steps and learning rate ``lr`` — and ``lm_score`` (the frozen pretrained LM's per-token NLL with a
    threshold fitted on the labelled examples). ``methods`` selects which to run. Fixed seeds:
    deterministic. Pass a dict as ``curves`` to receive each trained model's loss per step (and the
    pretraining loss under ``"pretrain"``)."""
    if unknown := set(methods) - {"scratch", "finetuned", "probe", "lm_score"}:
        raise ValueError(f"methods must be among scratch, finetuned, probe, lm_score; got {sorted(unknown)}")
    stream, vocab = toy_lm_stream(n_pretrain_sentences, torch.Generator().manual_seed(seed))
    train = make_grammaticality_task(n_labelled, vocab, torch.Generator().manual_seed(seed + 1))
    test = make_grammaticality_task(n_test, vocab, torch.Generator().manual_seed(seed + 2))

    def new_body() -> TinyGPT:
        torch.manual_seed(seed)
        return TinyGPT(len(vocab), d_model, 2, 4, 2, max_len=64)

    lm = new_body()
    lm_losses = train_lm(lm, stream, pretrain_steps, batch_size=32, seq_len=32, lr=lr, seed=seed)  # pretrain
    result = {"lm_loss_start": lm_losses[0], "lm_loss_end": sum(lm_losses[-10:]) / 10}
    if curves is not None:
        curves["pretrain"] = lm_losses
    result |= compare_uses(new_body, lm.state_dict(), train, test, methods, finetune_steps, lr, pool, seed, curves)
    if "lm_score" in methods:  # no training at all: threshold the pretrained LM's surprise
        eos = vocab.token_to_idx["<eos>"]
        threshold = fit_threshold(sentence_nll(lm, train[0], train[1], eos), train[2])
        result["lm_score"] = _accuracy((sentence_nll(lm, test[0], test[1], eos) <= threshold).long(), test[2])
    result["majority"] = max(test[2].double().mean().item(), 1 - test[2].double().mean().item())
    return result


# --8<-- [end:demo]


# --8<-- [start:mlm_data]
def text_snippets(paragraphs: Sequence[Sequence[Sequence[str]]], width: int) -> list[str]:
    """Cut each paragraph's running text into consecutive snippets of whole words joined by single
    spaces, each at most ``width`` characters (a longer word is cut to its first ``width`` letters);
    a snippet never spans two paragraphs. ``paragraphs``: lists of sentences of words, as from
    :func:`~snippets.llm.bert.timemachine_paragraphs`."""
    if width < 1:
        raise ValueError(f"width must be >= 1, got width={width}")
    snippets = []
    for paragraph in paragraphs:
        current = ""
        for word in (w[:width] for sentence in paragraph for w in sentence):
            if current and len(current) + 1 + len(word) > width:
                snippets.append(current)
                current = word
            else:
                current = f"{current} {word}" if current else word
        if current:
            snippets.append(current)
    return snippets


def reverse_words(text: str) -> str:
    """Spell every word of ``text`` backwards, keeping the words' order: ``"the time" -> "eht emit"``."""
    return " ".join(word[::-1] for word in text.split(" "))


def encode_snippets(
    snippets: Sequence[str], vocab: Vocab, *, device: torch.device | None = None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Each snippet as characters ``[CLS] c_1 ... c_m [SEP]``, right-padded with ``[PAD]``:
    ``(tokens (N, L), segments (N, L), key_padding_mask (N, L), is_next (N,))``, the input of
    :func:`~snippets.llm.bert.pretrain_bert` (one segment; ``is_next`` is all 0 and unused with
    ``nsp_weight=0``)."""
    if not snippets:
        raise ValueError("snippets must not be empty")
    if empty := [i for i, text in enumerate(snippets) if not text]:
        raise ValueError(f"snippets must not be empty strings, got one at index {empty[0]}")
    pairs = [(*get_tokens_and_segments(list(text)), False) for text in snippets]
    return encode_pairs(pairs, vocab, device=device)


def make_reversal_task(
    snippets: Sequence[str], vocab: Vocab, generator: torch.Generator, *, device: torch.device | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Labelled downstream data: ``(ids (n, L), lengths (n,), labels (n,))`` in the order of
    ``snippets``, characters as in :func:`encode_snippets`. A random half (exactly ``n // 2``,
    drawn with ``generator``) get every word spelled backwards, label 0; the others stay as
    written, label 1. Both classes use the same letters, so only their order tells them apart."""
    if len(snippets) < 2:
        raise ValueError(f"need at least 2 snippets (one of each class), got {len(snippets)}")
    if same := [text for text in snippets if reverse_words(text) == text]:
        raise ValueError(f"snippets must change when their words are reversed, got {same[0]!r}")
    n = len(snippets)
    labels = torch.ones(n, dtype=torch.long)
    labels[torch.randperm(n, generator=generator)[: n // 2]] = 0
    texts = [text if y else reverse_words(text) for text, y in zip(snippets, labels.tolist())]
    tokens, _, pad, _ = encode_snippets(texts, vocab, device=device)
    return tokens, (~pad).sum(dim=1), labels.to(tokens.device)


# --8<-- [end:mlm_data]


# --8<-- [start:mlm_demo]
def finetune_demo(
    n_labelled: int = 256,
    pretrain_steps: int = 300,
    finetune_steps: int = 100,
    *,
    n_test: int = 1000,
    width: int = 16,
    d_model: int = 32,
    num_layers: int = 1,
    num_heads: int = 2,
    d_ff: int = 64,
    pretrain_batch_size: int = 128,
    pretrain_lr: float = 1e-2,
    lr: float = 3e-3,
    pool: Literal["mean", "last", "cls"] = "mean",
    methods: tuple[str, ...] = ("scratch", "finetuned", "probe"),
    seed: int = 0,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
    curves: dict[str, list[float]] | None = None,
) -> dict[str, float]:
    """MLM pretraining on The Time Machine, then a labelled task on held-out text.

    Every 4th paragraph of the book (the 1st, 5th, ...) is held out. A character-level BERT encoder
    is pretrained with MLM only (``nsp_weight=0``) on snippets of at most ``width`` characters of
    the other paragraphs; the task (:func:`make_reversal_task`) is built from held-out snippets:
    ``n_labelled`` for training, ``n_test`` for testing. Returns the test accuracies of ``scratch``
    (the pretraining's random init, all weights trained), ``finetuned`` (pretrained encoder, all
    weights trained) and ``probe`` (pretrained encoder frozen, head only) — same architecture,
    initial head, labelled examples, steps and learning rate ``lr`` — and the MLM loss at the start
    and end of pretraining, with ``mlm_loss_unigram``: the entropy of the character frequencies,
    the loss of a guess that ignores the context. ``methods`` selects which models to train. Fixed
    seeds: deterministic on a given device. Pass a dict as ``curves`` to receive the MLM loss per
    pretraining step (``"pretrain"``) and each model's task loss per step.
    """
    if unknown := set(methods) - {"scratch", "finetuned", "probe"}:
        raise ValueError(f"methods must be among scratch, finetuned, probe; got {sorted(unknown)}")
    if n_labelled < 2 or n_test < 2:
        raise ValueError(f"n_labelled and n_test must be >= 2, got n_labelled={n_labelled}, n_test={n_test}")
    paragraphs = timemachine_paragraphs()
    pretrain_text = text_snippets([p for i, p in enumerate(paragraphs) if i % 4], width)
    held_out = [s for s in text_snippets(paragraphs[::4], width) if reverse_words(s) != s]
    if n_labelled + n_test > len(held_out):
        raise ValueError(
            f"n_labelled + n_test = {n_labelled + n_test} exceeds the {len(held_out)} held-out snippets "
            f"of width={width}"
        )
    vocab = bert_vocab([[list(s) for s in pretrain_text]])  # [PAD] [CLS] [SEP] [MASK] + characters
    order = torch.randperm(len(held_out), generator=torch.Generator().manual_seed(seed + 1)).tolist()
    chosen = [held_out[i] for i in order[: n_labelled + n_test]]
    task_gen = torch.Generator().manual_seed(seed + 2)
    train = make_reversal_task(chosen[:n_labelled], vocab, task_gen, device=device)
    test = make_reversal_task(chosen[n_labelled:], vocab, task_gen, device=device)
    sizes = (len(vocab), d_model, num_layers, num_heads, d_ff)
    kw = {"max_len": width + 2, "dropout": 0.0, "device": device, "dtype": dtype}

    torch.manual_seed(seed)
    bert = BERTModel(*sizes, **kw)
    data = encode_snippets(pretrain_text, vocab, device=device)
    steps = pretrain_bert(  # θ_pre = argmin L_MLM, without NSP
        bert, data, vocab, pretrain_steps, batch_size=pretrain_batch_size, lr=pretrain_lr, nsp_weight=0, seed=seed
    )
    losses = [mlm for mlm, _ in steps]
    tail = losses[-min(10, len(losses)) :]
    counts = torch.bincount(data[0].flatten().cpu(), minlength=len(vocab)).double()
    counts[[vocab.token_to_idx[t] for t in SPECIAL_TOKENS]] = 0  # never masked, never predicted
    freq = counts[counts > 0] / counts.sum()
    result = {
        "mlm_loss_start": losses[0],
        "mlm_loss_end": sum(tail) / len(tail),
        "mlm_loss_unigram": -(freq * freq.log()).sum().item(),  # knowing only the letter frequencies
    }
    if curves is not None:
        curves["pretrain"] = losses

    def new_body() -> BERTEncoder:
        torch.manual_seed(seed)  # the same initial weights the pretraining started from
        return BERTEncoder(*sizes, **kw)

    result |= compare_uses(
        new_body, bert.encoder.state_dict(), train, test, methods, finetune_steps, lr, pool, seed, curves
    )
    return result


# --8<-- [end:mlm_demo]


if __name__ == "__main__":
    import sys

    routes = sys.argv[1:] or ["mlm", "gpt"]
    if unknown := set(routes) - {"mlm", "gpt"}:
        sys.exit(f"usage: python -m snippets.llm.finetune [mlm] [gpt]; unknown route(s) {sorted(unknown)}")
    if "mlm" in routes:
        res = finetune_demo()
        print(
            f"BERT route: pretraining MLM loss {res['mlm_loss_start']:.2f} -> {res['mlm_loss_end']:.2f} "
            f"(letter frequencies alone: {res['mlm_loss_unigram']:.2f})"
        )
        print(
            f"test accuracy: scratch {res['scratch']:.3f}, fine-tuned {res['finetuned']:.3f}, "
            f"frozen probe {res['probe']:.3f} (chance 0.500)"
        )
    if "gpt" in routes:
        res = transfer_demo(n_labelled=256, pretrain_steps=60, finetune_steps=50, n_test=500)
        print(f"GPT route: pretraining LM loss {res['lm_loss_start']:.2f} -> {res['lm_loss_end']:.2f}")
        print(
            f"test accuracy: scratch {res['scratch']:.3f}, fine-tuned {res['finetuned']:.3f}, "
            f"frozen probe {res['probe']:.3f}, LM score {res['lm_score']:.3f} (majority {res['majority']:.3f})"
        )
