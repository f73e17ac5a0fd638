"""Figures for chapter 11 (KV cache, MQA/GQA, GPT decoding), drawn from the snippets themselves."""

from __future__ import annotations

import time

import numpy as np
import torch

from kbsite.figures import figure
from snippets.llm.gpt import TinyGPT
from snippets.llm.kv_cache import kv_cache_bytes


@figure("kv-cache-memory")
def kv_cache_memory():
    """KV-cache memory of a 7B-like model (32 layers, 32 query heads, d_head 128, fp16) vs length."""
    import matplotlib.pyplot as plt

    lengths = np.arange(0, 32768 + 1, 512)
    fig, ax = plt.subplots(figsize=(7.5, 3.8), constrained_layout=True)
    for name, g, style in (("MHA (32 KV heads)", 32, "-"), ("GQA (8 KV heads)", 8, "--"), ("MQA (1 KV head)", 1, ":")):
        gib = [kv_cache_bytes(32, 1, g, int(n), 128, torch.float16) / 2**30 for n in lengths]
        ax.plot(lengths, gib, style, lw=2, label=name)
    weights_gib = 6.7e9 * 2 / 2**30  # 6.7 B parameters in fp16
    ax.axhline(weights_gib, color="gray", lw=1)
    ax.text(500, weights_gib + 0.4, f"the weights themselves: {weights_gib:.1f} GiB", color="gray", fontsize=9)
    ax.set_xlabel("tokens in the cache (one sequence)")
    ax.set_ylabel("KV cache (GiB)")
    ax.set_title("KV cache = layers · 2 · B · kv_heads · L · d_head · bytes  (32 layers, d_head 128, fp16)", fontsize=9)
    ax.set_xlim(0, lengths[-1])
    ax.set_ylim(0, 17)
    ax.legend()
    return fig


def _step_times(model: TinyGPT, lengths: list[int], repeats: int = 3) -> tuple[list[float], list[float]]:
    """Seconds of one decoding step at each prefix length, cached (1 token) and recomputed; the
    fastest of ``repeats`` timings (the one least disturbed by other load)."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.tok_emb.num_embeddings, (1, max(lengths) + 1), generator=gen)
    cached, full = [], []
    with torch.no_grad():
        for t in lengths:
            caches = model.new_caches(1, t + 1)
            model(ids[:, :t], caches)  # prefill t positions
            c_times, f_times = [], []
            for _ in range(repeats):
                for cache in caches:
                    cache.length = t
                start = time.perf_counter()
                model(ids[:, t : t + 1], caches)  # one new token reads the cached t positions
                c_times.append(time.perf_counter() - start)
                start = time.perf_counter()
                model(ids[:, : t + 1])  # the same logits, recomputing every position
                f_times.append(time.perf_counter() - start)
            cached.append(min(c_times))
            full.append(min(f_times))
    return cached, full


@figure("kv-cache-step-time")
def kv_cache_step_time():
    """Measured time of one decoding step with and without the cache, toy TinyGPT on the CPU."""
    import matplotlib.pyplot as plt

    torch.manual_seed(0)
    model = TinyGPT(28, 64, 2, 4, 4, max_len=513).eval()
    lengths = [1, 64, 128, 256, 384, 512]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        model(torch.zeros(1, 8, dtype=torch.long))  # warm-up
        cached, full = _step_times(model, lengths)
    finally:
        torch.set_num_threads(threads)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 3.6), constrained_layout=True)
    ax.plot(lengths, np.array(full) * 1e3, "o-", label="without cache: re-run all t + 1 positions")
    ax.plot(lengths, np.array(cached) * 1e3, "s-", label="with cache: run 1 position, read t cached")
    ax.set_xlabel("prefix length t")
    ax.set_ylabel("time of one step (ms)")
    ax.set_title("measured at build time: TinyGPT d_model 64, 2 layers, CPU, 1 thread", fontsize=9)
    ax.legend(fontsize=8)
    t = np.arange(1, 513)
    ax2.plot(t, np.cumsum(t + 1), label="without cache: Σ (t + 1) positions ~ T²/2")
    ax2.plot(t, t, label="with cache: 1 position per step ~ T")
    ax2.set_xlabel("tokens generated T")
    ax2.set_ylabel("positions run through the model")
    ax2.set_yscale("log")
    ax2.set_title("work done so far (prefill of 1 token)", fontsize=9)
    ax2.legend(fontsize=8)
    return fig


@figure("gqa-head-groups")
def gqa_head_groups():
    """Which KV head each of 8 query heads uses: MHA, GQA (g = 2), MQA, and the wrong tiling."""
    import matplotlib.pyplot as plt

    h = 8
    rows = [
        ("MHA  g = 8", torch.arange(h)),
        ("GQA  g = 2  (repeat_interleave)", torch.arange(2).repeat_interleave(h // 2)),
        ("MQA  g = 1", torch.zeros(h, dtype=torch.long)),
        ("wrong: repeat (tiling), g = 2", torch.arange(2).repeat(h // 2)),
    ]
    fig, ax = plt.subplots(figsize=(8, 2.9), constrained_layout=True)
    grid = np.stack([r.numpy() for _, r in rows]).astype(float)
    ax.imshow(grid, cmap="tab10", vmin=0, vmax=9, aspect="auto")
    for (i, j), kv in np.ndenumerate(grid):
        ax.text(j, i, f"KV {int(kv)}", ha="center", va="center", fontsize=9, color="white")
    ax.set_yticks(range(len(rows)), [name for name, _ in rows])
    ax.set_xticks(range(h), [f"q head {i}" for i in range(h)], fontsize=8)
    ax.set_title("query head i uses KV head i // (h/g): contiguous query heads share one K/V", fontsize=10)
    for y in (0.5, 1.5, 2.5):
        ax.axhline(y, color="white", lw=3)
    return fig


@figure("gpt-causality")
def gpt_causality():
    """|Δ logits| per position after changing the token at position 6: zero before it."""
    import matplotlib.pyplot as plt

    torch.manual_seed(0)
    model = TinyGPT(11, 16, 2, 4, 2, max_len=16, dtype=torch.float64).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)
        ids = torch.randint(0, 11, (1, 12), generator=torch.Generator().manual_seed(1))
        other = ids.clone()
        other[0, 6] = (ids[0, 6] + 3) % 11
        delta = (model(other) - model(ids)).abs().amax(dim=-1)[0]  # (12,)
    fig, ax = plt.subplots(figsize=(7.5, 3), constrained_layout=True)
    colors = ["tab:gray" if i < 6 else "tab:red" for i in range(12)]
    ax.bar(range(12), delta.numpy(), color=colors)
    ax.axvline(5.5, color="black", ls="--", lw=1)
    ax.text(5.4, delta.max().item() * 0.9, "token 6 changed →", fontsize=9, ha="right")
    ax.set_xticks(range(12))
    ax.set_xlabel("position t")
    ax.set_ylabel("max |Δ logit| at t")
    ax.set_title("causal LM: the logits at t < 6 do not change (exactly 0)", fontsize=10)
    return fig
