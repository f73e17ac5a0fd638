"""The dispatcher, observed: log every ATen operator a forward and backward pass runs, and the keys that route it.

``OpLogger`` is a ``TorchDispatchMode``: PyTorch's dispatcher calls it (at the ``Python`` dispatch
key, after Autocast and Autograd, before the CPU/CUDA/Meta kernel) for every ATen op, in forward and
in backward. ``dispatch_keys`` and ``kernel_kinds`` read the dispatcher's own bookkeeping (private
``torch._C`` helpers, for teaching). Reference: PyTorch docs, "Extending PyTorch → Python dispatch
modes" (``torch.utils._python_dispatch``), and Edward Yang's "Let's talk about the PyTorch dispatcher".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = ["OpRecord", "OpLogger", "trace_step", "dispatch_keys", "kernel_kinds"]


class OpRecord(NamedTuple):
    """One ATen call: ``phase`` ("forward" or "backward"), ``op`` (``aten.addmm``), ``overload`` (``default``),
    and the devices and dtypes of its tensor arguments."""

    phase: str
    op: str
    overload: str
    devices: tuple[str, ...]
    dtypes: tuple[str, ...]


def _in_backward() -> bool:
    """True while the autograd engine runs a backward pass (its graph task id is >= 0)."""
    return torch._C._current_graph_task_id() >= 0


# --8<-- [start:logger]
class OpLogger(TorchDispatchMode):
    """Record every ATen operator that reaches the dispatcher's ``Python`` key, then run it unchanged.

    Use as a context manager around a forward and ``backward()``: ops the autograd engine runs are
    tagged ``"backward"``, the others with ``self.phase`` (``"forward"`` unless you set it; the seed
    gradient ``backward()`` makes before the engine starts comes from outside it). What is recorded
    is what the kernels below Autocast and Autograd see: ``F.linear`` shows up as ``aten.t`` +
    ``aten.addmm``, an autocast cast as ``aten._to_copy``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.records: list[OpRecord] = []
        self.phase = "forward"  # the tag of ops run outside the autograd engine

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, Tensor)]
        self.records.append(
            OpRecord(
                phase="backward" if _in_backward() else self.phase,
                op=str(func.overloadpacket),  # "aten.addmm"
                overload=func._overloadname,  # "default"
                devices=tuple(sorted({t.device.type for t in tensors})),
                dtypes=tuple(sorted({str(t.dtype).removeprefix("torch.") for t in tensors})),
            )
        )
        return func(*args, **kwargs)  # hand the call on to the next dispatch key (the CPU/CUDA kernel)

    def ops(self, phase: str | None = None) -> list[str]:
        """Op names in call order, optionally only those of one ``phase``."""
        if phase not in (None, "forward", "backward"):
            raise ValueError(f"phase must be None, 'forward' or 'backward', got phase={phase!r}")
        return [r.op for r in self.records if phase is None or r.phase == phase]

    def counts(self, phase: str | None = None) -> Counter[str]:
        """How often each op ran (optionally in one ``phase``)."""
        return Counter(self.ops(phase))


# --8<-- [end:logger]


def trace_step(module: nn.Module, *inputs: Any, loss: Callable[[Any], Tensor] | None = None) -> OpLogger:
    """Run ``loss(module(*inputs)).backward()`` under an :class:`OpLogger` and return the logger.

    ``loss`` defaults to ``out.sum()`` (a scalar, so ``backward()`` needs no gradient argument).
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
    loss = loss or (lambda out: out.sum())
    with OpLogger() as logger:
        out = loss(module(*inputs))
        if not isinstance(out, Tensor) or out.dim() != 0:
            raise ValueError(f"loss must return a 0-d tensor, got {type(out).__name__} {getattr(out, 'shape', '')}")
        logger.phase = "backward"  # from here on (the seed gradient included) it is the backward pass
        out.backward()
    return logger


# --8<-- [start:keys]
def dispatch_keys(x: Tensor) -> list[str]:
    """The dispatch keys a tensor carries, highest priority first (the order the dispatcher visits them).

    E.g. ``["AutocastCPU", "AutogradCPU", "ADInplaceOrView", "CPU"]`` for a CPU float tensor: Autocast
    (may cast), Autograd (records the graph), ADInplaceOrView (version counters and views), then the
    backend kernel chosen by device and layout. Thread-local state adds keys per call (an active
    ``TorchDispatchMode`` adds Python); tensors made under ``torch.inference_mode`` carry no Autograd or
    ADInplaceOrView key, while ``no_grad`` keeps the keys and only tells the Autograd kernel not to record.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    text = str(torch._C._dispatch_keys(x))  # "DispatchKeySet(CPU, ADInplaceOrView, AutogradCPU, AutocastCPU)"
    keys = [k.strip() for k in text[text.index("(") + 1 : text.rindex(")")].split(",") if k.strip()]
    return keys[::-1]  # the set prints lowest priority first


def kernel_kinds(op: str, keys: Iterable[str]) -> dict[str, str]:
    """What the dispatch table of ``op`` (``"aten::addmm"``) holds for each of ``keys``.

    Values are the dispatcher's own labels: ``"kernel"``, ``"autograd kernel"``, ``"backend fallback"``,
    ``"default backend kernel"`` …; a key with no entry is left out.
    """
    if "::" not in op:
        raise ValueError(f"op must be a qualified operator name such as 'aten::addmm', got op={op!r}")
    table = torch._C._dispatch_dump_table(op)
    if not table.strip():
        raise ValueError(f"op={op!r} is not a registered operator")
    wanted, out = list(keys), {}
    for line in table.splitlines():
        key, _, rest = line.partition(":")
        if key.strip() in wanted and "[" in rest:
            out[key.strip()] = rest[rest.rindex("[") + 1 : rest.rindex("]")]
    return {k: out[k] for k in wanted if k in out}


# --8<-- [end:keys]


if __name__ == "__main__":
    torch.manual_seed(0)
    layer = nn.Linear(3, 2)
    log = trace_step(layer, torch.randn(4, 3, requires_grad=True))
    for phase in ("forward", "backward"):
        print(f"{phase:>8}:", ", ".join(f"{op} x{n}" for op, n in log.counts(phase).items()))
    print("keys of a CPU tensor:", dispatch_keys(torch.randn(2)))
    print("aten::addmm kernels:", kernel_kinds("aten::addmm", ["AutocastCPU", "AutogradCPU", "CPU", "Meta"]))
