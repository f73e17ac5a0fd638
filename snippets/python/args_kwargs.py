"""``*args`` and ``**kwargs``: packing in a definition, unpacking in a call, forwarding through a wrapper.

In a ``def``, ``*args`` packs surplus positional arguments into a tuple and ``**kwargs`` surplus keyword arguments into
a dict; in a call, ``*`` unpacks any iterable into positional arguments and ``**`` any mapping into keyword arguments.
Reference: Python tutorial 4.9 "More on Defining Functions"; language reference 6.3.4 "Calls"; PEP 3102 (keyword-only
arguments), PEP 448 (additional unpacking generalizations), PEP 570 (positional-only parameters).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

__all__ = ["packed", "forward_all", "bind_arguments", "stack_scaled", "Wrapper"]

R = TypeVar("R")


# --8<-- [start:packing]
def packed(*args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Return what the definition packed: ``args`` is always a tuple, ``kwargs`` always a new dict."""
    return args, kwargs


def forward_all(fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
    """Call ``fn`` with exactly the arguments received: ``forward_all(f, *a, **k) == f(*a, **k)``.

    ``fn`` is positional-only (the ``/``), so a keyword argument that happens to be called ``fn`` is forwarded
    instead of colliding with it.
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    return fn(*args, **kwargs)  # unpack: the tuple back into positions, the dict back into keywords


# --8<-- [end:packing]


# --8<-- [start:bind]
def bind_arguments(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """How Python would match this call to ``fn``'s parameters, defaults included (``inspect.signature(...).bind``).

    The ``*args`` parameter receives a tuple, the ``**kwargs`` parameter a dict. A call Python would reject raises
    the same ``TypeError`` here, without calling ``fn``.
    """
    bound = inspect.signature(fn).bind(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


# --8<-- [end:bind]


# --8<-- [start:keyword_only]
def stack_scaled(*tensors: Tensor, scale: float = 1.0, dim: int = 0) -> Tensor:
    """``torch.stack(tensors, dim) * scale``. tensors: k tensors of one shape ``S`` -> ``(k, *S)`` for ``dim=0``.

    ``scale`` and ``dim`` come after ``*tensors``, so they are keyword-only: every positional argument is a tensor.
    """
    if not tensors:
        raise ValueError("stack_scaled needs at least one tensor, got none")
    for i, t in enumerate(tensors):
        if not isinstance(t, Tensor):
            raise TypeError(
                f"argument {i} is {type(t).__name__}, not a Tensor (scale and dim are keyword-only: write scale=...)"
            )
    return torch.stack(tensors, dim=dim) * scale


# --8<-- [end:keyword_only]


# --8<-- [start:wrapper]
class Wrapper(nn.Module):
    """Wrap any module and forward every call unchanged, whatever its signature; counts the calls.

    A stand-in for logging, timing or casting wrappers: ``forward(*args, **kwargs)`` accepts anything and hands it on
    with ``self.inner(*args, **kwargs)``, so ``Wrapper(m)(...) == m(...)`` for every way of calling ``m``.
    The wrapped module's parameters appear under the prefix ``inner.``.
    """

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        if not isinstance(inner, nn.Module):
            raise TypeError(f"inner must be an nn.Module, got {type(inner).__name__}")
        self.inner = inner
        self.calls = 0

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.inner(*args, **kwargs)  # not self.inner.forward(...): that would skip the inner hooks


# --8<-- [end:wrapper]


if __name__ == "__main__":
    print("packed(1, 2, x=3) ->", packed(1, 2, x=3))
    print("forward_all(max, [3, 1, 2], key=abs) ->", forward_all(max, [3, 1, 2], key=abs))
    print("bind:", bind_arguments(lambda a, *rest, scale=1.0, **extra: None, 1, 2, 3, scale=2.0, mode="x"))
    attn = nn.MultiheadAttention(4, 2, batch_first=True)
    q = torch.randn(1, 3, 4)
    wrapped = Wrapper(attn)
    out, weights = wrapped(q, q, q, need_weights=True, average_attn_weights=False)
    print("Wrapper(MultiheadAttention): out", tuple(out.shape), "weights", tuple(weights.shape), "calls", wrapped.calls)
