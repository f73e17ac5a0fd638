"""``train()`` / ``eval()`` from scratch: one boolean per module, read by the few layers that care.

``Module.train(mode)`` sets ``self.training = mode`` and recurses into the children; nothing else.
Gradients are untouched: only layers whose ``forward`` reads ``self.training`` behave differently
(Dropout: random mask vs identity; BatchNorm: batch statistics + running-stat updates vs running
estimates). Reference: PyTorch docs, ``torch.nn.Module.train`` / ``eval``; d2l.ai §5.6 and §8.5.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn
from torch.nn.modules.batchnorm import _NormBase
from torch.nn.modules.dropout import _DropoutNd

__all__ = ["mode_flags", "mode_sensitive_layers", "set_mode", "temporary_mode"]


def _check(module: nn.Module, training: bool) -> None:
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
    if not isinstance(training, bool):
        raise ValueError(f"training must be a bool (True = train, False = eval), got {training!r}")


# --8<-- [start:set_mode]
def set_mode(module: nn.Module, training: bool) -> nn.Module:
    """``module.train(training)`` without calling it: set the flag here, then in every child.

    Unlike ``Module.train`` this writes the flags directly, so a child that overrides ``train()``
    (e.g. to keep a frozen BatchNorm in eval mode) is not consulted. Returns ``module``.
    """
    _check(module, training)
    module.training = training
    for child in module.children():
        set_mode(child, training)
    return module
    # --8<-- [end:set_mode]


def mode_flags(module: nn.Module) -> dict[str, bool]:
    """``{qualified name: training}`` for the module (name ``""``) and every submodule."""
    _check(module, True)
    return {name: m.training for name, m in module.named_modules()}


# --8<-- [start:sensitive]
def mode_sensitive_layers(model: nn.Module) -> dict[str, str]:
    """Submodules whose output depends on ``training``, with what changes: ``{name: reason}``.

    Dropout (p > 0), BatchNorm / InstanceNorm that track running statistics, RReLU, and
    MultiheadAttention with attention dropout. Everything else (Linear, Conv, ReLU, LayerNorm, …)
    computes the same function in both modes.
    """
    _check(model, True)
    found = {}
    for name, m in model.named_modules():
        if isinstance(m, (nn.AlphaDropout, nn.FeatureAlphaDropout)) and m.p > 0:
            found[name] = f"{type(m).__name__}(p={m.p}): SELU-style random mask + affine fix in train, identity in eval"
        elif isinstance(m, _DropoutNd) and m.p > 0:
            found[name] = f"{type(m).__name__}(p={m.p}): random mask scaled by 1/(1-p) in train, identity in eval"
        elif isinstance(m, _NormBase) and m.track_running_stats:
            found[name] = f"{type(m).__name__}: batch statistics + running-stat update in train, running stats in eval"
        elif isinstance(m, nn.RReLU):
            found[name] = "RReLU: random negative slope in train, (lower + upper) / 2 in eval"
        elif isinstance(m, nn.MultiheadAttention) and m.dropout > 0:
            found[name] = f"MultiheadAttention(dropout={m.dropout}): attention dropout in train only"
    return found
    # --8<-- [end:sensitive]


# --8<-- [start:temporary]
@contextmanager
def temporary_mode(module: nn.Module, training: bool) -> Iterator[nn.Module]:
    """Switch every submodule to ``training`` inside the block; restore each one's own flag afterwards.

    ``model.train()`` after an evaluation would wrongly un-freeze a BatchNorm kept in eval mode on
    purpose; restoring the saved per-module flags does not (also when the block raises).
    """
    _check(module, training)
    saved = [(m, m.training) for m in module.modules()]
    set_mode(module, training)
    try:
        yield module
    finally:
        for m, flag in saved:
            m.training = flag
    # --8<-- [end:temporary]


if __name__ == "__main__":
    import torch

    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 2))
    print(mode_sensitive_layers(model))
    x = torch.randn(6, 4)
    with temporary_mode(model, False):
        a, b = model(x), model(x)
    print("eval is deterministic:", torch.equal(a, b), "| flags restored:", all(mode_flags(model).values()))
