"""Benchmark: eager PyTorch vs ``torch.compile`` (default backend, inductor) on three small models.

Models (float32, inference under ``torch.no_grad()``):

- MLP: ``Linear(256, 1024) -> GELU -> Linear(1024, 256)``, batch 64 — dominated by two matrix products;
- Transformer encoder layer: ``nn.TransformerEncoderLayer(128, 4, 512, dropout=0, batch_first=True)``,
  input ``(8, 64, 128)``, in eval mode (eager takes PyTorch's fused "fast path": Dynamo captures a single
  op) and in train mode with dropout 0 (the math path: a dozen ops for inductor to fuse);
- pointwise chain: ``layer_norm(gelu(x) * sigmoid(x) + x)`` on ``(2048, 1024)`` — memory-bound elementwise
  work that inductor fuses into a few loops (8 MiB: larger than the caches).

For each: the number of ops TorchDynamo captures, the first compiled call (capture + inductor code
generation + C++ compilation, *cold* in a fresh inductor cache) and the steady-state time per call eager
vs compiled (fastest of 9 alternating samples), whose ratio is the speed-up. Outputs are checked against
eager. CPU timed with one intra-op thread, and CUDA when present (Triton kernels instead of C++).

``run()`` returns the rows of a Markdown table (``tools/bench.py`` collects them; ``make bench``);
run this file directly to print the table: ``python tools/bench_compile.py``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

CPU_THREADS = 1  # a shared 2-core machine stalls multi-threaded micro-benchmarks (as in bench_llm.py)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _pointwise(x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(F.gelu(x) * torch.sigmoid(x) + x, (x.shape[-1],))


def models(device: torch.device) -> dict[str, tuple[Callable, torch.Tensor]]:
    """name -> (callable, input) for the three benchmarks, seeded."""
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(256, 1024), nn.GELU(), nn.Linear(1024, 256)).to(device).eval()
    fast = nn.TransformerEncoderLayer(128, 4, 512, dropout=0.0, batch_first=True).to(device).eval()
    math = nn.TransformerEncoderLayer(128, 4, 512, dropout=0.0, batch_first=True).to(device).train()
    x = torch.randn(8, 64, 128, device=device)
    return {
        "MLP 256-1024-256, batch 64": (mlp, torch.randn(64, 256, device=device)),
        "Transformer encoder layer d=128, (8, 64, 128), eval (fused fast path)": (fast, x),
        "Transformer encoder layer d=128, (8, 64, 128), train mode, dropout 0 (math path)": (math, x),
        "pointwise chain layer_norm(gelu(x)*sigmoid(x)+x), (2048, 1024)": (
            _pointwise,
            torch.randn(2048, 1024, device=device),
        ),
    }


def _calls_per_sample(fn: Callable, x: torch.Tensor, device: torch.device, sample_s: float) -> int:
    fn(x)
    _sync(device)
    start = time.perf_counter()
    fn(x)
    _sync(device)
    return max(1, int(sample_s / max(time.perf_counter() - start, 1e-6)))


def _sample(fn: Callable, x: torch.Tensor, device: torch.device, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn(x)
    _sync(device)
    return (time.perf_counter() - start) / calls


def time_model(fn: Callable, x: torch.Tensor, device: torch.device, samples: int = 9) -> dict[str, float]:
    """Cold first compiled call, then steady-state eager and compiled seconds per call: samples of the
    two alternate (a busy machine slows both alike) and the fastest sample of each counts."""
    torch._dynamo.reset()
    with torch.no_grad():
        ops = torch._dynamo.explain(fn)(x).op_count
        torch._dynamo.reset()
        compiled = torch.compile(fn)
        _sync(device)
        start = time.perf_counter()
        out = compiled(x)
        _sync(device)
        compile_s = time.perf_counter() - start
        torch.testing.assert_close(out, fn(x), rtol=1e-4, atol=1e-4)
        calls = _calls_per_sample(fn, x, device, 0.05)
        _calls_per_sample(compiled, x, device, 0.05)  # warm-up
        eager, comp = [], []
        for _ in range(samples):
            eager.append(_sample(fn, x, device, calls))
            comp.append(_sample(compiled, x, device, calls))
    eager_s, compiled_s = min(eager), min(comp)
    return {
        "ops": ops,
        "compile_s": compile_s,
        "eager_s": eager_s,
        "compiled_s": compiled_s,
        "speedup": eager_s / compiled_s,
    }


def run() -> list[tuple[str, str]]:
    """Rows ``(measure, value)`` of the benchmark table, CPU and (when present) CUDA."""
    rows: list[tuple[str, str]] = [
        (
            "set-up",
            f"torch {torch.__version__}, {os.cpu_count()} CPU cores; CPU timed with {CPU_THREADS} intra-op thread; "
            "inductor with a cold cache; fastest of 9 alternating samples",
        ),
    ]
    if shutil.which("g++") is None and shutil.which("c++") is None:
        return rows + [("CPU", "skipped: inductor needs a C++ compiler (g++) on the CPU")]
    cache = tempfile.mkdtemp(prefix="inductor-bench-")
    old = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache  # cold: nothing compiled earlier is reused
    threads = torch.get_num_threads()
    try:
        devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
        for device in devices:
            where = "CPU" if device.type == "cpu" else f"CUDA ({torch.cuda.get_device_name(0)})"
            torch.set_num_threads(CPU_THREADS if device.type == "cpu" else threads)
            for name, (fn, x) in models(device).items():
                t = time_model(fn, x, device)
                rows += [
                    (f"{where}: {name}: ops captured / first compiled call", f"{t['ops']} / {t['compile_s']:.1f} s"),
                    (
                        f"{where}: {name}: eager / compiled per call",
                        f"{t['eager_s'] * 1e3:.3f} ms / {t['compiled_s'] * 1e3:.3f} ms = {t['speedup']:.2f}x",
                    ),
                ]
    finally:
        torch.set_num_threads(threads)
        torch._dynamo.reset()
        if old is None:
            os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
        else:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = old
        shutil.rmtree(cache, ignore_errors=True)
    return rows


if __name__ == "__main__":
    print("| measure | value |\n| --- | ---: |")
    for measure_name, value in run():
        print(f"| {measure_name} | {value} |")
