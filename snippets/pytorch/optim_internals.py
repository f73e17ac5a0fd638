"""What a ``torch.optim`` optimizer is made of: ``param_groups``, per-parameter ``state`` and the
index-based ``state_dict``, rebuilt from scratch (``OptimizerBase``) with SGD on top (``ScratchSGD``).

Reference: ``torch/optim/optimizer.py`` and ``torch/optim/sgd.py`` (PyTorch 2.13); Sutskever et al.,
*On the importance of initialization and momentum in deep learning*, ICML 2013 (momentum, Nesterov).
``ScratchSGD`` follows ``torch.optim.SGD`` step for step and its ``state_dict()`` has the same layout,
so either optimizer can load the other's.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Callable, Iterable
from itertools import chain
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "required",
    "OptimizerBase",
    "ScratchSGD",
    "optimizer_state_bytes",
    "parameter_bytes",
    "activation_bytes",
]

PARAMS_TYPE_ERROR = "params argument given to the optimizer should be an iterable of Tensors or dicts"


class _Required:
    """Sentinel for a hyperparameter without a default (every group must give it)."""

    def __repr__(self) -> str:
        return "<required parameter>"


required = _Required()


# --8<-- [start:groups]
class OptimizerBase:
    """Parameter groups + per-parameter state, the skeleton of every ``torch.optim`` optimizer.

    ``params`` is an iterable of Tensors (one group), of ``(name, Tensor)`` pairs (one named group,
    like ``model.named_parameters()``), or of dicts ``{"params": ..., **hyperparameters}`` (one group
    each; a missing hyperparameter is taken from ``defaults``). ``self.state`` maps a parameter
    (the Tensor object itself) to a dict of its state, e.g. ``{"momentum_buffer": Tensor}``.
    """

    def __init__(self, params: Iterable[Tensor] | Iterable[dict[str, Any]], defaults: dict[str, Any]) -> None:
        if isinstance(params, Tensor):  # a Tensor is iterable (over its rows): refuse it like torch does
            raise TypeError(f"{PARAMS_TYPE_ERROR}, but got {torch.typename(params)}")
        if isinstance(params, dict):
            raise TypeError(f"{PARAMS_TYPE_ERROR}, but got a single dict: wrap it in a list, [{{'params': ...}}]")
        self.defaults = dict(defaults)
        self.state: defaultdict[Tensor, dict[str, Any]] = defaultdict(dict)
        self.param_groups: list[dict[str, Any]] = []
        groups = list(params)  # a generator such as model.parameters() is consumed here, once
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Append one group: its ``params`` as a list, then every missing hyperparameter from ``defaults``."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        if "params" not in param_group:
            raise ValueError(f"param_group needs a 'params' entry, got keys {sorted(param_group)}")
        group = dict(param_group)  # the caller's dict is left alone
        params = group["params"]
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            raise TypeError("optimizer params must be an ordered collection (a list), not a set: sets reorder")
        params = list(params)
        if any(isinstance(p, tuple) for p in params):  # named parameters: [(name, tensor), ...]
            if not all(isinstance(p, tuple) and len(p) == 2 for p in params):
                raise ValueError("all optimizer params should be with/without names. Some param names are missing")
            group["param_names"] = [name for name, _ in params]
            params = [p for _, p in params]
        group["params"] = params
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer can only optimize Tensors, but one of the params is {torch.typename(p)}")
            if not (p.is_leaf or p.retains_grad):
                raise ValueError("can't optimize a non-leaf Tensor")
        for name, default in self.defaults.items():
            if default is required and name not in group:
                raise ValueError(f"parameter group didn't specify a value of required optimization parameter {name}")
            group.setdefault(name, default)
        if len({id(p) for p in params}) != len(params):  # torch only warns here
            raise ValueError("a parameter group contains the same parameter twice")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in params):
            raise ValueError("some parameters appear in more than one parameter group")
        if self.param_groups and ("param_names" in group) != ("param_names" in self.param_groups[0]):
            raise ValueError("all optimizer param groups should be with/without names")
        self._check_group(group)
        self.param_groups.append(group)

    def _check_group(self, group: dict[str, Any]) -> None:
        """Subclasses validate a group's hyperparameters here (every group, not only the defaults)."""

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop every ``.grad`` (``None``: no memory, the next backward allocates) or zero it in place."""
        for p in chain.from_iterable(g["params"] for g in self.param_groups):
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                if p.grad.grad_fn is not None:
                    p.grad.detach_()
                else:
                    p.grad.requires_grad_(False)
                p.grad.zero_()

    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        raise NotImplementedError(f"{type(self).__name__} must implement step()")

    # --8<-- [end:groups]

    # --8<-- [start:state_dict]
    def state_dict(self) -> dict[str, Any]:
        """``{"state": {index: {...}}, "param_groups": [{..., "params": [index, ...]}]}``.

        Parameters are numbered 0, 1, 2, ... in group order; the Tensors themselves are not saved,
        only their positions. State values are the live tensors (not copies), as in torch.
        """
        index: dict[int, int] = {}
        groups = []
        for g in self.param_groups:
            for p in g["params"]:
                index.setdefault(id(p), len(index))
            packed = {k: v for k, v in g.items() if k != "params"}
            packed["params"] = [index[id(p)] for p in g["params"]]
            groups.append(packed)
        state = {index[id(p)]: s for p, s in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Take state and hyperparameters from ``state_dict``, matched to this optimizer's parameters
        **by position**; tensors are deep-copied and cast to each parameter's dtype and device."""
        missing = {"state", "param_groups"} - set(state_dict)
        if missing:
            raise ValueError(f"state_dict is missing {sorted(missing)}, got keys {sorted(state_dict)}")
        saved_groups = copy.deepcopy(state_dict["param_groups"])
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"loaded state dict has {len(saved_groups)} parameter groups, this optimizer has "
                f"{len(self.param_groups)}"
            )
        for i, (g, s) in enumerate(zip(self.param_groups, saved_groups)):
            if len(g["params"]) != len(s["params"]):
                raise ValueError(
                    f"parameter group {i}: loaded state dict has {len(s['params'])} parameters, "
                    f"this optimizer has {len(g['params'])}"
                )
        id_map = dict(
            zip(
                chain.from_iterable(s["params"] for s in saved_groups),
                chain.from_iterable(g["params"] for g in self.param_groups),
            )
        )
        state: defaultdict[Tensor, dict[str, Any]] = defaultdict(dict)
        for key, values in state_dict["state"].items():
            if key not in id_map:
                raise ValueError(f"state_dict has state for parameter index {key}, which no group lists")
            p = id_map[key]
            state[p] = {name: self._cast(p, name, v) for name, v in values.items()}
        for s in saved_groups:
            self._check_group(s)
        for g, s in zip(self.param_groups, saved_groups):
            s["params"] = g["params"]
        self.param_groups = saved_groups
        self.state = state

    @staticmethod
    def _cast(p: Tensor, name: str, value: Any) -> Any:
        """A copy of ``value`` on ``p``'s device (and dtype, for floating state other than ``step``)."""
        if not isinstance(value, Tensor):
            return copy.deepcopy(value)
        if name != "step" and value.dim() > 0 and value.shape != p.shape:  # torch does not check this
            raise ValueError(f"state {name!r} has shape {tuple(value.shape)} but its parameter has {tuple(p.shape)}")
        if name != "step" and p.is_floating_point():
            return value.to(dtype=p.dtype, device=p.device, copy=True)
        return value.to(device=p.device, copy=True)

    # --8<-- [end:state_dict]


