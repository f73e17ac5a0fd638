"""Grad modes from scratch: a ``no_grad`` context manager and decorator built on ``torch.set_grad_enabled``.

``torch.no_grad`` is a thin wrapper around one thread-local flag: ``__enter__`` remembers
``torch.is_grad_enabled()`` and calls ``torch.set_grad_enabled(False)``, ``__exit__`` puts the old
value back — also when the body raises. ``my_no_grad`` does the same in a dozen lines, and
``sgd_step_`` shows why optimizers need it: in-place updates of leaf parameters are only allowed
while grad mode is off. Reference: PyTorch docs, "Locally disabling gradient computation"
(grad mode, no-grad mode, inference mode).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import torch
from torch import Tensor

__all__ = ["grad_state", "my_no_grad", "sgd_step_"]

F = TypeVar("F", bound=Callable[..., Any])


# --8<-- [start:my_no_grad]
class my_no_grad:  # lower case like torch.no_grad, which it imitates
    """Disable gradient recording inside ``with my_no_grad():`` or a function decorated with it.

    Usable as ``@my_no_grad`` or ``@my_no_grad()``. Nests with ``torch.enable_grad()`` and itself;
    restores the previous mode on exit, whether the body returned or raised.
    """

    def __new__(cls, func: F | None = None):
        self = super().__new__(cls)
        self._saved: list[bool] = []  # a stack: the same object may be entered re-entrantly
        if func is None:
            return self  # used as a context manager or as @my_no_grad()
        return self(func)  # used as a bare decorator @my_no_grad: return the wrapped function

    def __enter__(self) -> None:
        self._saved.append(torch.is_grad_enabled())
        torch.set_grad_enabled(False)

    def __exit__(self, exc_type, exc, tb) -> bool:
        torch.set_grad_enabled(self._saved.pop())
        return False  # never swallow the exception

    def __call__(self, func: F) -> F:
        if not callable(func):
            raise TypeError(f"my_no_grad decorates a function, got {type(func).__name__}")
        if inspect.isgeneratorfunction(func):  # the mode would leak out at every yield
            raise TypeError(f"my_no_grad cannot decorate the generator function {func.__name__!r}")

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            with my_no_grad():  # a fresh context per call: recursion and threads stay separate
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    # --8<-- [end:my_no_grad]


def grad_state() -> dict[str, bool]:
    """The thread-local autograd flags: ``{"grad": ..., "inference": ...}``."""
    return {"grad": torch.is_grad_enabled(), "inference": torch.is_inference_mode_enabled()}


# --8<-- [start:sgd]
@my_no_grad
def sgd_step_(params: Iterable[Tensor], lr: float) -> None:
    """``p -= lr * p.grad`` in place for every leaf ``p`` with a gradient (what ``torch.optim.SGD`` does).

    Outside no-grad mode the in-place update of a leaf that requires grad is an error: autograd would
    have to record an operation on a tensor whose gradient it is about to accumulate.
    """
    if not lr > 0:
        raise ValueError(f"lr={lr} must be positive")
    for p in params:
        if not p.is_leaf:
            raise ValueError(f"sgd_step_ updates leaves; got a non-leaf with grad_fn={type(p.grad_fn).__name__}")
        if p.grad is not None:
            p.sub_(lr * p.grad)  # bumps p._version; no graph is recorded
    # --8<-- [end:sgd]


if __name__ == "__main__":
    x = torch.ones(3, requires_grad=True)
    with my_no_grad():
        y = x * 2
        with torch.enable_grad():
            z = x * 2
    print("y.requires_grad =", y.requires_grad, "| z.requires_grad =", z.requires_grad, "|", grad_state())
    (x**2).sum().backward()
    sgd_step_([x], lr=0.1)
    print("after one SGD step:", x)
