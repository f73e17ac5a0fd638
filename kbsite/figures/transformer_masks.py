"""Figures for chapter 10 (Transformer): the three attentions, masks, cross-attention, training vs inference."""

from __future__ import annotations

import torch

from kbsite.figures import figure
from snippets.transformer.masks import causal_mask, combine_masks, padding_mask

F64 = torch.float64


def _sharp_mha(d_model: int, heads: int, seed: int):
    from snippets.attention.multihead import MultiHeadAttention

    torch.manual_seed(seed)
    mha = MultiHeadAttention(d_model, heads, dtype=F64)
    with torch.no_grad():
        for lin in (mha.q_proj, mha.k_proj):
            lin.weight.mul_(2.5)  # sharper, more readable patterns
    return mha


@figure("transformer-attention-types")
def attention_types():
    """Weights of one multi-head attention module used as global self-, causal self- and cross-attention."""
    import matplotlib.pyplot as plt

    from snippets.transformer.attention_types import causal_self_attention, cross_attention, global_self_attention
    from snippets.transformer.masks import keep_to_ignore

    mha = _sharp_mha(16, 2, seed=1)
    s, t = 7, 5
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, s, 16, generator=g, dtype=F64)  # encoder states (memory)
    y = torch.randn(1, t, 16, generator=g, dtype=F64)  # decoder states
    pad = keep_to_ignore(padding_mask(torch.tensor([5]), s))  # the last 2 source positions are padding
    with torch.no_grad():
        panels = [
            (
                "encoder: global self-attention\nQ = K = V = X (source), padding hidden",
                global_self_attention(mha, x, pad, need_weights=True)[1],
                "source key j",
                "source query i",
            ),
            (
                "decoder: causal self-attention\nQ = K = V = Y (target), j ≤ i",
                causal_self_attention(mha, y, need_weights=True)[1],
                "target key j",
                "target query i",
            ),
            (
                "decoder: cross-attention\nQ = Y, K = V = encoder output",
                cross_attention(mha, y, x, pad, need_weights=True)[1],
                "source key j",
                "target query i",
            ),
        ]
    fig, axes = plt.subplots(
        1, 3, figsize=(12.5, 3.9), constrained_layout=True, gridspec_kw={"width_ratios": [s, t, s]}
    )
    for ax, (title, w, xl, yl) in zip(axes, panels):
        im = ax.imshow(w[0, 0].numpy(), cmap="viridis", vmin=0, vmax=1)
        ax.set_title(title, fontsize=9.5)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.set_xticks(range(w.size(-1)))
        ax.set_yticks(range(w.size(-2)))
    for ax in (axes[0], axes[2]):
        ax.axvspan(4.5, 6.5, color="white", alpha=0.25, hatch="//", lw=0)
    fig.colorbar(im, ax=axes, shrink=0.8, label="weight (head 1)")
    return fig


