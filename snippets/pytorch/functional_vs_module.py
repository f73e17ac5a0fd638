"""Modules vs functional ops: ``nn.ReLU`` wraps ``F.relu``; ``F.dropout`` does not follow ``model.eval()``.

A module is a function plus state: parameters/buffers (registered, saved, moved by ``.to()``) and the
``training`` flag that ``.train()``/``.eval()`` set on every submodule. A functional op has neither.
Reference: PyTorch docs, ``torch.nn`` vs ``torch.nn.functional``; d2l.ai "Layers and Modules".
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ReLUModule", "DropoutModule", "DropoutMLP", "DropoutStyle", "functional_dropout_pitfall"]

DropoutStyle = Literal["module", "functional", "functional_bug"]
_STYLES = ("module", "functional", "functional_bug")


def _check_p(p: float) -> None:
    if isinstance(p, bool) or not isinstance(p, int | float):
        raise TypeError(f"p must be a float, got {type(p).__name__}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, got p={p}")


# --8<-- [start:relu_module]
class ReLUModule(nn.Module):
    """``nn.ReLU`` re-written: a stateless module whose ``forward`` just calls ``F.relu``.

    Shapes: ``x: (*)`` → ``(*)`` (any shape, element-wise).
    """

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        if not isinstance(inplace, bool):
            raise TypeError(f"inplace must be a bool, got {type(inplace).__name__}")
        self.inplace = inplace

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x, inplace=self.inplace)

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""


# --8<-- [end:relu_module]


# --8<-- [start:dropout_module]
class DropoutModule(nn.Module):
    """``nn.Dropout`` re-written: no parameters, but it reads the module's mode on every call.

    Training: zero each element with probability ``p`` and scale the rest by ``1 / (1 - p)``;
    evaluation (after ``.eval()``): the identity. Shapes: ``x: (*)`` → ``(*)``.
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        _check_p(p)
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, training=self.training)  # the state a functional call lacks

    def extra_repr(self) -> str:
        return f"p={self.p}"


# --8<-- [end:dropout_module]


# --8<-- [start:dropout_mlp]
class DropoutMLP(nn.Module):
    """``Linear → ReLU → dropout → Linear`` with the dropout written in one of three styles.

    ``"module"``: ``nn.Dropout`` (reads ``self.training`` itself); ``"functional"``:
    ``F.dropout(h, p, training=self.training)``; ``"functional_bug"``: ``F.dropout(h, p)``, which keeps
    dropping after ``.eval()`` because ``training=True`` is its default.
    Shapes: ``x: (B, d_in)`` → ``(B, d_out)``.
    """

    def __init__(self, d_in: int, d_hidden: int, d_out: int, p: float = 0.5, style: DropoutStyle = "module") -> None:
        super().__init__()
        if style not in _STYLES:
            raise ValueError(f"style={style!r} is not one of {_STYLES}")
        _check_p(p)
        self.p, self.style = p, style
        self.hidden = nn.Linear(d_in, d_hidden)
        self.out = nn.Linear(d_hidden, d_out)
        self.dropout = nn.Dropout(p) if style == "module" else None  # a submodule: .eval() reaches it

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.hidden(x))  # stateless: the functional form is fine
        if self.style == "module":
            h = self.dropout(h)
        elif self.style == "functional":
            h = F.dropout(h, self.p, training=self.training)  # follow the module's mode by hand
        else:
            h = F.dropout(h, self.p)  # BUG: training=True by default, even after model.eval()
        return self.out(h)


# --8<-- [end:dropout_mlp]


# --8<-- [start:pitfall]
def functional_dropout_pitfall(p: float = 0.5, seed: int = 0) -> dict[str, bool]:
    """For each style of :class:`DropoutMLP`: is its output in ``eval()`` mode deterministic (two calls agree)?

    Returns ``{"module": True, "functional": True, "functional_bug": False}``. Leaves the global RNG as it was.
    """
    _check_p(p)
    if not 0.0 < p < 1.0:
        raise ValueError(f"p={p} must be in (0, 1) for dropout to be random")
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(seed))
    result = {}
    with torch.random.fork_rng(devices=[]):
        for style in _STYLES:
            torch.manual_seed(seed)
            model = DropoutMLP(4, 16, 2, p=p, style=style).eval()
            with torch.no_grad():
                result[style] = torch.equal(model(x), model(x))
    return result


# --8<-- [end:pitfall]


if __name__ == "__main__":
    x = torch.randn(2, 5)
    print("ReLUModule == nn.ReLU:", torch.equal(ReLUModule()(x), nn.ReLU()(x)))
    print("deterministic in eval():", functional_dropout_pitfall())
