"""Layers and blocks: a hand-written ``Sequential``, a block with Python control flow, a parallel block.

Everything is an ``nn.Module``: a layer (``nn.Linear``) and a block made of layers and blocks are the
same kind of object, so blocks nest. ``MySequential`` re-implements ``nn.Sequential`` by putting its
children into ``self._modules`` under the string keys ``"0"``, ``"1"``, ... — which is exactly why
``nn.Sequential``'s ``state_dict`` keys read ``"0.weight"``. Reference: d2l.ai §6.1 Layers and Modules
(中文版 §5.1 层和块).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["MySequential", "FixedHiddenMLP", "ParallelBlock"]


# --8<-- [start:my_sequential]
class MySequential(nn.Module):
    """Chain modules: ``forward(x) = m_{n-1}(...m_1(m_0(x)))``, like ``nn.Sequential``.

    Each child is stored in ``self._modules`` under the key ``str(index)``; ``nn.Module`` then finds
    it for ``parameters()``, ``state_dict()``, ``.to()``, ``.train()`` and ``print(model)``.
    """

    def __init__(self, *modules: nn.Module) -> None:
        super().__init__()
        for idx, module in enumerate(modules):
            if not isinstance(module, nn.Module):
                raise TypeError(f"argument {idx} is a {type(module).__name__}, not an nn.Module")
            self._modules[str(idx)] = module  # the same as self.add_module(str(idx), module)

    def __getitem__(self, idx: int) -> nn.Module:
        """``net[i]``: the i-th child (negative indices count from the end)."""
        n = len(self._modules)
        if not -n <= idx < n:
            raise IndexError(f"index {idx} is out of range for MySequential of length {n}")
        return self._modules[str(idx % n)]

    def __len__(self) -> int:
        return len(self._modules)

    def forward(self, x: Tensor) -> Tensor:
        for module in self._modules.values():  # insertion order = the order given
            x = module(x)
        return x


# --8<-- [end:my_sequential]


# --8<-- [start:fixed_hidden]
class FixedHiddenMLP(nn.Module):
    """A block is code: a constant weight, a layer used twice, and a data-dependent ``while`` loop.

    ``x: (B, d) -> ()`` (a scalar). The constant ``rand_weight: (d, d)`` is a buffer (saved in the
    ``state_dict`` and moved by ``.to()``, but not trained); ``linear`` is applied twice, so its
    parameters are shared by both uses and receive the sum of both gradients.
    """

    def __init__(self, d: int = 20, *, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if d <= 0:
            raise ValueError(f"d={d} must be positive")
        self.register_buffer("rand_weight", torch.rand(d, d, generator=generator))
        self.linear = nn.Linear(d, d)

    def forward(self, x: Tensor) -> Tensor:
        x = self.linear(x)
        x = torch.relu(x @ self.rand_weight + 1)
        x = self.linear(x)  # the same layer again: shared parameters
        if not torch.isfinite(x).all():
            raise ValueError("FixedHiddenMLP: non-finite activations, the halving loop would never end")
        while x.abs().sum() > 1:  # ordinary Python control flow on tensor values
            x = x / 2
        return x.sum()


# --8<-- [end:fixed_hidden]


# --8<-- [start:parallel]
class ParallelBlock(nn.Module):
    """Run several branches on the same input and concatenate their outputs along ``dim``.

    ``x: (B, ...) -> cat([b(x) for b in branches], dim)``. The branches live in an ``nn.ModuleList``
    (a plain Python list would hide them from ``parameters()`` and ``state_dict()``).
    """

    def __init__(self, *branches: nn.Module, dim: int = -1) -> None:
        super().__init__()
        if not branches:
            raise ValueError("ParallelBlock needs at least one branch, got none")
        self.branches = nn.ModuleList(branches)
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([branch(x) for branch in self.branches], dim=self.dim)


# --8<-- [end:parallel]


if __name__ == "__main__":
    torch.manual_seed(0)
    ours = MySequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    ref = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(3, 4)
    print(list(ours.state_dict()), torch.allclose(ours(x), ref(x)))
    print(FixedHiddenMLP()(torch.rand(2, 20)))
    print(ParallelBlock(nn.Linear(4, 3), nn.Linear(4, 5))(x).shape)
