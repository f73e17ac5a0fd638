"""Benchmark: KV-cached generation vs recomputing the whole prefix, and KV-cache memory of MHA/GQA/MQA.

Generation: a toy ``TinyGPT`` (vocabulary 28, d_model 64, 2 layers, 4 heads, float32, untrained
weights — the speed does not depend on them), a 16-token prompt and 512 new greedy tokens, once with
the KV cache (one prefill, then one token per step) and once re-running the whole sequence at every
step; both must produce the same tokens, and the goal is a speed-up of at least 5x. On the CPU this
toy size is small enough that the per-step overhead of the cached path stays low and large enough that
re-running up to 528 positions dominates; the CPU is timed with one intra-op thread (single-stream
decoding of tiny matrices gains nothing from more, and a busy shared machine makes threads stall).

Memory: the cache of a 7B-like model (32 layers, 32 query heads, d_head 128, 4096 tokens, fp16,
batch 1) from the formula ``layers x 2 x B x kv_heads x L x d_head x bytes`` (nothing is allocated),
for MHA (32 KV heads), GQA (8) and MQA (1); and the toy model's caches measured from the tensors.
A small char model trained on The Time Machine generates the sample quoted on the GPT page.

``run()`` returns the rows of a Markdown table (``tools/bench.py`` collects them; ``make bench``);
run this file directly to print the table: ``python tools/bench_llm.py``.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script: make `snippets` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from snippets.data.text import load_timemachine  # noqa: E402
from snippets.llm.gpt import TinyGPT, lm_loss, random_windows, train_lm  # noqa: E402
from snippets.llm.kv_cache import kv_cache_bytes  # noqa: E402

VOCAB, D_MODEL, LAYERS, HEADS = 28, 64, 2, 4
PROMPT, NEW_TOKENS = 16, 512
GOAL = 5.0  # cached speed-up over recomputing, at least
SEVEN_B = {"num_layers": 32, "batch_size": 1, "seq_len": 4096, "head_dim": 128, "dtype": torch.float16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_generation(
    device: str | torch.device = "cpu", new_tokens: int = NEW_TOKENS, num_kv_heads: int = HEADS
) -> dict[str, float]:
    """Seconds to generate ``new_tokens`` greedily with and without the KV cache (same tokens asserted)."""
    device = torch.device(device)
    torch.manual_seed(0)
    model = TinyGPT(VOCAB, D_MODEL, LAYERS, HEADS, num_kv_heads, max_len=PROMPT + new_tokens, device=device)
    model.eval()
    prompt = torch.randint(0, VOCAB, (1, PROMPT), generator=torch.Generator().manual_seed(0)).to(device)
    model.generate(prompt, 8), model.generate(prompt, 8, use_cache=False)  # warm-up
    out, seconds = {}, {}
    for use_cache in (True, False):
        _sync(device)
        start = time.perf_counter()
        out[use_cache] = model.generate(prompt, new_tokens, use_cache=use_cache)
        _sync(device)
        seconds[use_cache] = time.perf_counter() - start
    if not torch.equal(out[True], out[False]):
        raise AssertionError("cached and uncached generation produced different tokens")
    return {"cached_s": seconds[True], "uncached_s": seconds[False], "speedup": seconds[False] / seconds[True]}


def cache_bytes_7b_like() -> dict[str, int]:
    """Formula bytes of the 7B-like model's cache for MHA (32 KV heads), GQA (8), MQA (1)."""
    return {name: kv_cache_bytes(num_kv_heads=g, **SEVEN_B) for name, g in (("MHA", 32), ("GQA", 8), ("MQA", 1))}


