"""Figures for §9.01–9.04 (attention cues, Nadaraya–Watson, attention pooling, scoring functions).

Every matrix drawn here comes from the snippets (``snippets.attention.pooling``,
``nadaraya_watson``, ``scoring``); ``show_heatmaps`` is d2l's helper of the same name.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from kbsite.figures import figure
from snippets.attention.nadaraya_watson import make_dataset, nw_regression, target_fn, train_nw
from snippets.attention.pooling import attention_pool, dot_score, one_hot_attention, uniform_pooling
from snippets.attention.scoring import AdditiveAttention, DotProductAttention

F64 = torch.float64


def show_heatmaps(
    matrices: Tensor | list[Tensor],
    xlabel: str,
    ylabel: str,
    titles: list[str] | None = None,
    *,
    cmap: str = "Reds",
    vmax: float | None = 1.0,
    size: float = 2.8,
):
    """Draw attention weights as heatmaps, one panel per matrix (d2l's ``show_heatmaps``).

    ``matrices``: ``(rows, cols, n_q, n_k)``, ``(cols, n_q, n_k)`` or a list of ``(n_q, n_k)``
    tensors (one row of panels). Returns the matplotlib Figure; the colour bar is shared
    (``vmax=None``: the largest weight over all panels).
    """
    import matplotlib.pyplot as plt

    if isinstance(matrices, Tensor):
        grid = matrices.detach().cpu()
        grid = grid[None] if grid.dim() == 3 else grid
        if grid.dim() != 4:
            raise ValueError(f"matrices must be (rows, cols, n_q, n_k), got shape {tuple(matrices.shape)}")
        panels = [[grid[r, c] for c in range(grid.size(1))] for r in range(grid.size(0))]
    else:
        panels = [[m.detach().cpu() for m in matrices]]
    rows, cols = len(panels), len(panels[0])
    if vmax is None:  # one colour scale for all panels, so the shared colour bar is true for each
        vmax = max(float(m.max()) for row in panels for m in row)
    fig, axes = plt.subplots(
        rows, cols, figsize=(size * cols + 0.8, size * rows), squeeze=False, constrained_layout=True
    )
    for r in range(rows):
        for c in range(cols):
            ax = axes[r, c]
            im = ax.imshow(panels[r][c].numpy(), cmap=cmap, vmin=0, vmax=vmax)
            if r == rows - 1:
                ax.set_xlabel(xlabel)
            if c == 0:
                ax.set_ylabel(ylabel)
            if titles is not None:
                ax.set_title(titles[r * cols + c], fontsize=10)
    fig.colorbar(im, ax=axes, shrink=0.8, label="attention weight")
    return fig


@figure("attention-cues-heatmaps")
def attention_cues_heatmaps():
    """No cue (average pooling), a hard lookup (one-hot) and soft attention, as weight matrices."""
    g = torch.Generator().manual_seed(0)
    n = 10
    values = torch.randn(n, 3, generator=g, dtype=F64)
    q = torch.randn(n, 4, generator=g, dtype=F64)
    k = torch.randn(n, 4, generator=g, dtype=F64)
    uniform = torch.full((n, n), 1.0 / n, dtype=F64)
    assert torch.allclose(uniform @ values, uniform_pooling(values, n))
    _, one_hot = one_hot_attention(torch.arange(n), values)  # query i looks up key i: torch.eye(n)
    _, soft = attention_pool(q, k, values, functools.partial(dot_score, scale=1.0))
    return show_heatmaps(
        [uniform, one_hot, soft],
        "keys",
        "queries",
        ["no volitional cue: average pooling", "hard lookup: one-hot", "soft attention: softmax(q·k)"],
    )


@functools.lru_cache(maxsize=1)
def _nw_fits() -> dict[str, object]:
    """The d2l toy problem (50 noisy points), fitted three ways; cached for both NW figures."""
    x, y, xt, yt = make_dataset(generator=torch.Generator().manual_seed(0), dtype=F64)
    model, _ = train_nw(x, y)
    with torch.no_grad():
        learned = model(xt, x, y)
    w = model.w.item()
    fixed, fixed_weights = nw_regression(xt, x, y, 1.0)
    return {
        "x": x, "y": y, "xt": xt, "yt": yt, "w": w,
        "average": y.mean().expand_as(xt), "fixed": fixed, "fixed_weights": fixed_weights,
        "learned": learned, "learned_weights": model.attention_weights,
    }  # fmt: skip


@figure("nadaraya-watson-fits")
def nadaraya_watson_fits():
    """Average pooling vs non-parametric (w = 1) vs parametric (learned w) Nadaraya–Watson."""
    import matplotlib.pyplot as plt

    d = _nw_fits()
    panels = [
        ("average pooling", d["average"]),
        ("non-parametric, w = 1", d["fixed"]),
        (f"parametric, learned w = {d['w']:.2f}", d["learned"]),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.3), sharey=True, constrained_layout=True)
    for ax, (title, pred) in zip(axes, panels):
        mse = (pred - d["yt"]).pow(2).mean().item()
        ax.plot(d["xt"], target_fn(d["xt"]), color="black", lw=1.2, label="truth 2 sin x + x^0.8")
        ax.plot(d["xt"], pred, color="tab:red", lw=2, label="prediction")
        ax.plot(d["x"], d["y"], "o", color="tab:blue", ms=3, alpha=0.6, label="training data")
        ax.set_title(f"{title}  (test MSE {mse:.2f})", fontsize=10)
        ax.set_xlabel("x")
    axes[0].set_ylabel("y")
    axes[0].legend(fontsize=8, loc="lower right")
    return fig


@figure("nadaraya-watson-weights")
def nadaraya_watson_weights():
    """Attention weights of the two Nadaraya–Watson fits: test inputs (rows) vs training inputs."""
    d = _nw_fits()
    return show_heatmaps(
        [d["fixed_weights"], d["learned_weights"]],
        "sorted training inputs x_i",
        "test inputs x",
        ["non-parametric, w = 1", f"parametric, w = {d['w']:.2f}"],
        vmax=None,
        size=3.2,
    )


@figure("attention-pooling-sharpening")
def attention_pooling_sharpening():
    """softmax(beta · q·k): beta = 0 is average pooling, beta → ∞ the one-hot dictionary lookup."""
    g = torch.Generator().manual_seed(1)
    q = torch.randn(6, 4, generator=g, dtype=F64)
    k = torch.randn(8, 4, generator=g, dtype=F64)
    v = torch.randn(8, 2, generator=g, dtype=F64)
    panels, titles = [], []
    for beta in (0.0, 0.5, 2.0):
        panels.append(attention_pool(q, k, v, functools.partial(dot_score, scale=beta))[1])
        titles.append(f"β = {beta:g}")
    panels.append(one_hot_attention((q @ k.T).argmax(-1), v)[1])
    titles.append("β → ∞: one-hot lookup")
    return show_heatmaps(panels, "keys (rows of K)", "queries", titles)


@figure("attention-scoring-weights")
def attention_scoring_weights():
    """Additive (query size 6, key size 4) vs scaled dot-product weights, with valid_lens = [3, 8]."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    valid_lens = torch.tensor([3, 8])
    q6, k4 = torch.randn(2, 5, 6, generator=g, dtype=F64), torch.randn(2, 8, 4, generator=g, dtype=F64)
    q4 = torch.randn(2, 5, 4, generator=g, dtype=F64)
    v = torch.randn(2, 8, 2, generator=g, dtype=F64)
    additive = AdditiveAttention(key_size=4, query_size=6, num_hiddens=8, dtype=F64)
    with torch.no_grad():
        additive.w_v.weight.mul_(8.0)  # sharper than the default init, so the pattern is visible
        additive(q6, k4, v, valid_lens)
    dot = DotProductAttention()
    dot(q4, k4, v, valid_lens)
    panels = [additive.attention_weights[0], additive.attention_weights[1]]
    panels += [dot.attention_weights[0], dot.attention_weights[1]]
    titles = [f"{name}, valid_len = {n}" for name in ("additive", "dot product") for n in valid_lens.tolist()]
    return show_heatmaps(panels, "keys", "queries", titles, vmax=None)
