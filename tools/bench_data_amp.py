"""Benchmarks quoted by the DataLoader (4.28) and mixed-precision (4.29) pages.

- DataLoader throughput with 0/1/2 worker processes, torch's and the from-scratch one, on a dataset
  whose items cost 1 ms each (0.8 ms waiting, as for a disk or network read, plus some decoding work);
- autocast bfloat16 vs float32 on the CPU (float16 too on CUDA): time of a forward+backward step of an
  MLP, the relative error of one matmul, and the test accuracy of the same model trained both ways.

Run: ``python tools/bench_data_amp.py`` (or ``make bench``); ~1 minute.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

if __package__ in (None, ""):  # run as a script: make `snippets` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from snippets.pytorch.amp import precision_comparison  # noqa: E402
from snippets.pytorch.data_loading import ScratchDataLoader  # noqa: E402

N_ITEMS, BATCH = 256, 16


class SlowDataset:
    """Each item waits 0.8 ms (I/O) and does a little CPU work (decoding)."""

    def __len__(self) -> int:
        return N_ITEMS

    def __getitem__(self, i: int) -> torch.Tensor:
        time.sleep(0.0008)
        x = torch.full((64, 64), float(i))
        return (x @ x.T).mean(0)


def loader_throughput(kind: str, workers: int) -> float:
    """Samples per second over one epoch (workers started inside the timing, as in a real epoch)."""
    make = ScratchDataLoader if kind == "scratch" else torch.utils.data.DataLoader
    loader = make(SlowDataset(), batch_size=BATCH, num_workers=workers)
    start = time.perf_counter()
    n = sum(len(b) for b in loader)
    return n / (time.perf_counter() - start)


def amp_step_time(device: str, dtype: torch.dtype | None, width: int = 1024, batch: int = 256, reps: int = 10) -> float:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10))
    model.to(device)
    x = torch.randn(batch, width, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    times = []
    for r in range(reps + 2):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        if device == "cuda":
            torch.cuda.synchronize()
        if r >= 2:  # warm-up excluded
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_error(device: str, dtype: torch.dtype) -> float:
    """Median relative error of a 512x512 matmul computed under autocast vs float64."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(512, 512, generator=g), torch.randn(512, 512, generator=g)
    exact = a.double() @ b.double()
    with torch.autocast(device, dtype=dtype):
        approx = (a.to(device) @ b.to(device)).double().cpu()
    return float(((approx - exact).abs() / exact.abs().clamp_min(1e-3)).median())


def run() -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = [("torch", f"{torch.__version__}, {torch.get_num_threads()} intra-op threads")]
    for kind in ("torch", "scratch"):
        speeds = {w: loader_throughput(kind, w) for w in (0, 1, 2)}
        rows.append(
            (
                f"DataLoader ({kind}), {N_ITEMS} items of 1 ms, batch {BATCH}: samples/s with 0 / 1 / 2 workers",
                " / ".join(f"{speeds[w]:.0f}" for w in (0, 1, 2)) + f" ({speeds[2] / speeds[0]:.1f}x with 2)",
            )
        )
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for dev in devices:
        low = torch.bfloat16 if dev == "cpu" else torch.float16
        f32, lp = amp_step_time(dev, None), amp_step_time(dev, low)
        name = "CPU" if dev == "cpu" else f"CUDA ({torch.cuda.get_device_name(0)})"
        rows.append(
            (
                f"{name}: MLP 1024-1024-1024-10, batch 256, forward+backward, float32 / autocast {low}",
                f"{f32 * 1e3:.1f} ms / {lp * 1e3:.1f} ms ({f32 / lp:.2f}x)",
            )
        )
        rows.append(
            (f"{name}: median relative error of a 512x512 matmul under autocast {low}", f"{matmul_error(dev, low):.1e}")
        )
        res = precision_comparison(steps=300, n=512, hidden=64, device=dev)
        rows.append(
            (
                f"{name}: two spirals, 300 Adam steps, test accuracy / final loss",
                "; ".join(f"{k} {v['accuracy']:.3f} / {v['losses'][-1]:.4f}" for k, v in res.items()),
            )
        )
    return rows


if __name__ == "__main__":
    for measure, value in run():
        print(f"| {measure} | {value} |")
