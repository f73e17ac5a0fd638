"""Figure for Dataset and DataLoader (4.28): how indices flow from the sampler to collated batches."""

from __future__ import annotations

import torch

from kbsite.figures import figure
from snippets.pytorch.data_loading import ScratchDataLoader


@figure("dataloader-pipeline")
def dataloader_pipeline():
    """10 samples, shuffle with a seeded generator, batch_size 4: sampler order → batches → workers."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    n, b, workers = 10, 4, 2
    loader = ScratchDataLoader(
        list(range(n)), b, shuffle=True, collate_fn=list, generator=torch.Generator().manual_seed(0)
    )
    batches = list(loader)  # exactly what DataLoader(..., generator=manual_seed(0)) yields
    order = [i for batch in batches for i in batch]
    colors = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(11, 4.2), constrained_layout=True)

    def cell(x: float, y: float, text: str, color: str, w: float = 0.8) -> None:
        ax.add_patch(FancyBboxPatch((x, y), w, 0.6, boxstyle="round,pad=0.02", fc=color, ec="k", lw=0.6))
        ax.text(x + w / 2, y + 0.3, text, ha="center", va="center", fontsize=8.5)

    for i in range(n):
        cell(i, 3, str(i), "#eeeeee")
    for pos, i in enumerate(order):
        k = pos // b
        cell(pos, 2, str(i), colors(k), 0.8)
        ax.annotate(
            "", xy=(pos + 0.4, 2.62), xytext=(i + 0.4, 2.98), arrowprops=dict(arrowstyle="->", lw=0.5, color="0.5")
        )
    x = 0.0
    for k, batch in enumerate(batches):
        w = len(batch) - 0.2
        cell(x, 1, f"batch {k}\n{batch}", colors(k), w)
        cell(x, 0, f"worker {k % workers}: collate\n-> tensor ({len(batch)}, ...)", colors(k), w)
        x += len(batch)
    labels = [
        (3.3, "Dataset: index -> sample"),
        (2.3, "Sampler: order (shuffled)"),
        (1.3, "BatchSampler: groups of 4"),
        (0.3, "dataset[i] for i in batch, collate"),
    ]
    for y, text in labels:
        ax.text(-0.3, y, text, ha="right", va="center", fontsize=9)
    ax.set_xlim(-4.2, n + 0.2)
    ax.set_ylim(-0.2, 3.8)
    ax.axis("off")
    ax.set_title("DataLoader(dataset, batch_size=4, shuffle=True, num_workers=2): one epoch", fontsize=10)
    return fig
