"""Figures for chapter 11 (BERT and fine-tuning), drawn from the snippets themselves."""

from __future__ import annotations

import torch

from kbsite.figures import figure
from snippets.llm.bert import MASK, SPECIAL_TOKENS, BERTEmbedding, get_tokens_and_segments, mask_tokens


@figure("bert-input-embeddings")
def bert_input_embeddings():
    """Token, segment and position embeddings of ``[CLS] A [SEP] B [SEP]`` and their sum."""
    import matplotlib.pyplot as plt

    tokens, segments = get_tokens_and_segments(["the", "time", "machine"], ["it", "vanished"])
    vocab = {t: i for i, t in enumerate(dict.fromkeys([*SPECIAL_TOKENS, *tokens]))}
    torch.manual_seed(0)
    emb = BERTEmbedding(len(vocab), 8, max_len=16, dtype=torch.float64)
    ids = torch.tensor([[vocab[t] for t in tokens]])
    seg = torch.tensor([segments])
    n = len(tokens)
    with torch.no_grad():
        parts = [
            ("token  E_tok[x]", emb.token(ids)[0]),
            ("segment  E_seg[s]", emb.segment(seg)[0]),
            ("position  E_pos[i]", emb.position(torch.arange(n))),
            ("= input  E", emb(ids, seg)[0]),
        ]
    vmax = max(float(p.abs().max()) for _, p in parts)
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.6), constrained_layout=True)
    labels = [f"{t}\nseg {s} · pos {i}" for i, (t, s) in enumerate(zip(tokens, segments))]
    for ax, (title, m) in zip(axes, parts):
        im = ax.imshow(m.numpy(), cmap="coolwarm", vmin=-vmax, vmax=vmax, aspect="auto")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("embedding dim")
        ax.set_yticks(range(n))
        ax.set_yticklabels(labels if ax is axes[0] else [], fontsize=7)
    fig.colorbar(im, ax=axes, shrink=0.85)
    return fig


@figure("bert-mlm-split")
def bert_mlm_split():
    """Measured selection rate and 80/10/10 split of ``mask_tokens`` on 256 × 128 random tokens."""
    import matplotlib.pyplot as plt

    vocab_size, mask_id, special = 1000, 3, [0, 1, 2, 3]
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, vocab_size, (256, 128), generator=g)
    ids[:, 0], ids[:, -1] = 1, 2  # a [CLS] and a [SEP] per row: never selected
    inputs, labels = mask_tokens(ids, vocab_size, mask_id, special, generator=g)
    sel = labels != -100
    normal = ~torch.isin(ids, torch.tensor(special))
    masked = (inputs[sel] == mask_id).double().mean().item()
    same = (inputs[sel] == ids[sel]).double().mean().item()
    rate = sel[normal].double().mean().item()
    fig, (ax1, ax2) = plt.subplots(
        1, 2, figsize=(10, 3.4), constrained_layout=True, gridspec_kw={"width_ratios": [1, 2]}
    )
    special_rate = sel[~normal].double().mean().item()
    ax1.bar(["ordinary\ntokens", "[CLS]/[SEP]"], [rate, special_rate], color=["tab:blue", "tab:gray"])
    ax1.axhline(0.15, color="k", ls="--", lw=1)
    ax1.text(1, 0.005, f"{special_rate:.0%}", ha="center", fontsize=9)
    ax1.set_title(f"selected: {rate:.2%} (target 15 %)", fontsize=10)
    ax1.set_ylim(0, 0.2)
    shares = [masked, 1 - masked - same, same]
    ax2.bar([f"→ {MASK}", "→ random token", "unchanged"], shares, color=["tab:orange", "tab:green", "tab:purple"])
    for x, (v, target) in enumerate(zip(shares, (0.8, 0.1, 0.1))):
        ax2.text(x, v + 0.02, f"{v:.1%}", ha="center", fontsize=9)
        ax2.hlines(target, x - 0.4, x + 0.4, color="k", ls="--", lw=1)
    ax2.set_title(f"what happens to the {int(sel.sum())} selected positions (dashed: 80/10/10)", fontsize=10)
    ax2.set_ylim(0, 1)
    return fig


@figure("finetune-vs-scratch")
def finetune_vs_scratch():
    """Training loss of the same classifier fine-tuned from a pretrained body vs trained from scratch."""
    import matplotlib.pyplot as plt

    from snippets.llm.finetune import transfer_demo

    curves: dict[str, list[float]] = {}
    res = transfer_demo(
        n_labelled=256,
        pretrain_steps=60,
        finetune_steps=50,
        n_test=300,
        methods=("scratch", "finetuned"),
        curves=curves,
    )
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.4), constrained_layout=True)
    ax1.plot(curves["pretrain"], color="tab:gray")
    ax1.set_title("1. pretraining: next-word loss on unlabelled text", fontsize=10)
    ax1.set_xlabel("step")
    ax1.set_ylabel("cross-entropy")
    for name, color in (("scratch", "tab:red"), ("finetuned", "tab:blue")):
        label = (
            f"{'from scratch' if name == 'scratch' else 'fine-tuned'} (accuracy on 300 test sentences {res[name]:.2f})"
        )
        ax2.plot(curves[name], color=color, label=label)
    ax2.axhline(0.693, color="k", ls=":", lw=1, label="chance (ln 2)")
    ax2.set_title("2. the labelled task: same 256 examples, steps, lr", fontsize=10)
    ax2.set_xlabel("step")
    ax2.legend(fontsize=8)
    return fig
