"""Module and tensor hooks: read or rewrite activations, inputs and gradients without editing ``forward``.

Four uses: feature extraction (``register_forward_hook``), gradient inspection and clipping
(``register_full_backward_hook``, ``Tensor.register_hook``), input preprocessing (``register_forward_pre_hook``) and
activation statistics. Every ``register_*`` returns a ``RemovableHandle``; ``handle.remove()`` undoes it.
Reference: PyTorch docs, ``torch.nn.Module.register_forward_hook`` and friends, ``torch.Tensor.register_hook``,
"Autograd mechanics — Backward hooks execution".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

__all__ = [
    "ActivationStats",
    "activation_stats",
    "capture_activations",
    "capture_gradients",
    "clamp_grad_hook",
    "register_grad_clamp",
    "register_input_transform",
    "scale_grad_hook",
]


def _resolve(model: nn.Module, names: Iterable[str]) -> dict[str, nn.Module]:
    """``{name: submodule}`` for ``names`` (as in ``model.named_modules()``); unknown names are a ValueError."""
    if isinstance(names, str):
        raise TypeError(f"names must be a list of module names, not a str: got names={names!r}")
    modules = dict(model.named_modules())
    names = list(names)
    unknown = [n for n in names if n not in modules]
    if unknown:
        raise ValueError(f"names={unknown} are not submodules of the model; available: {sorted(modules)}")
    return {n: modules[n] for n in names}


def _detach(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.detach()
    if isinstance(value, tuple | list):
        return type(value)(_detach(v) for v in value)
    return value


# --8<-- [start:capture]
@contextmanager
def capture_activations(model: nn.Module, names: Sequence[str]) -> Iterator[dict[str, Any]]:
    """Inside the ``with`` block, every call of the named submodules stores its output in the yielded dict.

    ``names`` are ``named_modules()`` names (``"0"``, ``"encoder.layer.1"``, ``""`` for the model itself). Outputs are
    detached (features, not part of the graph); a module called twice keeps its last output. On exit the hooks are
    removed, so later forward passes capture nothing.
    """
    store: dict[str, Any] = {}
    handles: list[RemovableHandle] = []

    def make_hook(name: str) -> Callable[[nn.Module, tuple[Any, ...], Any], None]:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            store[name] = _detach(output)  # returning None keeps the output unchanged

        return hook

    try:
        for name, module in _resolve(model, names).items():
            handles.append(module.register_forward_hook(make_hook(name)))
        yield store
    finally:
        for h in handles:
            h.remove()


# --8<-- [end:capture]


# --8<-- [start:capture_grads]
@contextmanager
def capture_gradients(model: nn.Module, names: Sequence[str]) -> Iterator[dict[str, Tensor]]:
    """Inside the ``with`` block, each backward pass stores ``dL/dy`` for the output ``y`` of the named submodules.

    A forward hook puts a ``Tensor.register_hook`` on each output, so ``store[name]`` has the output's shape and
    equals what ``register_full_backward_hook`` reports as ``grad_output[0]`` — without that hook's two caveats: a
    warning when no input of the module requires grad (the first layer), and an error when the output is then
    modified in place (``ReLU(inplace=True)``). Modules must return one tensor. Hooks are removed on exit.
    """
    store: dict[str, Tensor] = {}
    handles: list[RemovableHandle] = []

    def make_hook(name: str) -> Callable[[nn.Module, tuple[Any, ...], Any], None]:
        def save(grad: Tensor) -> None:
            store[name] = grad.detach().clone()  # returning None leaves the gradient unchanged

        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            if not isinstance(output, Tensor):
                raise TypeError(f"capture_gradients needs {name!r} to return a tensor, got {type(output).__name__}")
            if output.requires_grad:  # under no_grad there is nothing to capture
                output.register_hook(save)

        return hook

    try:
        for name, module in _resolve(model, names).items():
            handles.append(module.register_forward_hook(make_hook(name)))
        yield store
    finally:
        for h in handles:
            h.remove()


# --8<-- [end:capture_grads]


# --8<-- [start:tensor_hooks]
def scale_grad_hook(s: float) -> Callable[[Tensor], Tensor]:
    """A ``Tensor.register_hook`` hook that multiplies the gradient flowing through the tensor by ``s``."""
    if isinstance(s, bool) or not isinstance(s, int | float) or not math.isfinite(s):
        raise ValueError(f"s must be a finite real number, got s={s!r}")
    return lambda grad: grad * s  # the returned tensor replaces the gradient


def clamp_grad_hook(bound: float) -> Callable[[Tensor], Tensor]:
    """A ``Tensor.register_hook`` hook that clamps every gradient element to ``[-bound, bound]``."""
    if isinstance(bound, bool) or not isinstance(bound, int | float) or not bound > 0:
        raise ValueError(f"bound must be a positive number, got bound={bound!r}")
    return lambda grad: grad.clamp(-bound, bound)


def register_grad_clamp(model: nn.Module, bound: float) -> list[RemovableHandle]:
    """Clamp each parameter's gradient *during* backward (same result as ``clip_grad_value_`` after it).

    The hook sees a parameter's total gradient of the backward pass (all uses summed), before it is accumulated
    into ``.grad``. Returns the handles; ``h.remove()`` for each one switches clipping off.
    """
    hook = clamp_grad_hook(bound)
    return [p.register_hook(hook) for p in model.parameters() if p.requires_grad]


# --8<-- [end:tensor_hooks]


# --8<-- [start:pre_hook]
def register_input_transform(module: nn.Module, fn: Callable[[Tensor], Tensor]) -> RemovableHandle:
    """Rewrite the first positional input of every ``module(...)`` call as ``fn(x)`` (a forward pre-hook).

    A pre-hook receives the positional arguments as a tuple ``args`` (keyword arguments are not in it) and may
    return a replacement tuple. Typical use: normalise or cast inputs of a model you cannot edit.
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")

    def hook(mod: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        if not args:
            raise ValueError(f"{type(mod).__name__} was called without a positional input for the transform")
        return (fn(args[0]), *args[1:])

    return module.register_forward_pre_hook(hook)


# --8<-- [end:pre_hook]


# --8<-- [start:stats]
class ActivationStats(NamedTuple):
    """Summary of one module's output over a batch."""

    mean: float
    std: float
    frac_zero: float  # fraction of exactly-zero elements
    frac_dead: float  # fraction of units (dim 1: features/channels) that are 0 for every sample; nan for 1-D outputs
    shape: tuple[int, ...]


def activation_stats(
    model: nn.Module, *inputs: Any, types: tuple[type[nn.Module], ...] = (nn.ReLU,)
) -> dict[str, ActivationStats]:
    """Run ``model(*inputs)`` once without grad and summarise the output of every submodule of ``types``.

    Hooks are registered on all matching submodules, and removed again even if the forward pass raises.
    """
    if (
        not isinstance(types, tuple)
        or not types
        or not all(isinstance(t, type) and issubclass(t, nn.Module) for t in types)
    ):
        raise TypeError(f"types must be a non-empty tuple of nn.Module subclasses, got types={types!r}")
    stats: dict[str, ActivationStats] = {}

    def make_hook(name: str) -> Callable[[nn.Module, tuple[Any, ...], Tensor], None]:
        def hook(module: nn.Module, args: tuple[Any, ...], out: Tensor) -> None:
            out = out.detach().double()
            std = out.std().item() if out.numel() > 1 else 0.0
            zero = out == 0
            dead = zero.transpose(0, 1).reshape(out.shape[1], -1).all(1) if out.dim() >= 2 else None
            frac_dead = float("nan") if dead is None else dead.double().mean().item()
            stats[name] = ActivationStats(
                out.mean().item(), std, zero.double().mean().item(), frac_dead, tuple(out.shape)
            )

        return hook

    handles = [m.register_forward_hook(make_hook(n)) for n, m in model.named_modules() if isinstance(m, types)]
    if not handles:
        raise ValueError(f"the model has no submodule of types={tuple(t.__name__ for t in types)}")
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
    return stats


# --8<-- [end:stats]


if __name__ == "__main__":
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    x = torch.randn(16, 4)
    with capture_activations(net, ["1"]) as acts:
        net(x)
    print("captured", {k: tuple(v.shape) for k, v in acts.items()}, "; hooks left:", len(net[1]._forward_hooks))
    for name, s in activation_stats(net, x).items():
        print(f"ReLU {name}: mean={s.mean:.3f} std={s.std:.3f} zero={s.frac_zero:.0%} dead units={s.frac_dead:.0%}")
    h = torch.randn(3, requires_grad=True)
    handle = h.register_hook(scale_grad_hook(10.0))
    (h * 2).sum().backward()
    handle.remove()
    print("gradient of 2*h.sum() with a x10 hook:", h.grad.tolist())
