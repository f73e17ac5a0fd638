"""Figures for order and position (9.12–9.14, 10.01), drawn from the snippets themselves."""

from __future__ import annotations

import numpy as np
import torch

from kbsite.figures import figure
from snippets.attention.compare import count_sequential_cell_calls, make_stack, receptive_field_via_autograd
from snippets.attention.positional import sinusoidal_positional_encoding
from snippets.attention.sdpa import attention_weights
from snippets.attention.self_attention import permute_tokens, self_attention

F64 = torch.float64


@figure("self-attention-permutation")
def self_attention_permutation():
    """X, f(X), PX and f(PX) for one random single-head self-attention: the rows of f(PX) are
    the rows of f(X), reordered by the same permutation (equivariance), not the same matrix."""
    import matplotlib.pyplot as plt

    g = torch.Generator().manual_seed(1)
    n, d = 5, 4
    x = torch.randn(n, d, generator=g, dtype=F64)
    w_q, w_k, w_v = (torch.randn(d, d, generator=g, dtype=F64) for _ in range(3))
    perm = torch.tensor([3, 0, 4, 1, 2])
    y, y_p = self_attention(x, w_q, w_k, w_v), self_attention(permute_tokens(x, perm), w_q, w_k, w_v)
    a, a_p = attention_weights(x @ w_q, x @ w_k), attention_weights(x[perm] @ w_q, x[perm] @ w_k)
    labels, labels_p = [f"t{i}" for i in range(n)], [f"t{i}" for i in perm.tolist()]
    sx, sy = float(x.abs().max()), float(y.abs().max())  # one colour scale per pair of panels
    panels = [  # title, matrix, row labels, column labels (None: features), colour range
        ("X", x, labels, None, (-sx, sx)),
        ("A(X)", a, labels, labels, (0, 1)),
        ("f(X)", y, labels, None, (-sy, sy)),
        ("PX (shuffled tokens)", x[perm], labels_p, None, (-sx, sx)),
        ("A(PX) = P A(X) Pᵀ", a_p, labels_p, labels_p, (0, 1)),
        ("f(PX) = P f(X)", y_p, labels_p, None, (-sy, sy)),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(10, 6.2), constrained_layout=True)
    for ax, (title, m, rows, cols, (lo, hi)) in zip(axes.flat, panels):
        cmap = "viridis" if cols is not None else "coolwarm"
        ax.imshow(m.numpy(), cmap=cmap, vmin=lo, vmax=hi)
        ax.set_title(title, fontsize=10)
        ax.set_yticks(range(n), rows)
        if cols is None:
            ax.set_xticks(range(m.size(1)))
            ax.set_xlabel("feature")
        else:
            ax.set_xticks(range(n), cols)
            ax.set_xlabel("key")
    return fig


@figure("receptive-fields")
def receptive_fields():
    """Which inputs each output depends on (non-zero gradient), measured with autograd."""
    import matplotlib.pyplot as plt

    torch.manual_seed(0)
    T, d = 16, 4
    panels = [
        ("1 conv layer, k=3", make_stack("cnn", d, 1, 3)),
        ("3 conv layers, k=3", make_stack("cnn", d, 3, 3)),
        ("1 RNN layer", make_stack("rnn", d, 1)),
        ("1 self-attention layer", make_stack("self-attention", d, 1)),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.5), constrained_layout=True)
    for ax, (title, model) in zip(axes, panels):
        dep = receptive_field_via_autograd(model.double(), T, d, generator=torch.Generator().manual_seed(0))
        ax.imshow(dep.numpy(), cmap="Blues", vmin=0, vmax=1.3)
        ax.set_title(f"{title}\n(output 8 sees {int(dep[8].sum())} inputs)", fontsize=10)
        ax.set_xlabel("input position s")
        ax.set_xticks(range(0, T, 3))
        ax.set_yticks(range(0, T, 3))
    axes[0].set_ylabel("output position t")
    return fig


@figure("positional-encoding-heatmap")
def positional_encoding_heatmap():
    """The sinusoidal table PE (positions × dimensions) and a few of its columns."""
    import matplotlib.pyplot as plt

    pe = sinusoidal_positional_encoding(100, 64, dtype=F64)
    fig, (ax, ax2) = plt.subplots(
        1, 2, figsize=(12, 4), constrained_layout=True, gridspec_kw={"width_ratios": [1.1, 1]}
    )
    im = ax.imshow(pe.numpy(), cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
    ax.set_xlabel("dimension (even: sin, odd: cos)")
    ax.set_ylabel("position pos")
    ax.set_title("PE[pos, :], d_model = 64", fontsize=10)
    fig.colorbar(im, ax=ax, shrink=0.9)
    for col in (0, 6, 14, 30):
        ax2.plot(pe[:, col].numpy(), label=f"dim {col}: sin(pos·{10000 ** (-col / 64):.3g})")
    ax2.set_xlabel("position pos")
    ax2.set_title("one column = one sine wave; frequency falls with the dimension", fontsize=10)
    ax2.legend(fontsize=8, loc="lower left")
    return fig


@figure("positional-encoding-offset")
def positional_encoding_offset():
    """PE[i]·PE[i+δ] against δ from several start positions (one curve), and how far neighbours
    move in each frequency pair."""
    import matplotlib.pyplot as plt

    d = 128
    pe = sinusoidal_positional_encoding(1200, d, dtype=F64)
    delta = torch.arange(-200, 201)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 3.8), constrained_layout=True)
    for i, style in ((300, "-"), (600, "--"), (900, ":")):
        ax.plot(delta.numpy(), (pe[i + delta] @ pe[i]).numpy(), style, label=f"i = {i}")
    ax.set_xlabel("offset δ")
    ax.set_ylabel("PE[i] · PE[i+δ]")
    ax.set_title("the dot product depends on δ only (curves overlap), peak d/2 at δ = 0", fontsize=10)
    ax.legend(fontsize=8)
    step = (pe[1:] - pe[:-1]).reshape(1199, d // 2, 2).norm(dim=-1).mean(0)  # per frequency pair
    ax2.semilogy(np.arange(d // 2), step.numpy(), "o", ms=3)
    ax2.set_xlabel("frequency pair i (dims 2i, 2i+1)")
    ax2.set_ylabel("|PE[pos+1] − PE[pos]| in that pair")
    ax2.set_title("neighbours differ a lot in fast pairs, barely in slow ones", fontsize=10)
    return fig


@figure("sequential-cell-calls")
def sequential_cell_calls():
    """Longest chain of dependent cell calls against sequence length (forward hooks)."""
    import matplotlib.pyplot as plt

    torch.manual_seed(0)
    d, lengths = 4, [1, 2, 4, 8, 12, 16, 24, 32]
    fig, ax = plt.subplots(figsize=(6, 3.6), constrained_layout=True)
    for kind, marker in (("rnn", "o"), ("self-attention", "s"), ("cnn", "^")):
        model = make_stack(kind, d).double()
        ax.plot(lengths, [count_sequential_cell_calls(model, T, d) for T in lengths], marker=marker, label=kind)
    ax.set_xlabel("sequence length T")
    ax.set_ylabel("sequential cell calls")
    ax.set_title("calls that must wait for the previous one, per layer", fontsize=10)
    ax.legend()
    return fig
