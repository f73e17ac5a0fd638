"""Saving and loading tensors and models: ``state_dict`` files versus pickling the whole module.

Reference: PyTorch docs, "Saving and Loading Models" and ``torch.load(weights_only=True)``;
d2l.ai §6.6 File I/O (中文版 §5.5 读写文件). A ``state_dict`` file holds tensors under names; a pickled module holds
the object's ``__dict__`` plus a *reference* (module path + class name) to its class — never its code.
"""

from __future__ import annotations

import os
import pickletools
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import Tensor, nn

__all__ = [
    "TinyNet",
    "save_tensors",
    "load_tensors",
    "save_weights",
    "load_weights",
    "StateDictDiff",
    "compare_state_dict",
    "pickled_globals",
    "CodeOnLoad",
    "CALLS",
    "record_call",
]

PathLike = str | os.PathLike


class TinyNet(nn.Module):
    """``(B, 4) -> (B, 2)``: Linear, BatchNorm1d, Linear, plus one non-persistent buffer.

    The state_dict holds the two Linear layers' parameters, BatchNorm's weight/bias **and** its
    persistent buffers ``running_mean``, ``running_var``, ``num_batches_tracked``; the
    ``offset`` buffer is registered with ``persistent=False`` and is not saved.
    """

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.bn = nn.BatchNorm1d(8)
        self.fc2 = nn.Linear(8, 2)
        self.register_buffer("offset", torch.zeros(2), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(torch.relu(self.bn(self.fc1(x)))) + self.offset


def _check_parent(path: PathLike, argname: str = "path") -> Path:
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"{argname}={str(path)!r}: directory {str(path.parent)!r} does not exist")
    return path


def _check_tensor_tree(obj: Any, where: str = "obj") -> None:
    """Allow tensors in (nested) lists, tuples and dicts with string keys — nothing else."""
    if isinstance(obj, Tensor):
        return
    if isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            _check_tensor_tree(item, f"{where}[{i}]")
    elif isinstance(obj, dict):
        for key, item in obj.items():
            if not isinstance(key, str):
                raise TypeError(f"{where} has a non-string key {key!r}; use str keys")
            _check_tensor_tree(item, f"{where}[{key!r}]")
    else:
        raise TypeError(f"{where} is a {type(obj).__name__}; only tensors, lists, tuples and dicts are saved here")


# --8<-- [start:tensors]
def save_tensors(obj: Tensor | list | tuple | dict, path: PathLike) -> None:
    """Save a tensor, or lists/tuples/dicts (str keys) of tensors, with ``torch.save``."""
    path = _check_parent(path)
    _check_tensor_tree(obj)
    torch.save(obj, path)


def load_tensors(path: PathLike, map_location: str | torch.device | None = None) -> Any:
    """Load what :func:`save_tensors` wrote. ``weights_only=True``: no arbitrary objects."""
    return torch.load(path, map_location=map_location, weights_only=True)


# --8<-- [end:tensors]


