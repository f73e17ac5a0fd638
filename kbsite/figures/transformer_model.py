"""Figures for chapter 10 (the Transformer model), drawn from the snippets themselves."""

from __future__ import annotations

import torch

from kbsite.figures import figure
from snippets.transformer.model import Transformer, count_transformer_params, ffn_grad_norms


@figure("post-ln-vs-pre-ln-grad-norms")
def post_ln_vs_pre_ln_grad_norms():
    """Gradient norm of each layer's FFN W_2 at initialisation, post-LN vs pre-LN, and its trend with depth."""
    import matplotlib.pyplot as plt

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is fastest
    try:
        return _grad_norm_figure(plt)
    finally:
        torch.set_num_threads(threads)


def _grad_norm_figure(plt):
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5), constrained_layout=True)
    layers = 12
    for norm_first, style, name in ((False, "o-", "post-LN"), (True, "s-", "pre-LN")):
        ax1.plot(range(1, layers + 1), ffn_grad_norms(norm_first, layers, batch=4, length=8), style, label=name)
        depths = [1, 2, 4, 8, 16, 32]
        last = [ffn_grad_norms(norm_first, n, batch=4, length=8)[-1] for n in depths]
        ax2.semilogx(depths, last, style, base=2, label=name)
    ax1.set_xlabel("layer (1 = next to the embeddings)")
    ax1.set_ylabel("‖∂L/∂W₂‖ at initialisation")
    ax1.set_title(f"{layers}-layer encoder, per layer", fontsize=10)
    ax1.set_ylim(bottom=0)
    ax1.legend()
    ax2.set_xlabel("number of layers N")
    ax2.set_ylabel("‖∂L/∂W₂‖ of the last layer")
    ax2.set_title("last layer vs depth", fontsize=10)
    ax2.set_ylim(bottom=0)
    ax2.legend()
    return fig


@figure("transformer-shape-flow")
def transformer_shape_flow():
    """The encoder–decoder Transformer as a column of blocks, each annotated with its output shape."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    b, s, t, d, v = 2, 7, 5, 512, 37_000
    model = Transformer(11, 13, d_model=16, nhead=2, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=32)
    logits = model(torch.randint(0, 11, (b, s)), torch.randint(0, 13, (b, t)))  # shapes checked on a tiny model
    assert logits.shape == (b, t, 13)
    n_params = count_transformer_params(6, 6, d, 2048)
    enc = [
        ("source ids", f"(B, S) = ({b}, {s})", "#eeeeee"),
        ("√d · Embedding + PE", f"(B, S, d) = ({b}, {s}, {d})", "#fde2c4"),
        ("self-attention → Add & Norm", "(B, S, d)", "#cfe3f7"),
        ("FFN → Add & Norm", "(B, S, d)   (hidden: d_ff = 2048)", "#d9f0d3"),
        ("× N = 6, final LayerNorm", "memory (B, S, d)", "#ffffff"),
    ]
    dec = [
        ("target ids (shifted right)", f"(B, T) = ({b}, {t})", "#eeeeee"),
        ("√d · Embedding + PE", f"(B, T, d) = ({b}, {t}, {d})", "#fde2c4"),
        ("causal self-attention → Add & Norm", "(B, T, d); weights (B, h, T, T)", "#cfe3f7"),
        ("cross-attention → Add & Norm", "Q: (B, T, d), K = V: memory; weights (B, h, T, S)", "#f7d4d4"),
        ("FFN → Add & Norm", "(B, T, d)", "#d9f0d3"),
        ("× N = 6, final LayerNorm", "(B, T, d)", "#ffffff"),
        ("Linear (+ softmax)", f"logits (B, T, V) = ({b}, {t}, {v:,})", "#e6d9f2"),
    ]
    fig, ax = plt.subplots(figsize=(11, 5.6), constrained_layout=True)
    ax.set_xlim(0, 11)
    ax.set_ylim(-0.6, 7.4)
    ax.axis("off")
    for x0, blocks, title in ((0.2, enc, "Encoder"), (5.7, dec, "Decoder")):
        ax.text(x0 + 2.5, 7.15, title, ha="center", fontsize=12, weight="bold")
        for i, (name, shape, color) in enumerate(blocks):
            y = 6.3 - i * 0.95
            ax.add_patch(FancyBboxPatch((x0, y - 0.32), 5.0, 0.64, boxstyle="round,pad=0.02", fc=color, ec="#555555"))
            ax.text(x0 + 0.12, y + 0.1, name, fontsize=9, va="center")
            ax.text(x0 + 0.12, y - 0.16, shape, fontsize=8, va="center", family="monospace", color="#333333")
            if i:
                ax.annotate("", (x0 + 2.5, y + 0.33), (x0 + 2.5, y + 0.63), arrowprops={"arrowstyle": "<-"})
    ax.annotate("", (5.7, 6.3 - 3 * 0.95), (5.2, 6.3 - 4 * 0.95), arrowprops={"arrowstyle": "->", "color": "#b03030"})
    ax.text(5.45, 2.95, "memory", color="#b03030", fontsize=8, ha="center", rotation=40)
    ax.text(
        0.2,
        -0.4,
        f"base model: N = 6, d = 512, h = 8, d_ff = 2048 → {n_params:,} parameters in the two "
        "stacks (nn.Transformer())",
        fontsize=9,
    )
    return fig
