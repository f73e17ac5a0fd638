"""Benchmark: clearing gradients with ``zero_()`` vs ``= None`` — memory held afterwards and time taken.

Model: 4 × ``nn.Linear(1024, 1024)`` with ReLUs (4.2 M parameters, float32; 16.8 MB of gradients),
a batch of 64. For each way of clearing (``optimizer.zero_grad(set_to_none=False)`` and ``=True``):
the bytes still held by ``.grad`` tensors after clearing (counted from the tensors), the change in
process RSS on the CPU (from ``/proc/self/statm``; the C allocator may keep freed blocks, so this can
stay near 0 even when the tensors are gone), ``torch.cuda.memory_allocated`` / ``memory_reserved``
on CUDA when present, and the median time of ``zero_grad`` itself and of the following
``backward()`` (which has to allocate new gradients after ``None`` and adds into the zeros after
``zero_()``).

``run()`` returns the rows of a Markdown table (``tools/bench.py`` collects them); run this file
directly to print the table: ``python tools/bench_grads.py``.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

if __package__ in (None, ""):  # run as a script: make `snippets` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from snippets.pytorch.zero_grad import grad_bytes  # noqa: E402

WIDTH, DEPTH, BATCH, REPEATS = 1024, 4, 64, 15


def _model(device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    layers = []
    for _ in range(DEPTH):
        layers += [nn.Linear(WIDTH, WIDTH), nn.ReLU()]
    return nn.Sequential(*layers).to(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss() -> int:
    """Resident set size of this process in bytes (Linux), or -1 where /proc is missing."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return -1


def measure(device: str | torch.device = "cpu") -> dict[str, dict[str, float]]:
    """For ``zero`` and ``none``: bytes held after clearing, memory deltas, median seconds."""
    device = torch.device(device)
    model = _model(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(BATCH, WIDTH, device=device)
    out: dict[str, dict[str, float]] = {}
    for how in ("zero", "none"):
        set_to_none = how == "none"
        clear_s, backward_s = [], []
        for _ in range(REPEATS):
            model(x).sum().backward()  # gradients exist
            _sync(device)
            rss, alloc = _rss(), torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=set_to_none)
            _sync(device)
            clear_s.append(time.perf_counter() - t0)
            held = grad_bytes(model.parameters())
            rss_drop = rss - _rss()
            alloc_drop = alloc - torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
            y = model(x).sum()
            _sync(device)
            t0 = time.perf_counter()
            y.backward()
            _sync(device)
            backward_s.append(time.perf_counter() - t0)
            opt.zero_grad(set_to_none=set_to_none)
        out[how] = {
            "held": held,
            "rss_drop": rss_drop,
            "alloc_drop": alloc_drop,
            "clear_s": statistics.median(clear_s),
            "backward_s": statistics.median(backward_s),
        }
    params = list(model.parameters())
    out["params"] = {"n": sum(p.numel() for p in params), "grad_bytes": sum(p.nbytes for p in params)}
    if device.type == "cuda":
        out["params"]["reserved"] = torch.cuda.memory_reserved(device)
    return out


def run() -> list[tuple[str, str]]:
    """Rows ``(measure, value)`` of the benchmark table, CPU and (when present) CUDA."""
    rows: list[tuple[str, str]] = []
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for dev in devices:
        name = "CPU" if dev == "cpu" else f"CUDA ({torch.cuda.get_device_name(0)})"
        r = measure(dev)
        n, nbytes = r["params"]["n"], r["params"]["grad_bytes"]
        rows.append(
            (
                f"{name}: model",
                f"{DEPTH} x Linear({WIDTH}, {WIDTH}), {n / 1e6:.1f} M params, "
                f"gradients {_size(nbytes)} (float32), batch {BATCH}",
            )
        )
        for how, label in (("zero", "zero_grad(set_to_none=False)"), ("none", "zero_grad(set_to_none=True)")):
            m = r[how]
            rows.append((f"{name}: {label}, .grad bytes held after", _size(int(m["held"]))))
            if dev == "cpu":
                rows.append((f"{name}: {label}, process RSS freed", _size(int(m["rss_drop"]))))
            else:
                rows.append((f"{name}: {label}, memory_allocated freed", _size(int(m["alloc_drop"]))))
            rows.append((f"{name}: {label}, time of zero_grad (median of {REPEATS})", f"{m['clear_s'] * 1e6:.0f} µs"))
            rows.append((f"{name}: {label}, time of next backward", f"{m['backward_s'] * 1e3:.2f} ms"))
        if dev == "cuda":
            reserved = _size(int(r["params"]["reserved"]))
            rows.append((f"{name}: memory_reserved at the end (cache kept by PyTorch)", reserved))
    return rows


def _size(nbytes: int) -> str:
    sign, nbytes = ("-" if nbytes < 0 else ""), abs(nbytes)
    for unit, scale in (("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{sign}{nbytes / scale:.1f} {unit}"
    return f"{sign}{nbytes} B"


if __name__ == "__main__":
    t_start = time.perf_counter()
    print("| measure | value |\n| --- | ---: |")
    for measure_name, value in run():
        print(f"| {measure_name} | {value} |")
    print(f"\n({time.perf_counter() - t_start:.1f} s)")
