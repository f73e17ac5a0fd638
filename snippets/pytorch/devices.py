"""Devices: choosing one, moving nested batches to it, and what ``Module.to()`` / ``.cuda()`` really moves.

``module_apply_`` re-implements ``nn.Module._apply`` (the engine behind ``.to()``, ``.cuda()``,
``.double()``, ...): a depth-first walk over the submodules that replaces the tensors registered in
each module's ``_parameters`` and ``_buffers`` (and the parameters' ``.grad``). Nothing else is
touched: the Python objects, the module tree, and plain tensor attributes stay where they were.
Reference: PyTorch docs, ``torch.nn.Module.to``, "CUDA semantics"; d2l.ai §6.7 (GPUs).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["get_device", "to_device", "module_apply_"]


# --8<-- [start:get_device]
def get_device(prefer: str = "cuda") -> torch.device:
    """``torch.device(prefer)`` when that backend is available, else the CPU.

    ``prefer``: ``"cuda"``, ``"mps"`` or ``"cpu"``.
    """
    available = {
        "cuda": torch.cuda.is_available(),
        "mps": torch.backends.mps.is_available(),
        "cpu": True,
    }
    if prefer not in available:
        raise ValueError(f"prefer={prefer!r} must be one of {sorted(available)}")
    return torch.device(prefer if available[prefer] else "cpu")


# --8<-- [end:get_device]


# --8<-- [start:to_device]
def to_device(obj: Any, device: torch.device | str, *, non_blocking: bool = False) -> Any:
    """Move every tensor inside ``obj`` (nested tuples, named tuples, lists, dicts) to ``device``.

    Containers are rebuilt with the same type; modules are moved in place (``Module.to``) and
    returned; anything else (numbers, strings, None) is returned unchanged. ``non_blocking=True``
    lets a copy from pinned CPU memory to a GPU overlap with computation.
    """
    device = torch.device(device)
    if isinstance(obj, Tensor):
        return obj.to(device, non_blocking=non_blocking)
    if isinstance(obj, nn.Module):
        return obj.to(device, non_blocking=non_blocking)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # a named tuple
        return type(obj)(*(to_device(v, device, non_blocking=non_blocking) for v in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(to_device(v, device, non_blocking=non_blocking) for v in obj)
    if isinstance(obj, dict):
        out = obj.copy()  # keeps OrderedDict / defaultdict and their settings
        for key, value in obj.items():
            out[key] = to_device(value, device, non_blocking=non_blocking)
        return out
    return obj


# --8<-- [end:to_device]


# --8<-- [start:module_apply]
def module_apply_(module: nn.Module, fn: Callable[[Tensor], Tensor]) -> nn.Module:
    """Apply ``fn`` to every parameter, gradient and buffer, depth-first (children before parents).

    Like ``nn.Module._apply``: a parameter keeps its identity when the new tensor has a compatible
    type (a dtype change, CPU <-> CUDA: ``p.data`` is replaced, so an optimizer holding ``p`` still
    sees it); otherwise (e.g. to ``meta``) a new ``Parameter`` is registered. Buffers are replaced
    in ``_buffers``. Returns ``module``.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
    for child in module.children():
        module_apply_(child, fn)
    for name, p in module._parameters.items():
        if p is None:
            continue
        grad = p.grad
        with torch.no_grad():
            new = fn(p)
        if torch._has_compatible_shallow_copy_type(p, new):  # e.g. CPU <-> CUDA, any dtype change
            p.grad = None
            p.data = new  # same Parameter object, new tensor underneath
        else:  # e.g. to the meta device: a new Parameter object
            p = module._parameters[name] = nn.Parameter(new, requires_grad=p.requires_grad)
        if grad is not None:
            with torch.no_grad():
                p.grad = fn(grad)
    for name, b in module._buffers.items():
        if b is not None:
            module._buffers[name] = fn(b)
    return module


# --8<-- [end:module_apply]


if __name__ == "__main__":

    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(2, 2)
            self.register_buffer("scale", torch.ones(2))
            self.offset = torch.zeros(2)  # plain attribute: not registered, not moved

    m = module_apply_(Scaled(), lambda t: t.to(torch.float64))
    print("lin.weight", m.lin.weight.dtype, "| scale (buffer)", m.scale.dtype, "| offset (attribute)", m.offset.dtype)
    batch = {"x": torch.zeros(2), "lens": [torch.tensor(2), 3]}
    print("device chosen:", get_device(), "| batch moved:", to_device(batch, "meta"))
