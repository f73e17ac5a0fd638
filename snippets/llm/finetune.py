"""Pretraining, transfer and fine-tuning: reuse a language model's body for a labelled task.

Reference: Radford et al. 2018 (GPT), §3.2 "Supervised fine-tuning" (a linear head on the last
token's final hidden state); Howard & Ruder 2018 (ULMFiT: discriminative learning rates);
d2l.ai §14.2 (fine-tuning). Pretraining minimises ``L_pre(θ)`` on unlabelled text; fine-tuning
minimises ``L_task(θ, φ)`` on the downstream task's labelled examples, starting from ``θ_pre``
(``φ``: the new head). Freezing keeps ``θ`` fixed (a "linear probe").

The demo: a :class:`~snippets.llm.gpt.TinyGPT` pretrained as a word-level LM on the generated toy
corpus, then fine-tuned to tell grammatical sentences from ones with two adjacent words swapped,
compared with the same classifier trained from scratch on the same labelled examples and steps.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from snippets.data.text import Vocab, is_toy_sentence, make_toy_corpus
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
    "transfer_demo",
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
    """A pretrained causal LM body + a linear head on its final hidden states.

    ``forward(ids: (B, n), lengths: (B,)) -> logits (B, num_classes)``. Sequences are right-padded.
    ``pool="last"`` reads the hidden state of each sequence's last real token (GPT's choice; causal
    attention means it never sees the padding after it); ``pool="mean"`` averages the hidden states
    of the real tokens.
    """

    def __init__(self, body: TinyGPT, num_classes: int, pool: Literal["mean", "last"] = "mean") -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got num_classes={num_classes}")
        if pool not in ("mean", "last"):
            raise ValueError(f"pool must be 'mean' or 'last', got {pool!r}")
        self.body, self.pool = body, pool
        w = body.tok_emb.weight
        self.head = nn.Linear(w.size(1), num_classes, device=w.device, dtype=w.dtype)

    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        if lengths.shape != ids.shape[:1] or bool(((lengths < 1) | (lengths > ids.size(1))).any()):
            raise ValueError(f"lengths must be (B,) with values in [1, {ids.size(1)}], got {lengths.tolist()}")
        h = self.body.features(ids)  # (B, n, d_model)
        if self.pool == "last":
            return self.head(h[torch.arange(ids.size(0), device=ids.device), lengths - 1])
        real = (torch.arange(ids.size(1), device=ids.device) < lengths[:, None]).to(h.dtype)  # (B, n)
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
    for name in [m for m in ("scratch", "finetuned", "probe") if m in methods]:
        body = new_body()
        if name != "scratch":
            body.load_state_dict(lm.state_dict())  # transfer θ_pre
        if name == "probe":
            freeze(body)
        torch.manual_seed(seed + 3)  # the same head initialisation for all three
        model = SequenceClassifier(body, 2, pool)
        losses = finetune(model, train, finetune_steps, base_lr=lr, head_lr=lr, seed=seed)
        result[name] = accuracy(model, test)
        if curves is not None:
            curves[name] = losses
    if "lm_score" in methods:  # no training at all: threshold the pretrained LM's surprise
        eos = vocab.token_to_idx["<eos>"]
        threshold = fit_threshold(sentence_nll(lm, train[0], train[1], eos), train[2])
        result["lm_score"] = _accuracy((sentence_nll(lm, test[0], test[1], eos) <= threshold).long(), test[2])
    result["majority"] = max(test[2].double().mean().item(), 1 - test[2].double().mean().item())
    return result


# --8<-- [end:demo]


if __name__ == "__main__":
    res = transfer_demo(n_labelled=256, pretrain_steps=60, finetune_steps=50, n_test=500)
    print(f"pretraining LM loss {res['lm_loss_start']:.2f} -> {res['lm_loss_end']:.2f}")
    print(
        f"test accuracy: scratch {res['scratch']:.3f}, fine-tuned {res['finetuned']:.3f}, "
        f"frozen probe {res['probe']:.3f}, LM score {res['lm_score']:.3f} (majority {res['majority']:.3f})"
    )
