"""Deferred (lazy) initialization: a Linear layer that infers ``in_features`` from its first input.

``LazyLinearScratch`` creates its ``Parameter`` s at the first forward, drawing them exactly as an
``nn.Linear(in, out)`` created at that moment would; ``dry_run`` materializes every lazy layer of a model
before an optimizer is built. Reference: PyTorch docs ``torch.nn.LazyLinear`` and
``torch.nn.modules.lazy.LazyModuleMixin``; d2l.ai "Lazy Initialization".
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["LazyLinearScratch", "dry_run", "uninitialized_modules"]


# --8<-- [start:lazy_linear]
class LazyLinearScratch(nn.Module):
    """``y = x Wᵀ + b`` whose ``in_features`` is unknown until the first call.

    Before the first forward ``weight`` and ``bias`` are ``None`` (not parameters yet); the first input
    ``x: (*, in)`` fixes ``in_features = x.shape[-1]`` and creates ``weight: (out, in)`` and ``bias: (out,)``
    on ``x``'s device and dtype, initialised like ``nn.Linear.reset_parameters``. ``x: (*, in)`` → ``(*, out)``.
    """

    def __init__(self, out_features: int, bias: bool = True) -> None:
        super().__init__()
        if isinstance(out_features, bool) or not isinstance(out_features, int) or out_features < 1:
            raise ValueError(f"out_features must be a positive int, got out_features={out_features!r}")
        if not isinstance(bias, bool):
            raise TypeError(f"bias must be a bool, got {type(bias).__name__}")
        self.in_features: int | None = None
        self.out_features, self.use_bias = out_features, bias
        self.register_parameter("weight", None)  # known name, unknown shape
        self.register_parameter("bias", None)
        self.register_load_state_dict_pre_hook(LazyLinearScratch._shape_from_checkpoint)

    def has_uninitialized_params(self) -> bool:
        return self.weight is None

    def _create(self, in_features: int, device: torch.device, dtype: torch.dtype, init: bool) -> None:
        weight = torch.empty(self.out_features, in_features, device=device, dtype=dtype)
        bias = torch.empty(self.out_features, device=device, dtype=dtype) if self.use_bias else None
        if init:  # the same draws, in the same order, as nn.Linear(in_features, out_features)
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5))  # U(-1/sqrt(in), 1/sqrt(in))
            if bias is not None:
                bound = 1 / math.sqrt(in_features)
                nn.init.uniform_(bias, -bound, bound)
        self.in_features = in_features
        self.weight = nn.Parameter(weight)  # assignment registers it: now in parameters() and state_dict()
        self.bias = None if bias is None else nn.Parameter(bias)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 0:
            raise ValueError("x must have at least 1 dimension (*, in_features), got a 0-D tensor")
        if self.weight is None:  # the first call: infer the shape, then initialise
            if x.shape[-1] == 0:
                raise ValueError("cannot infer in_features from x.shape[-1]=0")
            self._create(x.shape[-1], x.device, x.dtype, init=True)
        elif x.shape[-1] != self.in_features:
            raise ValueError(
                f"x.shape[-1]={x.shape[-1]} does not match in_features={self.in_features} (fixed at the first call)"
            )
        return F.linear(x, self.weight, self.bias)

    # --8<-- [end:lazy_linear]

    @staticmethod
    def _shape_from_checkpoint(module: LazyLinearScratch, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        """Loading a ``state_dict`` into an uninitialised layer takes the shape from the checkpoint (no random init)."""
        w = state_dict.get(prefix + "weight")
        if module.weight is None and isinstance(w, Tensor) and w.dim() == 2 and w.shape[0] == module.out_features:
            module._create(w.shape[1], w.device, w.dtype, init=False)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.use_bias}"


# --8<-- [start:dry_run]
def uninitialized_modules(model: nn.Module) -> list[str]:
    """Names of the submodules (ours or PyTorch's ``nn.Lazy*``) whose parameters are not created yet."""
    return [
        name or type(model).__name__
        for name, m in model.named_modules()
        if callable(getattr(m, "has_uninitialized_params", None)) and m.has_uninitialized_params()
    ]


def dry_run(model: nn.Module, *example_inputs: Any) -> int:
    """Materialize every lazy layer with one forward; returns the number of parameters.

    Runs in ``eval()`` mode under ``torch.no_grad()`` (so BatchNorm statistics and dropout's RNG are left alone)
    and restores each submodule's mode afterwards. Raises ``RuntimeError`` if a lazy layer was not reached.
    Call it after ``.to(device, dtype)`` and before building the optimizer.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            model(*example_inputs)
    finally:
        for m, training in modes.items():
            m.training = training
    missing = uninitialized_modules(model)
    if missing:
        raise RuntimeError(f"the dry run did not reach the lazy module(s) {missing}; their parameters do not exist yet")
    return sum(p.numel() for p in model.parameters())


# --8<-- [end:dry_run]


if __name__ == "__main__":
    torch.manual_seed(0)
    net = nn.Sequential(LazyLinearScratch(8), nn.ReLU(), LazyLinearScratch(2))
    print("before:", net[0], "| parameters:", len(list(net.parameters())))
    print("dry run, parameter count:", dry_run(net, torch.randn(1, 20)))
    print("after: ", net[0], "| weight:", tuple(net[0].weight.shape))
