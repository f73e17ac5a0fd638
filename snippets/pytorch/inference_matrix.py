"""``model.eval()`` vs ``torch.no_grad()`` (and ``torch.inference_mode()``), measured cell by cell.

Two independent switches: ``train()``/``eval()`` is a flag that Dropout and BatchNorm read (what
the forward computes); ``no_grad``/``inference_mode`` is autograd's thread-local grad mode (whether
the forward is recorded: ``grad_fn`` and the tensors saved for backward). ``inference_matrix`` runs
one model in every combination and reports both effects; saved tensors are counted with
``torch.autograd.graph.saved_tensors_hooks``. Reference: PyTorch docs, "Autograd mechanics" —
"Locally disabling gradient computation" and "Hooks for saved tensors".
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["CONTEXTS", "Cell", "Saved", "inference_matrix", "measure_saved"]

CONTEXTS: dict[str, Callable[[], Any]] = {
    "grad": torch.enable_grad,
    "no_grad": torch.no_grad,
    "inference_mode": torch.inference_mode,
}


@dataclass(frozen=True)
class Saved:
    """What autograd kept for backward while ``measure_saved`` ran ``fn``."""

    result: Any
    count: int  # tensors handed to the pack hook
    nbytes: int  # their total size, references to parameters and inputs included
    activation_nbytes: int  # distinct storages not shared with ``known``: the memory backward keeps alive


# --8<-- [start:measure]
def measure_saved(fn: Callable[[], Any], known: Iterable[Tensor] = ()) -> Saved:
    """Run ``fn()`` and count every tensor autograd saves for backward (``numel * element_size``).

    ``nbytes`` adds up every saved tensor as autograd sees it (one tensor saved by two ops counts
    twice). ``activation_nbytes`` counts each storage once and skips storages shared with ``known``
    (parameters, buffers, inputs): keeping a reference to a weight costs no extra memory.
    """
    known_ptrs = {t.untyped_storage().data_ptr() for t in known}
    sizes: list[int] = []
    extra: dict[int, int] = {}  # storage address -> bytes, for saved tensors that are new memory

    def pack(t: Tensor) -> Tensor:
        nbytes, ptr = t.numel() * t.element_size(), t.untyped_storage().data_ptr()
        sizes.append(nbytes)
        if ptr not in known_ptrs:
            extra[ptr] = max(extra.get(ptr, 0), nbytes)
        return t  # keep the tensor itself: backward still works

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        result = fn()
    return Saved(result, len(sizes), sum(sizes), sum(extra.values()))
    # --8<-- [end:measure]


@dataclass(frozen=True)
class Cell:
    """One combination of module mode and grad mode (see :func:`inference_matrix`)."""

    training: bool
    context: str
    output: Tensor  # detached
    requires_grad: bool
    grad_fn: str | None
    is_inference: bool
    saved_count: int
    saved_nbytes: int
    activation_nbytes: int
    buffers_changed: bool  # e.g. BatchNorm running statistics updated by this forward


@contextmanager
def _seeded(device: torch.device, seed: int) -> Iterator[None]:
    """Same random numbers (dropout masks) in every cell; the caller's RNG state is restored."""
    cuda = device.type == "cuda"
    with torch.random.fork_rng(devices=[device] if cuda else []):
        torch.random.default_generator.manual_seed(seed)
        if cuda:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        yield


# --8<-- [start:matrix]
def inference_matrix(
    model: nn.Module,
    x: Tensor,
    contexts: Iterable[str] = ("grad", "no_grad", "inference_mode"),
    *,
    seed: int = 0,
) -> dict[tuple[bool, str], Cell]:
    """``{(training, context): Cell}`` for ``training`` in (True, False) and each grad ``context``.

    Every cell runs a fresh deep copy of ``model`` (so BatchNorm statistics start equal and
    ``model`` itself is untouched) on ``x: (N, *)`` with the same RNG seed (same dropout mask).
    """
    contexts = list(contexts)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not contexts or any(c not in CONTEXTS for c in contexts):
        raise ValueError(f"contexts={contexts} must be a non-empty list drawn from {list(CONTEXTS)}")
    cells = {}
    for training in (True, False):
        for ctx in contexts:
            m = copy.deepcopy(model).train(training)
            before = [b.clone() for b in m.buffers()]
            with _seeded(x.device, seed), CONTEXTS[ctx]():
                saved = measure_saved(lambda m=m: m(x), known=[*m.parameters(), *m.buffers(), x])
            out = saved.result
            changed = any(not torch.equal(a, b) for a, b in zip(before, m.buffers()))
            cells[training, ctx] = Cell(
                training, ctx, out.detach(), out.requires_grad,
                None if out.grad_fn is None else type(out.grad_fn).__name__, out.is_inference(),
                saved.count, saved.nbytes, saved.activation_nbytes, changed,
            )  # fmt: skip
    return cells
    # --8<-- [end:matrix]


if __name__ == "__main__":
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 2))
    for (training, ctx), c in inference_matrix(net, torch.randn(5, 4)).items():
        mode = "train" if training else "eval "
        print(
            f"{mode} {ctx:15} grad_fn={c.grad_fn!s:15} saved={c.saved_nbytes:5} B  BN stats moved={c.buffers_changed}"
        )