@dataclass
class StateDictDiff:
    """How a loaded state_dict differs from a model's: names and ``(key, saved, model)`` shapes."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.mismatched)

    def describe(self) -> str:
        parts = []
        if self.missing:
            parts.append(f"missing keys (in the model, not in the file): {self.missing}")
        if self.unexpected:
            parts.append(f"unexpected keys (in the file, not in the model): {self.unexpected}")
        if self.mismatched:
            shapes = ", ".join(f"{k}: saved {s} vs model {m}" for k, s, m in self.mismatched)
            parts.append(f"shape mismatches: {shapes}")
        return "; ".join(parts) or "state_dicts match"


# --8<-- [start:weights]
def compare_state_dict(model: nn.Module, state_dict: dict[str, Tensor]) -> StateDictDiff:
    """Compare keys and shapes of ``state_dict`` with ``model.state_dict()`` without touching the model."""
    own = model.state_dict()
    diff = StateDictDiff(
        missing=[k for k in own if k not in state_dict],
        unexpected=[k for k in state_dict if k not in own],
    )
    for k, v in state_dict.items():
        if k in own and tuple(v.shape) != tuple(own[k].shape):
            diff.mismatched.append((k, tuple(v.shape), tuple(own[k].shape)))
    return diff


def save_weights(model: nn.Module, path: PathLike) -> None:
    """Save ``model.state_dict()``: parameters and persistent buffers, by name. No code, no class."""
    torch.save(model.state_dict(), _check_parent(path))


def load_weights(
    model: nn.Module, path: PathLike, *, strict: bool = True, map_location: str | torch.device = "cpu"
) -> StateDictDiff:
    """Load a :func:`save_weights` file into an existing ``model`` (the code comes from the class).

    Everything is checked **before** the model is touched: shape mismatches always raise, and
    with ``strict=True`` so do missing or unexpected keys. With ``strict=False`` the matching
    entries are loaded and the returned :class:`StateDictDiff` reports the rest.
    """
    state_dict = torch.load(path, map_location=map_location, weights_only=True)
    diff = compare_state_dict(model, state_dict)
    if diff.mismatched or (strict and diff):
        raise ValueError(f"{str(path)!r} does not fit {type(model).__name__}: {diff.describe()}")
    model.load_state_dict(state_dict, strict=False)  # keys and shapes were checked above
    return diff


# --8<-- [end:weights]


# --8<-- [start:globals]
def pickled_globals(path: PathLike | BinaryIO) -> list[str]:
    """The classes and functions a ``torch.save`` file refers to, in order of first use.

    ``torch.save`` writes a zip archive whose ``data.pkl`` is a pickle; a pickle names each
    class by ``module.qualname`` (opcode GLOBAL / STACK_GLOBAL) and stores no code.
    """
    with zipfile.ZipFile(path) as archive:
        name = next(n for n in archive.namelist() if n.endswith("data.pkl"))
        data = archive.read(name)
    found: list[str] = []
    pushed: list[Any] = []  # values pushed by string and memo-get opcodes (enough for STACK_GLOBAL)
    memo: dict[int, Any] = {}
    for opcode, arg, _ in pickletools.genops(data):
        op = opcode.name
        if op == "GLOBAL":  # protocol 2 (torch.save's default): arg = "module name"
            ref = str(arg).replace(" ", ".")
        elif op == "STACK_GLOBAL":  # protocol 4+: module and name were pushed just before
            ref = f"{pushed[-2]}.{pushed[-1]}"
        else:
            if "UNICODE" in op or "STRING" in op:
                pushed.append(arg)
            elif op.endswith("GET"):
                pushed.append(memo.get(arg))
            elif op == "MEMOIZE" or op.endswith("PUT"):
                memo[len(memo) if op == "MEMOIZE" else arg] = pushed[-1] if pushed else None
            else:
                pushed.append(None)  # anything else on top of the stack is not a name
            continue
        pushed.append(None)
        if ref not in found:
            found.append(ref)
    return found


# --8<-- [end:globals]


CALLS: list[str] = []


def record_call(message: str) -> str:
    """A harmless stand-in for ``os.system``: it only records that unpickling ran it."""
    CALLS.append(message)
    return message


# --8<-- [start:payload]
class CodeOnLoad:
    """An object whose unpickling *calls a function*: ``__reduce__`` returns ``(callable, args)``.

    Here the callable is the harmless :func:`record_call`; a hostile file could name
    ``os.system`` or ``builtins.exec`` instead. ``torch.load(weights_only=False)`` calls it;
    ``weights_only=True`` refuses the unknown global.
    """

    def __init__(self, message: str = "code ran while loading") -> None:
        self.message = message

    def __reduce__(self) -> tuple:
        return (record_call, (self.message,))


# --8<-- [end:payload]


if __name__ == "__main__":
    import tempfile

    torch.manual_seed(0)
    net = TinyNet().eval()
    x = torch.randn(3, 4)
    with tempfile.TemporaryDirectory() as tmp:
        save_weights(net, Path(tmp, "w.pt"))
        other = TinyNet().eval()
        load_weights(other, Path(tmp, "w.pt"))
        print("state_dict keys:", list(net.state_dict()))
        print("same output after load:", torch.equal(other(x), net(x)))
        torch.save(net, Path(tmp, "whole.pt"))
        print("whole-model pickle refers to:", pickled_globals(Path(tmp, "whole.pt"))[:3])
