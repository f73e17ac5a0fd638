"""Figures for chapter 9 (attention), drawn from the snippets themselves."""

from __future__ import annotations

import numpy as np
import torch

from kbsite.figures import figure
from snippets.attention.masking import causal_mask, padding_mask
from snippets.attention.sdpa import attention_weights


@figure("attention-masks")
def attention_masks():
    """Attention weights of one sequence under no mask, a padding mask and a causal mask."""
    import matplotlib.pyplot as plt

    g = torch.Generator().manual_seed(3)
    n, d = 6, 8
    q = torch.randn(1, n, d, generator=g, dtype=torch.float64)
    k = torch.randn(1, n, d, generator=g, dtype=torch.float64)
    pad = padding_mask(torch.tensor([4]), n)[:, None, :]  # (1, 1, n): last 2 keys are padding
    panels = [
        ("no mask", attention_weights(q, k)),
        ("padding mask (valid_len = 4)", attention_weights(q, k, pad)),
        ("causal mask", attention_weights(q, k, causal_mask(n))),
        ("padding & causal", attention_weights(q, k, pad & causal_mask(n))),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.4), constrained_layout=True)
    for ax, (title, w) in zip(axes, panels):
        im = ax.imshow(w[0].numpy(), cmap="viridis", vmin=0, vmax=1)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("key position j")
        ax.set_xticks(range(n))
        ax.set_yticks(range(n))
    axes[0].set_ylabel("query position i")
    fig.colorbar(im, ax=axes, shrink=0.85, label="weight α_ij")
    return fig


@figure("sdpa-steps")
def sdpa_steps():
    """The four steps of scaled dot-product attention on one small causal example."""
    import matplotlib.pyplot as plt

    g = torch.Generator().manual_seed(0)
    n, d_k, d_v = 5, 4, 3
    q = torch.randn(n, d_k, generator=g, dtype=torch.float64)
    k = torch.randn(n, d_k, generator=g, dtype=torch.float64)
    v = torch.randn(n, d_v, generator=g, dtype=torch.float64)
    scores = q @ k.T / d_k**0.5
    masked = scores.masked_fill(~causal_mask(n), float("nan"))  # drawn blank: -inf
    weights = attention_weights(q, k, is_causal=True)
    out = weights @ v
    panels = [
        ("1. scores  Q Kᵀ / √d_k", scores, "coolwarm", (n, n)),
        ("2. causal mask → −∞ (blank)", masked, "coolwarm", (n, n)),
        ("3. softmax → weights α", weights, "viridis", (n, n)),
        ("4. output  α V", out, "coolwarm", (n, d_v)),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.3), constrained_layout=True,
                             gridspec_kw={"width_ratios": [5, 5, 5, 3]})
    for ax, (title, m, cmap, shape) in zip(axes, panels):
        ax.imshow(m.numpy(), cmap=cmap)
        ax.set_title(title, fontsize=10)
        for (i, j), val in np.ndenumerate(m.numpy()):
            if val == val:  # skip NaN (masked)
                dark = cmap == "viridis" and val < 0.6
                ax.text(j, i, f"{val:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if dark else "black")
        ax.set_xticks(range(shape[1]))
        ax.set_yticks(range(shape[0]))
        ax.set_xlabel("feature" if title.startswith("4") else "key j")
    axes[0].set_ylabel("query i")
    return fig


@figure("multihead-heads")
def multihead_heads():
    """Per-head attention weights of one multi-head attention layer on the same 8 tokens."""
    import matplotlib.pyplot as plt

    from snippets.attention.multihead import MultiHeadAttention

    torch.manual_seed(0)
    n, d_model, h = 8, 32, 4
    mha = MultiHeadAttention(d_model, h, dtype=torch.float64)
    with torch.no_grad():
        for lin in (mha.q_proj, mha.k_proj):
            lin.weight.mul_(3.0)  # sharper patterns, so the heads' differences are visible
        x = torch.randn(1, n, d_model, dtype=torch.float64)
        _, w = mha(x, x, x, need_weights=True, average_attn_weights=False)  # (1, h, n, n)
    fig, axes = plt.subplots(1, h + 1, figsize=(14, 3.2), constrained_layout=True)
    for i, ax in enumerate(axes[:h]):
        ax.imshow(w[0, i].numpy(), cmap="viridis", vmin=0, vmax=1)
        ax.set_title(f"head {i + 1}", fontsize=10)
        ax.set_xlabel("key j")
    axes[h].imshow(w[0].mean(0).numpy(), cmap="viridis", vmin=0, vmax=1)
    axes[h].set_title("average over heads", fontsize=10)
    axes[h].set_xlabel("key j")
    axes[0].set_ylabel("query i")
    for ax in axes:
        ax.set_xticks(range(0, n, 2))
        ax.set_yticks(range(0, n, 2))
    return fig
