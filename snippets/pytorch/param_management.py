"""Parameter management: counting parameters, tying weights, and reading a ``state_dict``.

``parameters()`` yields each ``Parameter`` object once (what an optimizer and a parameter count need);
``state_dict()`` maps every *name* to a detached tensor, so a tied weight appears under several keys that share
storage. Reference: d2l.ai §6.2 Parameter Management (中文版 §5.2 参数管理); PyTorch docs ``nn.Module.state_dict``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

__all__ = ["count_parameters", "tie_weights", "StateEntry", "describe_state_dict"]


# --8<-- [start:count]
def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalars in ``model``'s parameters; a tied parameter counts once.

    ``trainable_only=True`` skips parameters with ``requires_grad=False`` (frozen layers).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


# --8<-- [end:count]


# --8<-- [start:tie]
def tie_weights(dst: nn.Module, src: nn.Module, name: str = "weight") -> nn.Module:
    """Make ``dst.<name>`` the very same ``Parameter`` object as ``src.<name>``; returns ``dst``.

    Typical use: the output projection ``nn.Linear(d, V)`` (weight ``(V, d)``) shares the token embedding
    ``nn.Embedding(V, d)`` (weight ``(V, d)``). Afterwards one tensor is trained by both uses (their gradients
    add up); ``parameters()`` lists it once, ``state_dict()`` under both names.
    """
    for role, module in (("dst", dst), ("src", src)):
        if not isinstance(module, nn.Module):
            raise TypeError(f"{role} must be an nn.Module, got {type(module).__name__}")
        if not isinstance(module._parameters.get(name), nn.Parameter):
            raise ValueError(f"{role} ({type(module).__name__}) has no parameter named {name!r}")
    shared, old = getattr(src, name), getattr(dst, name)
    if shared.shape != old.shape:
        raise ValueError(
            f"cannot tie {name!r}: src has shape {tuple(shared.shape)}, dst has shape {tuple(old.shape)}"
        )
    setattr(dst, name, shared)  # nn.Module.__setattr__ files it into dst._parameters[name]
    return dst


# --8<-- [end:tie]


# --8<-- [start:describe]
class StateEntry(NamedTuple):
    """One key of a state_dict; ``alias_of`` names an earlier key viewing the very same elements, or None."""

    key: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    numel: int
    alias_of: str | None


def describe_state_dict(state_dict: dict[str, Tensor]) -> list[StateEntry]:
    """Rows in key order; a tied weight shows up as a second key that aliases the first."""
    seen: dict[tuple, str] = {}
    rows = []
    for key, t in state_dict.items():
        if not isinstance(t, Tensor):
            raise TypeError(f"state_dict[{key!r}] is a {type(t).__name__}, not a Tensor")
        where = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
        rows.append(StateEntry(key, tuple(t.shape), t.dtype, t.numel(), seen.get(where)))
        seen.setdefault(where, key)
    return rows


# --8<-- [end:describe]


if __name__ == "__main__":
    vocab, d = 10, 4
    emb, out = nn.Embedding(vocab, d), nn.Linear(d, vocab, bias=False)
    model = nn.Sequential(emb, nn.Linear(d, d), out)
    print(count_parameters(model))
    tie_weights(out, emb)
    print(count_parameters(model), [r.alias_of for r in describe_state_dict(model.state_dict())])