def cache_bytes_toy(seq_len: int = PROMPT + NEW_TOKENS) -> dict[str, tuple[int, int]]:
    """The toy model's caches (batch 1, ``seq_len`` positions, float32): ``(measured, formula)`` bytes."""
    out = {}
    for name, g in (("MHA", HEADS), ("GQA", 2), ("MQA", 1)):
        model = TinyGPT(VOCAB, D_MODEL, LAYERS, HEADS, g, max_len=seq_len)
        measured = sum(c.k.nbytes + c.v.nbytes for c in model.new_caches(1))
        out[name] = (measured, kv_cache_bytes(LAYERS, 1, g, seq_len, D_MODEL // HEADS, torch.float32))
    return out


def trained_sample(
    steps: int = 500, new_tokens: int = 120, seq_len: int = 64, lr: float = 5e-3, temperature: float = 0.7
) -> dict[str, object]:
    """Train a char GPT (d_model 64, 2 layers, 4 heads, 2 KV heads) on The Time Machine, then sample
    (fixed seed) from "the time traveller " with and without the cache."""
    ids, vocab = load_timemachine()
    split = int(0.9 * len(ids))
    torch.manual_seed(0)
    model = TinyGPT(len(vocab), 64, 2, 4, 2, max_len=160)
    start = time.perf_counter()
    losses = train_lm(model, ids[:split], steps, batch_size=32, seq_len=seq_len, lr=lr, seed=0)
    train_s = time.perf_counter() - start
    with torch.no_grad():
        held_out = random_windows(ids[split:], 64, seq_len, torch.Generator().manual_seed(0))
        val = lm_loss(model(held_out), held_out).item()
    prompt = vocab.encode("the time traveller ")[None]
    texts, seconds = {}, {}
    for use_cache in (True, False):
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(0)
        texts[use_cache] = model.generate(
            prompt, new_tokens, use_cache=use_cache, temperature=temperature, generator=gen
        )
        seconds[use_cache] = time.perf_counter() - t0
    if not torch.equal(texts[True], texts[False]):
        raise AssertionError("cached and uncached generation produced different tokens")
    return {
        "steps": steps,
        "temperature": temperature,
        "train_s": train_s,
        "first_loss": losses[0],
        "val_ppl": math.exp(val),
        "vocab": len(vocab),
        "text": vocab.decode(texts[True][0]),
        "cached_s": seconds[True],
        "uncached_s": seconds[False],
    }


def run() -> list[tuple[str, str]]:
    """Rows ``(measure, value)`` of the benchmark table, CPU and (when present) CUDA."""
    threads = torch.get_num_threads()
    rows: list[tuple[str, str]] = [
        (
            "toy model",
            f"TinyGPT vocab {VOCAB}, d_model {D_MODEL}, {LAYERS} layers, {HEADS} heads, float32, "
            f"prompt {PROMPT} + {NEW_TOKENS} new greedy tokens",
        ),
        ("torch", f"{torch.__version__}; CPU timed with 1 intra-op thread"),
    ]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    try:
        torch.set_num_threads(1)
        for dev in devices:
            name = "CPU" if dev == "cpu" else f"CUDA ({torch.cuda.get_device_name(0)})"
            runs = [time_generation(dev) for _ in range(3 if dev == "cuda" else 1)]
            cached = statistics.median(r["cached_s"] for r in runs)
            uncached = statistics.median(r["uncached_s"] for r in runs)
            speedup = uncached / cached
            verdict = "ok" if speedup >= GOAL else "UNDER"
            rows += [
                (
                    f"{name}: {NEW_TOKENS} tokens with KV cache",
                    f"{cached:.2f} s ({cached / NEW_TOKENS * 1e3:.1f} ms/token)",
                ),
                (f"{name}: {NEW_TOKENS} tokens recomputing the prefix", f"{uncached:.2f} s"),
                (f"{name}: speed-up, same tokens (goal >= {GOAL:g}x)", f"{speedup:.1f}x {verdict}"),
            ]
        sample = trained_sample()
    finally:
        torch.set_num_threads(threads)
    for name, nbytes in cache_bytes_7b_like().items():
        rows.append((f"7B-like cache, {name} (32 layers, d_head 128, 4096 tokens, fp16)", _size(nbytes)))
    toy = cache_bytes_toy()
    for name, (measured, formula) in toy.items():
        assert measured == formula, (name, measured, formula)
        ratio = toy["MHA"][0] / measured
        value = _size(measured) + (f" ({ratio:g}x less than MHA)" if name != "MHA" else "")
        rows.append((f"toy cache, {name} ({PROMPT + NEW_TOKENS} positions, measured = formula)", value))
    rows += [
        (
            f"char GPT on The Time Machine, {sample['steps']} steps (CPU)",
            f"{sample['train_s']:.1f} s; loss {sample['first_loss']:.2f} -> held-out perplexity "
            f"{sample['val_ppl']:.2f} (vocabulary {sample['vocab']})",
        ),
        (f"sample (temperature {sample['temperature']}, seed 0), cached == uncached", f"`{sample['text']}`"),
        ("sample time, cached / uncached", f"{sample['cached_s']:.2f} s / {sample['uncached_s']:.2f} s"),
    ]
    return rows


def _size(nbytes: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:g} {unit}"
    return f"{nbytes} B"


if __name__ == "__main__":
    print("| measure | value |\n| --- | ---: |")
    for measure_name, value in run():
        print(f"| {measure_name} | {value} |")
