"""One dictionary for everything a training run must restore: the ``state_dict()`` of the model,
the optimizer, the learning-rate scheduler and the gradient scaler, saved with ``torch.save`` and read
back with ``torch.load(..., weights_only=True)``.

Reference: PyTorch tutorial *Saving and loading a general checkpoint for inference and/or resuming
training*; ``torch.serialization`` (``weights_only`` is the default since PyTorch 2.6).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import Tensor

__all__ = ["full_training_state", "restore_training_state", "save_training_state", "load_training_state", "state_diff"]

PARTS = ("model", "optimizer", "scheduler", "scaler")


# --8<-- [start:state]
def full_training_state(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    scaler: torch.amp.GradScaler | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """``{"model": ..., "optimizer": ..., "scheduler": ..., "scaler": ..., **extra}``.

    The parts are the objects' own ``state_dict()`` — **live references**, not copies: save them
    (or ``copy.deepcopy`` them) before training on. ``extra`` holds plain values such as ``epoch=3``.
    """
    state: dict[str, Any] = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    return {**state, **extra}


def restore_training_state(
    state: dict[str, Any],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> dict[str, Any]:
    """Load each part into freshly built objects (same architecture, same parameter order in the
    optimizer); return the ``extra`` entries."""
    given = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler}
    for name, obj in given.items():
        if obj is not None and name not in state:
            raise ValueError(f"{name} was given but the saved state has no {name!r} entry (keys: {sorted(state)})")
        if obj is None and name in state:
            raise ValueError(f"the saved state has a {name!r} entry: pass a {name} to restore it into")
    for name, obj in given.items():
        if obj is not None:
            obj.load_state_dict(state[name])
    return {k: v for k, v in state.items() if k not in PARTS}


# --8<-- [end:state]


# --8<-- [start:io]
def save_training_state(state: dict[str, Any], f: str | Path | BinaryIO) -> None:
    """``torch.save`` the dictionary (a file path or a binary buffer such as ``io.BytesIO``)."""
    torch.save(state, f)


def load_training_state(f: str | Path | BinaryIO, map_location: str | torch.device | None = None) -> dict[str, Any]:
    """``torch.load`` with ``weights_only=True``: tensors, numbers, strings, lists, dicts, ... but no
    arbitrary pickled objects (no code runs while loading)."""
    if isinstance(f, io.IOBase):
        f.seek(0)
    return torch.load(f, map_location=map_location, weights_only=True)


# --8<-- [end:io]


# --8<-- [start:diff]
def state_diff(a: Any, b: Any, path: str = "state") -> list[str]:
    """Where two nested states differ: ``[]`` when every key, int, float, string and tensor
    (dtype, shape, device and every value, NaN equal to NaN) is the same."""
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        if not (isinstance(a, Tensor) and isinstance(b, Tensor)):
            return [f"{path}: {type(a).__name__} vs {type(b).__name__}"]
        if (a.dtype, a.shape, a.device) != (b.dtype, b.shape, b.device):
            return [f"{path}: {a.dtype}{tuple(a.shape)}@{a.device} vs {b.dtype}{tuple(b.shape)}@{b.device}"]
        return [] if _all_same(a, b) else [f"{path}: tensor values differ"]
    if isinstance(a, dict) and isinstance(b, dict):
        if list(a) != list(b):
            return [f"{path}: keys {list(a)} vs {list(b)}"]
        return [d for k in a for d in state_diff(a[k], b[k], f"{path}[{k!r}]")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if type(a) is not type(b) or len(a) != len(b):
            return [f"{path}: {type(a).__name__} of {len(a)} vs {type(b).__name__} of {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in state_diff(x, y, f"{path}[{i}]")]
    if type(a) is not type(b) or a != b:
        return [f"{path}: {a!r} vs {b!r}"]
    return []


def _all_same(a: Tensor, b: Tensor) -> bool:
    """Element-wise equality, counting NaN == NaN (a diverged run must still compare equal to its copy)."""
    same = a == b
    if a.is_floating_point() or a.is_complex():
        same |= a.isnan() & b.isnan()
    return bool(same.all())


# --8<-- [end:diff]


if __name__ == "__main__":
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2)
    scaler = torch.amp.GradScaler("cpu")
    for _ in range(3):
        opt.zero_grad()
        scaler.scale(model(torch.randn(4, 3)).pow(2).mean()).backward()
        scaler.step(opt)
        scaler.update()
        sched.step()
    buf = io.BytesIO()
    save_training_state(full_training_state(model, opt, sched, scaler, epoch=3), buf)
    loaded = load_training_state(buf)
    print({k: type(v).__name__ for k, v in loaded.items()}, f"{buf.getbuffer().nbytes} bytes")