@figure("transformer-masks")
def masks():
    """Padding, causal, combined, and top-left vs bottom-right causal masks for cached decoding."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    keep = padding_mask(torch.tensor([5, 3]), 5)  # (B=2, n_k=5)
    panels = [
        ("padding mask (B, n_k)\nvalid_lens = [5, 3]", keep, "key j", "sequence b"),
        ("causal mask (n_q, n_k)\nj ≤ i", causal_mask(5), "key j", "query i"),
        (
            "combined, sequence b = 1\n(B,1,1,n_k) & (1,1,n_q,n_k)",
            combine_masks(keep, causal_mask(5))[1, 0],
            "key j",
            "query i",
        ),
        ("2 new queries, 4 cached keys\nis_causal=True (top-left): wrong", causal_mask(2, 6), "key j", "new query"),
        (
            "same, offset = 4 (bottom-right)\n= causal_lower_right: right",
            causal_mask(2, 6, offset=4),
            "key j",
            "new query",
        ),
    ]
    cmap = ListedColormap(["#2b2b2b", "#f2d64b"])
    fig, axes = plt.subplots(
        1, 5, figsize=(15, 3.3), constrained_layout=True, gridspec_kw={"width_ratios": [5, 5, 5, 6, 6]}
    )
    for ax, (title, m, xl, yl) in zip(axes, panels):
        ax.imshow(m.int().numpy(), cmap=cmap, vmin=0, vmax=1)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.set_xticks(range(m.size(1)))
        ax.set_yticks(range(m.size(0)))
        for i in range(m.size(0)):
            for j in range(m.size(1)):
                ax.text(
                    j,
                    i,
                    "T" if m[i, j] else "F",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="black" if m[i, j] else "white",
                )
    fig.suptitle("boolean masks, keep convention: T = attend (yellow), F = masked out", fontsize=10)
    return fig


PINYIN = {
    "我": "wo (I)",
    "吃": "chi (eat)",
    "了": "le (PAST)",
    "一": "yi (one)",
    "个": "ge (MW)",
    "苹果": "pingguo (apple)",
}


@figure("transformer-cross-attention")
def cross_attention_figure():
    """Cross-attention weights (T × S) of an untrained model on a toy pair with a padded source."""
    import matplotlib.pyplot as plt

    from snippets.data.toy_translation import SHOWCASE_PAIRS, build_vocabs, tensorize
    from snippets.transformer.attention_types import cross_attention_weights
    from snippets.transformer.model import Transformer

    pairs = SHOWCASE_PAIRS[:2]  # the second source is longer: the first gets <pad>
    src_vocab, tgt_vocab = build_vocabs(pairs)
    data = tensorize(pairs, src_vocab, tgt_vocab)
    torch.manual_seed(0)
    model = Transformer(
        len(src_vocab),
        len(tgt_vocab),
        d_model=32,
        nhead=2,
        num_encoder_layers=1,
        num_decoder_layers=1,
        dim_feedforward=32,
        dropout=0.0,
        dtype=F64,
    ).eval()
    with torch.no_grad():
        for lin in (model.decoder.layers[0].cross_attn.q_proj, model.decoder.layers[0].cross_attn.k_proj):
            lin.weight.mul_(3.0)
    pad = data.src == 1
    w = cross_attention_weights(model, data.src, data.tgt[:, :-1], pad)  # (B, h, T, S)
    src_words = [src_vocab.idx_to_token[i] for i in data.src[0].tolist()]
    tgt_words = [tgt_vocab.idx_to_token[i] for i in data.tgt[0, :-1].tolist() if i > 3 or i == 2]  # <bos> + words
    t = len(tgt_words)
    fig, ax = plt.subplots(figsize=(7.5, 3.8), constrained_layout=True)
    im = ax.imshow(w[0].mean(0)[:t].numpy(), cmap="viridis", vmin=0)
    labels = [PINYIN.get(wd, wd if wd.isascii() else f"s{j}") for j, wd in enumerate(src_words)]
    ax.set_xticks(range(len(src_words)), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(t), tgt_words, fontsize=8)
    ax.set_xlabel("source position j (keys = values = encoder output); <pad> columns are exactly 0")
    ax.set_ylabel("decoder input position t (queries)")
    ax.set_title("cross-attention weights, averaged over heads (untrained model): T rows × S columns", fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.85)
    return fig


@figure("transformer-train-vs-infer")
def train_vs_infer():
    """Which positions each decoder pass computes, and |teacher-forced − step-by-step| logits per position."""
    import matplotlib.pyplot as plt

    from snippets.transformer.decoding import incremental_logits, teacher_forced_logits
    from snippets.transformer.model import Transformer

    torch.manual_seed(0)
    model = Transformer(
        10,
        10,
        d_model=16,
        nhead=2,
        num_encoder_layers=2,
        num_decoder_layers=2,
        dim_feedforward=32,
        dropout=0.0,
        dtype=F64,
    ).eval()
    t = 7
    src, tgt_in = torch.randint(4, 10, (2, 6)), torch.randint(4, 10, (2, t))
    with torch.no_grad():
        step = incremental_logits(model, src, tgt_in)
        diff_mask = (teacher_forced_logits(model, src, tgt_in) - step).abs().amax(dim=(0, 2))
        diff_none = (teacher_forced_logits(model, src, tgt_in, causal=False) - step).abs().amax(dim=(0, 2))
    fig, axes = plt.subplots(
        1, 3, figsize=(14, 3.6), constrained_layout=True, gridspec_kw={"width_ratios": [1.4, t, 9]}
    )
    train = torch.ones(t, 1)
    infer = torch.ones(t, t).tril()  # row = position, column = step: step s computes positions <= s
    infer_new = torch.eye(t)
    axes[0].imshow(train.numpy(), cmap="Blues", vmin=0, vmax=1.2, aspect="auto")
    axes[0].set_title("training:\n1 pass", fontsize=9)
    axes[0].set_xticks([0], ["1"])
    axes[0].set_xlabel("pass")
    axes[0].set_ylabel("decoder position t")
    axes[1].imshow((0.45 * infer + 0.55 * infer_new).numpy(), cmap="Oranges", vmin=0, vmax=1.1)
    axes[1].set_title(
        "inference: T passes (step s computes position s;\nlight = prefix recomputed, or read from a KV cache)",
        fontsize=9,
    )
    axes[1].set_xticks(range(t), [str(i + 1) for i in range(t)])
    axes[1].set_xlabel("step s")
    for ax in axes[:2]:
        ax.set_yticks(range(t))
    axes[2].semilogy(
        range(t), diff_mask.clamp_min(1e-17).numpy(), "o-", label="with the causal mask (0 is drawn at 1e-17)"
    )
    axes[2].semilogy(range(t), diff_none.clamp_min(1e-17).numpy(), "s--", label="without the mask")
    axes[2].axhline(1e-12, color="gray", lw=0.8, ls=":")
    axes[2].set_xlabel("position t")
    axes[2].set_ylabel("max |parallel − step-by-step| (float64)")
    axes[2].set_title("one teacher-forced pass vs T incremental passes", fontsize=9)
    axes[2].legend(fontsize=8)
    return fig
