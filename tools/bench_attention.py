"""Benchmark: our from-scratch MultiHeadAttention vs ``nn.MultiheadAttention`` (forward + backward).

Setting: self-attention, ``B=8, L=128, E=256, h=8``, float32, training mode (dropout 0), no mask,
``need_weights=False`` for both; weights copied so both compute the same function. The time of one
forward + backward is the median of several repeats after a warm-up; the goal is ours <= 1.5x the
built-in's time. Runs on the CPU, and on CUDA when available.

``run()`` returns the rows of a Markdown table (``tools/bench.py`` collects them); run this file
directly to print the table: ``python tools/bench_attention.py``.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

if __package__ in (None, ""):  # run as a script: make `snippets` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from snippets.attention.multihead import MultiHeadAttention  # noqa: E402

B, L, E, H = 8, 128, 256, 8
GOAL = 1.5  # ours / built-in, at most


def _step(module: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        x.grad = None
        module.zero_grad(set_to_none=True)
        out, _ = module(x, x, x, need_weights=False)
        out.backward(grad)

    return step


def _median_seconds(fn: Callable[[], None], device: torch.device, repeats: int, warmup: int = 3) -> float:
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(device: str | torch.device = "cpu", repeats: int = 15) -> tuple[float, float]:
    """Median seconds of one forward + backward: ``(ours, nn.MultiheadAttention)``.

    The two modules are timed in alternating rounds so that load changes on a shared machine
    hit both alike."""
    device = torch.device(device)
    torch.manual_seed(0)
    ref = nn.MultiheadAttention(E, H, batch_first=True, device=device)
    ours = MultiHeadAttention(E, H, device=device).load_from_torch(ref)
    ref.train(), ours.train()
    x = torch.randn(B, L, E, device=device, requires_grad=True)
    grad = torch.randn(B, L, E, device=device)
    with torch.no_grad():  # same function, so the race is fair
        torch.testing.assert_close(ours(x, x, x)[0], ref(x, x, x, need_weights=False)[0], rtol=1e-4, atol=1e-5)
    t_ours, t_ref = [], []
    rounds = 3
    for _ in range(rounds):
        t_ours.append(_median_seconds(_step(ours, x, grad), device, max(1, repeats // rounds)))
        t_ref.append(_median_seconds(_step(ref, x, grad), device, max(1, repeats // rounds)))
    return statistics.median(t_ours), statistics.median(t_ref)


def run() -> list[tuple[str, str]]:
    """Rows ``(measure, value)`` of the benchmark table, CPU and (when present) CUDA."""
    rows: list[tuple[str, str]] = [
        ("setting", f"self-attention B={B}, L={L}, E={E}, h={H}, float32, forward + backward"),
        ("torch", f"{torch.__version__}, {torch.get_num_threads()} CPU threads"),
    ]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for dev in devices:
        ours, ref = measure(dev)
        name = "CPU" if dev == "cpu" else f"CUDA ({torch.cuda.get_device_name(0)})"
        ratio = ours / ref
        rows += [
            (f"{name}: ours `MultiHeadAttention`", f"{ours * 1e3:.2f} ms"),
            (f"{name}: `nn.MultiheadAttention`", f"{ref * 1e3:.2f} ms"),
            (f"{name}: ratio ours / built-in (goal <= {GOAL})", f"{ratio:.2f}x {'ok' if ratio <= GOAL else 'OVER'}"),
        ]
    return rows


if __name__ == "__main__":
    print("| measure | value |\n| --- | ---: |")
    for measure_name, value in run():
        print(f"| {measure_name} | {value} |")
