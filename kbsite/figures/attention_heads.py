"""Figures for 9.06 (Bahdanau alignment), 9.10 (one big projection = h blocks) and 9.11 (why heads),
drawn from the snippets themselves."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from kbsite.figures import figure


@contextmanager
def _one_thread() -> Iterator[None]:
    """Tiny models train faster on one thread (no inter-thread sync per small op)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@figure("bahdanau-alignment")
def bahdanau_alignment():
    """Attention weights of a trained Bahdanau decoder on the reversal task: an anti-diagonal,
    and exactly 0 on the padded source positions."""
    import matplotlib.pyplot as plt

    from snippets.attention.bahdanau import EOS, PAD, greedy_decode, make_reverse_task, train_reverse

    with _one_thread():
        r = train_reverse(attention=True, max_len=6, batch_size=32, steps=100, lr=0.02, n_eval=16)
    src, lens, _, tgt_out = make_reverse_task(2, 6, min_len=4, generator=torch.Generator().manual_seed(4))
    src = torch.cat([src, torch.full((2, 2), PAD)], dim=1)  # (2, 8): at least 2 padded positions each
    pred, w = greedy_decode(r.model, src, lens, 7)
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 4), constrained_layout=True)
    for b, ax in enumerate(axes):
        n = int(lens[b])
        steps = n + 1  # the outputs and EOS
        im = ax.imshow(w[b, :steps].numpy(), cmap="viridis", vmin=0, vmax=1)
        ax.set_xticks(range(src.size(1)), [str(t) if i < n else "pad" for i, t in enumerate(src[b].tolist())])
        out = [str(t) for t in pred[b, :steps].tolist()]
        ax.set_yticks(range(steps), [o if o != str(EOS) else "<eos>" for o in out])
        ax.set_xlabel("source token (key position t)")
        ok = torch.equal(pred[b, :steps], tgt_out[b, :steps])
        ax.set_title(f"source length {n}: output {'=' if ok else '≠'} reversed source", fontsize=10)
    axes[0].set_ylabel("output token (decoder step t')")
    fig.colorbar(im, ax=axes, shrink=0.85, label="α(s_{t'-1}, h_t)")
    return fig


@figure("multihead-split-blocks")
def multihead_split_blocks():
    """X W^Q with W^Q = [W_1 | W_2 | W_3 | W_4]: the column blocks of the product are the
    per-head projections X W_i, computed in one matrix product."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from snippets.attention.multihead import split_heads
    from snippets.attention.multihead_split import fuse_head_weights

    g = torch.Generator().manual_seed(0)
    n, d, h = 5, 8, 4
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    w_list = [torch.randn(d, d // h, generator=g, dtype=torch.float64) for _ in range(h)]
    w = fuse_head_weights(w_list)
    xw = x @ w
    per_head = split_heads(xw[None], h)[0]  # (h, n, d_k)
    colors = ["tab:red", "tab:blue", "tab:green", "tab:orange"]
    fig = plt.figure(figsize=(13, 3.6), constrained_layout=True)
    grid = fig.add_gridspec(1, 4 + h, width_ratios=[d, d, d, 1] + [d // h] * h)
    panels = [("X  (n × d_model)", x, False), ("W^Q = [W_1|W_2|W_3|W_4]", w, True), ("X W^Q", xw, True)]
    for col, (title, m, blocks) in enumerate(panels):
        ax = fig.add_subplot(grid[0, col])
        ax.imshow(m.numpy(), cmap="coolwarm", vmin=-3, vmax=3)
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        if blocks:
            for i in range(h):
                ax.add_patch(
                    Rectangle(
                        (i * d // h - 0.42, -0.42),
                        d // h - 0.16,
                        m.size(0) - 0.16,
                        fill=False,
                        edgecolor=colors[i],
                        linewidth=2.5,
                    )
                )
    fig.add_subplot(grid[0, 3]).axis("off")
    for i in range(h):
        ax = fig.add_subplot(grid[0, 4 + i])
        ax.imshow((x @ w_list[i]).numpy(), cmap="coolwarm", vmin=-3, vmax=3)
        assert torch.equal(per_head[i], x @ w_list[i])  # the figure shows an identity, checked here
        ax.set_title(f"X W_{i + 1}", fontsize=10, color=colors[i])
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("one product X W^Q, cut into column blocks  =  h separate products X W_i", fontsize=11)
    return fig


@figure("why-heads-attention")
def why_heads_attention():
    """Per-head attention maps after training on the two-offset copy task: 1 head vs 2 heads."""
    import matplotlib.pyplot as plt

    from snippets.attention.why_heads import train_attention_only

    with _one_thread():
        one = train_attention_only(1, steps=120, lr=0.03)
        two = train_attention_only(2, steps=120, lr=0.03)
    maps = [(f"1 head (d_model 8), loss {one.eval_loss:.2f}", one.attention[0])]
    maps += [(f"2 heads: head {i + 1}, loss {two.eval_loss:.0e}", two.attention[i]) for i in range(2)]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.8), constrained_layout=True)
    for ax, (title, a) in zip(axes, maps):
        im = ax.imshow(a.numpy(), cmap="viridis", vmin=0, vmax=1)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("key position s")
        ax.set_xticks(range(a.size(1)))
        ax.set_yticks(range(a.size(0)))
    axes[0].set_ylabel("query position t")
    fig.colorbar(im, ax=axes, shrink=0.85, label="weight (mean over 1024 held-out sequences)")
    return fig
