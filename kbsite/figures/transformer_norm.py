"""Figures for chapter 10 (FFN, LayerNorm, rank collapse, embedding scale), drawn from the snippets."""

from __future__ import annotations

import numpy as np
import torch

from kbsite.figures import figure
from snippets.attention.sdpa import scaled_dot_product_attention
from snippets.transformer.embedding import embedding_vs_pe_rms
from snippets.transformer.ffn import PositionwiseFFN, position_mixing
from snippets.transformer.layernorm import padded_batch_demo
from snippets.transformer.rank_collapse import rank_collapse_curve


@figure("ffn-vs-attention-mixing")
def ffn_vs_attention_mixing():
    """||∂y_i/∂x_j|| for a position-wise FFN (diagonal) and for self-attention (full)."""
    import matplotlib.pyplot as plt

    torch.manual_seed(0)
    n, d = 8, 16
    x = torch.randn(n, d, dtype=torch.float64)
    ffn = PositionwiseFFN(d, 4 * d, dtype=torch.float64)
    w = 0.3 * torch.eye(d, dtype=torch.float64)  # W_Q = W_K: small, so the weights spread over positions
    panels = [
        ("position-wise FFN", position_mixing(ffn, x)),
        (
            "self-attention softmax(QKᵀ/√d)V",
            position_mixing(lambda t: scaled_dot_product_attention(t @ w, t @ w, t), x),
        ),
    ]
    fig, axes = plt.subplots(1, 2, figsize=(8.5, 3.8), constrained_layout=True)
    for ax, (title, m) in zip(axes, panels):
        im = ax.imshow(m.detach().numpy(), cmap="viridis")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("input position j")
        ax.set_xticks(range(n))
        ax.set_yticks(range(n))
        fig.colorbar(im, ax=ax, shrink=0.8, label="‖∂y_i / ∂x_j‖")
    axes[0].set_ylabel("output position i")
    return fig


@figure("layernorm-padding")
def layernorm_padding():
    """Which values share one statistic (per feature), and how appended padding moves each norm's output."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    lengths, seq = (6, 4, 2), 8
    real = np.arange(seq)[None, :] < np.array(lengths)[:, None]  # (B, L)
    fig, axes = plt.subplots(
        1, 4, figsize=(14, 3.2), constrained_layout=True, gridspec_kw={"width_ratios": [1, 1, 1, 1.5]}
    )
    groups = [
        ("BatchNorm: all tokens of the batch", np.ones_like(real)),
        ("LayerNorm((seq, d)): one sentence", np.eye(len(lengths), dtype=bool)[0][:, None] & np.ones_like(real)),
        ("LayerNorm(d): one token", np.zeros_like(real)),
    ]
    groups[2][1][0, 0] = True
    cmap = ListedColormap(["#f2f2f2", "#4c78a8"])
    for ax, (title, pooled) in zip(axes, groups):
        ax.imshow(pooled.astype(float), cmap=cmap, vmin=0, vmax=1)
        for (b, t), is_real in np.ndenumerate(real):
            ax.text(
                t,
                b,
                "tok" if is_real else "pad",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if pooled[b, t] else ("black" if is_real else "#b03030"),
            )
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("position t")
        ax.set_xticks(range(seq))
        ax.set_yticks(range(len(lengths)))
    axes[0].set_ylabel("sentence b  (blue: pooled into one statistic)")
    pads = list(range(0, 13))
    changes = {name: [] for name in padded_batch_demo(extra_pad=0)}
    for p in pads:
        for name, value in padded_batch_demo(lengths=lengths, extra_pad=p).items():
            changes[name].append(value)
    ax = axes[3]
    for (name, ys), style in zip(changes.items(), ("o-", "s-", "^-")):
        ax.plot(pads, ys, style, label=name, markersize=4)
    ax.set_xlabel("pad tokens appended to every sentence")
    ax.set_ylabel("max |Δ output| at real tokens")
    ax.set_title("padding changes BN and LN((seq, d)), not LN(d)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


@figure("rank-collapse-curves")
def rank_collapse_curves():
    """||res(X_l)|| / ||X_l|| per layer (log scale) for pure attention, + residual, + residual + MLP."""
    import matplotlib.pyplot as plt

    depth = 12
    configs = [
        ("pure self-attention", {}, "o-"),
        ("+ residual  X + SA(X)", {"residual": True}, "s-"),
        ("+ residual + MLP", {"residual": True, "mlp": True}, "^-"),
    ]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), constrained_layout=True)
    for label, kw, style in configs:
        out = rank_collapse_curve(depth, generator=torch.Generator().manual_seed(0), **kw)
        axes[0].semilogy(range(depth + 1), out.ratio.clamp_min(1e-17).numpy(), style, label=label, markersize=4)
        s = out.singular_values[3]
        axes[1].semilogy(range(1, s.numel() + 1), (s / s[0]).clamp_min(1e-17).numpy(), style, label=label, markersize=4)
    axes[0].axhline(2.2e-16, color="gray", lw=0.8, ls=":")
    axes[0].text(depth, 4e-16, "float64 round-off", ha="right", fontsize=8, color="gray")
    axes[0].set_xlabel("layer l")
    axes[0].set_ylabel("‖X − 1x̄ᵀ‖_F / ‖X‖_F")
    axes[0].set_title("distance from 'all tokens identical' (n=16, d=32, seed 0)", fontsize=10)
    axes[1].set_xlabel("index i")
    axes[1].set_ylabel("σ_i / σ_1")
    axes[1].set_title("singular values of X after 3 layers", fontsize=10)
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    return fig


@figure("embedding-scale")
def embedding_scale():
    """RMS entry of sqrt(d)·W for two initialisations vs the sinusoidal PE, as d_model grows."""
    import matplotlib.pyplot as plt

    dims = [16, 32, 64, 128, 256, 512, 1024]
    small = [embedding_vs_pe_rms(d, vocab_size=200)[0] for d in dims]
    big = [embedding_vs_pe_rms(d, vocab_size=200, init_std=1.0)[0] for d in dims]
    pe = [embedding_vs_pe_rms(d, vocab_size=2)[1] for d in dims]
    fig, ax = plt.subplots(figsize=(6.5, 3.8), constrained_layout=True)
    ax.loglog(dims, big, "s-", label="√d · W,  W ~ N(0, 1)  (nn.Embedding default): RMS ≈ √d")
    ax.loglog(dims, small, "o-", label="√d · W,  W ~ N(0, 1/d): RMS ≈ 1")
    ax.loglog(dims, pe, "^--", label="sinusoidal PE (RMS = 1/√2)")
    ax.set_xlabel("d_model")
    ax.set_ylabel("RMS entry")
    ax.set_title("what √d_model does depends on the initialisation", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return fig
