"""Benchmark: views vs copies — time per operation and bytes of new storage, on a 4096 × 4096 float32 tensor.

A view (``view``, ``reshape`` of a contiguous tensor, ``transpose``, ``permute``, ``.contiguous()``
of a contiguous tensor) only builds new metadata: its cost does not depend on the tensor's size and
it allocates nothing. A copy (``contiguous()`` of a transposed tensor, ``reshape`` that cannot be a
view, ``clone()``) reads and writes every byte (64 MiB here). "New storage" is counted exactly from
the result: its ``untyped_storage().nbytes()`` when its storage differs from the input's, else 0.
Times are medians over repeats (``torch.cuda.synchronize`` around each op on CUDA).

``run()`` returns the rows of a Markdown table (``tools/bench.py`` collects them); run this file
directly to print the table: ``python tools/bench_tensors.py``.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script: make `snippets` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from snippets.pytorch.views import shares_storage  # noqa: E402

N = 4096
VIEW_REPEATS, COPY_REPEATS = 2000, 7

OPS: list[tuple[str, str, Callable[[torch.Tensor], torch.Tensor]]] = [
    # (label, which input, operation); "x" is contiguous, "xt" is x.t() (a non-contiguous view)
    ("x.view(-1)", "x", lambda x: x.view(-1)),
    ("x.reshape(-1) (contiguous: a view)", "x", lambda x: x.reshape(-1)),
    ("x.t()", "x", lambda x: x.t()),
    ("x.permute(1, 0)", "x", lambda x: x.permute(1, 0)),
    ("x.contiguous() (already contiguous)", "x", lambda x: x.contiguous()),
    ("x.clone()", "x", lambda x: x.clone()),
    ("x.t().contiguous()", "xt", lambda xt: xt.contiguous()),
    ("x.t().reshape(-1) (no view: copies)", "xt", lambda xt: xt.reshape(-1)),
]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(device: str | torch.device = "cpu") -> list[tuple[str, float, int]]:
    """(label, median seconds per op, bytes of new storage) for every operation in ``OPS``."""
    device = torch.device(device)
    x = torch.randn(N, N, device=device)
    inputs = {"x": x, "xt": x.t()}
    out = []
    for label, which, op in OPS:
        inp = inputs[which]
        result = op(inp)  # warm-up (and the result whose storage is counted)
        new_bytes = 0 if shares_storage(result, inp) else result.untyped_storage().nbytes()
        del result
        copies = new_bytes > 0
        repeats = COPY_REPEATS if copies else VIEW_REPEATS
        times = []
        if copies:
            for _ in range(repeats):
                _sync(device)
                t0 = time.perf_counter()
                r = op(inp)
                _sync(device)
                times.append(time.perf_counter() - t0)
                del r
            seconds = statistics.median(times)
        else:  # metadata only: time a batch of calls, take the median batch
            for _ in range(5):
                t0 = time.perf_counter()
                for _ in range(repeats // 5):
                    op(inp)
                times.append((time.perf_counter() - t0) / (repeats // 5))
            seconds = statistics.median(times)
        out.append((label, seconds, new_bytes))
    return out


def run() -> list[tuple[str, str]]:
    """Rows ``(measure, value)`` of the benchmark table, CPU and (when present) CUDA."""
    rows: list[tuple[str, str]] = []
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for dev in devices:
        name = "CPU" if dev == "cpu" else f"CUDA ({torch.cuda.get_device_name(0)})"
        threads = f", {torch.get_num_threads()} threads" if dev == "cpu" else ""
        rows.append((f"{name}: input", f"x = randn({N}, {N}) float32, {N * N * 4 / 2**20:.0f} MiB{threads}"))
        for label, seconds, new_bytes in measure(dev):
            value = f"{_time(seconds)}, new storage {_size(new_bytes)}"
            if new_bytes:  # a copy reads and writes every byte once
                value += f" ({2 * new_bytes / seconds / 1e9:.1f} GB/s read + write)"
            rows.append((f"{name}: {label}", value))
    return rows


def _time(seconds: float) -> str:
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.2f} µs"


def _size(nbytes: int) -> str:
    for unit, scale in (("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} B"


if __name__ == "__main__":
    t_start = time.perf_counter()
    for k, v in run():
        print(k, v)
    print(f"({time.perf_counter() - t_start:.1f} s)")