# --8<-- [start:sgd]
class ScratchSGD(OptimizerBase):
    """``torch.optim.SGD`` rebuilt on :class:`OptimizerBase` (same arguments, same update, same state).

    Per parameter, with gradient ``g``: ``g ← -g`` if ``maximize``; ``g ← g + weight_decay·θ``;
    with momentum ``μ``: ``b ← g`` on the first step, else ``b ← μ·b + (1 − dampening)·g``, and
    ``g ← g + μ·b`` (Nesterov) or ``g ← b``; finally ``θ ← θ − lr·g``. ``foreach`` is accepted for
    layout compatibility and ignored (this is the one-tensor-at-a-time loop).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        if differentiable or fused:
            raise ValueError(f"ScratchSGD has no differentiable/fused variant, got {differentiable=}, {fused=}")
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            maximize=maximize,
            foreach=foreach,
            differentiable=differentiable,
            fused=fused,
        )
        super().__init__(params, defaults)

    def _check_group(self, group: dict[str, Any]) -> None:
        for name in ("lr", "momentum", "weight_decay"):
            if group[name] < 0:
                raise ValueError(f"Invalid {name}: {name}={group[name]} must be >= 0")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(
                "Nesterov momentum requires a momentum and zero dampening, got "
                f"momentum={group['momentum']}, dampening={group['dampening']}"
            )

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, mu, tau = group["lr"], group["momentum"], group["dampening"]
            for p in group["params"]:  # the loop is the lesson: one state dict per parameter
                if p.grad is None:
                    continue  # no gradient, no state: such a parameter is absent from state_dict()["state"]
                g = -p.grad if group["maximize"] else p.grad
                if group["weight_decay"] != 0:
                    g = g.add(p, alpha=group["weight_decay"])
                if mu != 0:
                    state = self.state[p]
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = state["momentum_buffer"] = g.clone().detach()  # b_1 = g_1 (no dampening)
                    else:
                        buf.mul_(mu).add_(g, alpha=1 - tau)
                    g = g.add(buf, alpha=mu) if group["nesterov"] else buf
                p.add_(g, alpha=-lr)
        return loss


# --8<-- [end:sgd]


# --8<-- [start:bytes]
def optimizer_state_bytes(optimizer: Any) -> int:
    """Bytes of every tensor in ``optimizer.state`` (torch optimizers and :class:`OptimizerBase`)."""
    return sum(v.nbytes for s in optimizer.state.values() for v in s.values() if isinstance(v, Tensor))


def parameter_bytes(optimizer: Any) -> int:
    """Bytes of the parameters the optimizer updates."""
    return sum(p.nbytes for g in optimizer.param_groups for p in g["params"])


def activation_bytes(model: torch.nn.Module, x: Tensor) -> int:
    """Bytes autograd saves for backward in ``model(x)`` — parameters excluded, each storage once."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    return sum(seen.values())


# --8<-- [end:bytes]


if __name__ == "__main__":
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    groups = [{"params": model[0].parameters()}, {"params": model[2].parameters(), "lr": 0.05}]
    opt = ScratchSGD(groups, lr=0.1, momentum=0.9)
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    sd = opt.state_dict()
    print("state keys:", list(sd["state"]), "| groups:", [(g["lr"], g["params"]) for g in sd["param_groups"]])
    adam = torch.optim.Adam(model.parameters())
    model(x).sum().backward()
    adam.step()
    print(f"Adam state {optimizer_state_bytes(adam)} B for {parameter_bytes(adam)} B of parameters")
