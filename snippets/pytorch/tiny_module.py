"""A minimal ``nn.Module`` from scratch: how parameters, buffers and submodules get registered and found.

``TinyModule`` re-implements the bookkeeping of ``torch.nn.Module`` in plain Python: ``__setattr__`` files an
``nn.Parameter`` into ``_parameters``, a ``TinyModule`` into ``_modules``, and ``register_buffer`` files a tensor
into ``_buffers`` (``persistent=False`` keeps it out of the ``state_dict``); everything else is an ordinary
attribute. The recursive walks (``named_modules``/``named_parameters``/``named_buffers``, with dotted prefixes and
de-duplication of shared objects), ``state_dict``/``load_state_dict`` and ``to`` follow the same rules as PyTorch,
so a mirrored model gives the same names, order and values. Reference: ``torch/nn/modules/module.py``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from snippets.pytorch.linear_layout import linear

__all__ = [
    "IncompatibleKeys",
    "TinyModule",
    "TinyLinear",
    "TinySequential",
    "TinyNet",
    "TorchNet",
    "InventoryRow",
    "module_inventory",
    "format_inventory",
]


class IncompatibleKeys(NamedTuple):
    """What ``load_state_dict`` returns, like PyTorch's ``_IncompatibleKeys``."""

    missing_keys: list[str]
    unexpected_keys: list[str]


def _check_name(kind: str, name: Any) -> None:
    if not isinstance(name, str):
        raise TypeError(f"{kind} name should be a str, got {type(name).__name__}")
    if name == "" or "." in name:
        raise ValueError(f"{kind} name {name!r} must be non-empty and must not contain '.'")


def _remove_from(name: str, *stores: dict | set) -> None:
    """Forget ``name`` in the other stores, so that one name lives in exactly one place."""
    for store in stores:
        if isinstance(store, set):
            store.discard(name)
        else:
            store.pop(name, None)


class TinyModule:
    """The registration machinery of ``nn.Module``, without hooks, compilation or parametrizations."""

    # --8<-- [start:init_setattr]
    def __init__(self) -> None:
        # object.__setattr__ bypasses our own __setattr__ (the dicts do not exist yet)
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_non_persistent_buffers_set", set())
        object.__setattr__(self, "_modules", {})

    def __setattr__(self, name: str, value: Any) -> None:
        d = self.__dict__
        params = d.get("_parameters")
        if isinstance(value, nn.Parameter):  # self.w = nn.Parameter(...) -> _parameters
            if params is None:
                raise AttributeError("cannot assign parameters before TinyModule.__init__() call")
            _remove_from(name, d, self._buffers, self._modules, self._non_persistent_buffers_set)
            params[name] = value  # an existing key keeps its position in the dict
        elif isinstance(value, TinyModule):  # self.fc = TinyLinear(...) -> _modules
            if params is None:
                raise AttributeError("cannot assign module before TinyModule.__init__() call")
            _remove_from(name, d, params, self._buffers, self._non_persistent_buffers_set)
            self._modules[name] = value
        elif params is not None and name in params:  # only a Parameter or None may replace a parameter
            if value is not None:
                raise TypeError(
                    f"cannot assign {type(value).__name__} as parameter {name!r} (Parameter or None expected)"
                )
            params[name] = None
        elif params is not None and name in self._modules:
            if value is not None:
                raise TypeError(
                    f"cannot assign {type(value).__name__} as child module {name!r} (TinyModule or None expected)"
                )
            self._modules[name] = None
        elif params is not None and name in self._buffers:  # self.running_mean = new_tensor updates the buffer
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign {type(value).__name__} as buffer {name!r} (Tensor or None expected)")
            self._buffers[name] = value
        else:  # everything else, plain tensors included, is an ordinary attribute: not registered
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:  # called only when normal attribute lookup fails
        d = self.__dict__
        for store in ("_parameters", "_buffers", "_modules"):
            if store in d and name in d[store]:
                return d[store][name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # --8<-- [end:init_setattr]

    def __delattr__(self, name: str) -> None:
        for store in (self._parameters, self._buffers, self._modules):
            if name in store:
                del store[name]
                self._non_persistent_buffers_set.discard(name)
                return
        object.__delattr__(self, name)

    # --8<-- [start:register]
    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True) -> None:
        """A tensor that is state but not trained (BatchNorm's ``running_mean``); ``persistent=False``:
        moved by ``to()`` and listed by ``named_buffers()``, but left out of ``state_dict()``."""
        if "_buffers" not in self.__dict__:
            raise AttributeError("cannot assign buffer before TinyModule.__init__() call")
        _check_name("buffer", name)
        if name in self.__dict__ or name in self._parameters or name in self._modules:
            raise ValueError(f"attribute {name!r} already exists")
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"cannot assign {type(tensor).__name__} as buffer {name!r} (Tensor or None expected)")
        self._buffers[name] = tensor
        if persistent:
            self._non_persistent_buffers_set.discard(name)
        else:
            self._non_persistent_buffers_set.add(name)

    def register_parameter(self, name: str, param: nn.Parameter | None) -> None:
        """The explicit form of ``self.name = param``."""
        _check_name("parameter", name)
        if param is not None and not isinstance(param, nn.Parameter):
            raise TypeError(f"cannot assign {type(param).__name__} as parameter {name!r} (Parameter or None expected)")
        if param is None:
            self._parameters[name] = None
        else:
            setattr(self, name, param)

    def add_module(self, name: str, module: TinyModule | None) -> None:
        """The explicit form of ``self.name = module`` (names such as ``"0"`` are not identifiers)."""
        _check_name("module", name)
        if module is not None and not isinstance(module, TinyModule):
            raise TypeError(f"{type(module).__name__} is not a TinyModule")
        if module is None:
            self._modules[name] = None
        else:
            setattr(self, name, module)

    # --8<-- [end:register]

    # --8<-- [start:walks]
    def named_modules(
        self, memo: set | None = None, prefix: str = "", remove_duplicate: bool = True
    ) -> Iterator[tuple[str, TinyModule]]:
        """``self`` first, then every submodule depth first, each once (a shared module keeps its first name)."""
        memo = set() if memo is None else memo
        if remove_duplicate:
            if self in memo:
                return
            memo.add(self)
        yield prefix, self
        for name, child in self._modules.items():
            if child is not None:
                yield from child.named_modules(memo, f"{prefix}.{name}" if prefix else name, remove_duplicate)

    def _named_members(
        self, members: Callable[[TinyModule], Any], prefix: str, recurse: bool, remove_duplicate: bool
    ) -> Iterator[tuple[str, Tensor]]:
        seen: set[Tensor] = set()  # tensors hash by identity: a tied parameter is yielded once
        modules = self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) if recurse else [(prefix, self)]
        for module_prefix, module in modules:
            for name, value in members(module):
                if value is None or value in seen:
                    continue
                if remove_duplicate:
                    seen.add(value)
                yield (f"{module_prefix}.{name}" if module_prefix else name), value

    def named_parameters(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, nn.Parameter]]:
        """``("body.0.weight", p)`` pairs: each module's own ``_parameters``, modules in ``named_modules`` order."""
        return self._named_members(lambda m: m._parameters.items(), prefix, recurse, remove_duplicate)

    def named_buffers(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Tensor]]:
        """Like ``named_parameters`` over ``_buffers``; non-persistent buffers included."""
        return self._named_members(lambda m: m._buffers.items(), prefix, recurse, remove_duplicate)

    # --8<-- [end:walks]

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]:
        """What an optimizer receives: the same Parameter objects, not copies."""
        return (p for _, p in self.named_parameters(recurse=recurse))

    def buffers(self, recurse: bool = True) -> Iterator[Tensor]:
        return (b for _, b in self.named_buffers(recurse=recurse))

    def named_children(self) -> Iterator[tuple[str, TinyModule]]:
        seen: set[TinyModule] = set()
        for name, child in self._modules.items():
            if child is not None and child not in seen:
                seen.add(child)
                yield name, child

    def children(self) -> Iterator[TinyModule]:
        return (m for _, m in self.named_children())

    def modules(self) -> Iterator[TinyModule]:
        return (m for _, m in self.named_modules())

    # --8<-- [start:state_dict]
    def state_dict(
        self, destination: OrderedDict | None = None, prefix: str = "", keep_vars: bool = False
    ) -> OrderedDict[str, Tensor]:
        """Own parameters, then own persistent buffers, then each child under ``prefix + name + "."``.

        Unlike ``named_parameters`` nothing is de-duplicated: a tied parameter appears under every name.
        Values are detached (``keep_vars=False``) but share storage with the module.
        """
        destination = OrderedDict() if destination is None else destination
        for name, param in self._parameters.items():
            if param is not None:
                destination[prefix + name] = param if keep_vars else param.detach()
        for name, buf in self._buffers.items():
            if buf is not None and name not in self._non_persistent_buffers_set:
                destination[prefix + name] = buf if keep_vars else buf.detach()
        for name, child in self._modules.items():
            if child is not None:
                child.state_dict(destination, prefix + name + ".", keep_vars)
        return destination

    def load_state_dict(self, state_dict: dict[str, Tensor], strict: bool = True) -> IncompatibleKeys:
        """Copy values in place (parameters keep their identity). Checks everything before copying anything.

        ``strict=True``: a missing or unexpected key is an error; a shape mismatch is always an error.
        (PyTorch raises ``RuntimeError`` for these; this version raises ``ValueError`` with the same wording.)
        """
        own = self.state_dict(keep_vars=True)
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        errors = []
        if strict and missing:
            errors.append("Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing) + ".")
        if strict and unexpected:
            errors.append("Unexpected key(s) in state_dict: " + ", ".join(f'"{k}"' for k in unexpected) + ".")
        for key, target in own.items():
            if key in state_dict:
                src = state_dict[key]
                if not isinstance(src, Tensor):
                    errors.append(
                        f'While copying the parameter named "{key}", expected a Tensor, got {type(src).__name__}.'
                    )
                elif src.shape != target.shape:
                    errors.append(
                        f"size mismatch for {key}: copying a param with shape {tuple(src.shape)} from checkpoint, "
                        f"the shape in current model is {tuple(target.shape)}."
                    )
        if errors:
            raise ValueError(f"Error(s) in loading state_dict for {type(self).__name__}:\n\t" + "\n\t".join(errors))
        with torch.no_grad():
            for key, target in own.items():
                if key in state_dict:
                    target.copy_(state_dict[key])  # converts dtype/device; the module's tensors stay its own
        return IncompatibleKeys(missing, unexpected)

    # --8<-- [end:state_dict]

    # --8<-- [start:to]
    def to(self, *args: torch.device | str | torch.dtype, **kwargs: Any) -> TinyModule:
        """``to(device)``, ``to(dtype)`` or ``to(device, dtype)``, in place; returns ``self``.

        Floating-point and complex parameters/buffers take the new dtype; integer ones (``num_batches_tracked``)
        only change device. Parameters keep their identity (so ties and optimizer references survive),
        buffers are replaced, plain tensor attributes are not touched.
        """
        device, dtype = kwargs.pop("device", None), kwargs.pop("dtype", None)
        if kwargs:
            raise TypeError(f"to() got unexpected keyword arguments {sorted(kwargs)}")
        for arg in args:
            if isinstance(arg, torch.dtype):
                dtype = arg
            elif isinstance(arg, (str, torch.device)):
                device = torch.device(arg)
            else:
                raise TypeError(f"to() expects a device or a dtype, got {type(arg).__name__}")
        if dtype is not None and not (dtype.is_floating_point or dtype.is_complex):
            raise TypeError(
                f"TinyModule.to only accepts floating point or complex dtypes, but got desired dtype={dtype}"
            )

        def convert(t: Tensor) -> Tensor:
            return t.to(device, dtype if t.is_floating_point() or t.is_complex() else None)

        with torch.no_grad():
            for module in self.modules():
                for param in module._parameters.values():
                    if param is None:
                        continue
                    param.data = convert(param)  # swap the payload, keep the Parameter object (as nn.Module does)
                    if param.grad is not None:
                        param.grad = convert(param.grad)
                for name, buf in module._buffers.items():
                    if buf is not None:
                        module._buffers[name] = convert(buf)
        return self

    # --8<-- [end:to]

    def train(self, mode: bool = True) -> TinyModule:
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self) -> TinyModule:
        return self.train(False)

    def forward(self, *args: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} has no forward()")

    def __call__(self, *args: Any) -> Any:
        return self.forward(*args)


# --8<-- [start:layers]
class TinyLinear(TinyModule):
    """``nn.Linear`` on ``TinyModule``: ``weight: (out, in)``, ``bias: (out,)``, the same initialisation
    (so the same seed gives the same numbers). ``x: (*, in) -> (*, out)``."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, device=None, dtype=None) -> None:
        super().__init__()
        if in_features < 0 or out_features < 0:
            raise ValueError(f"in_features={in_features} and out_features={out_features} must be >= 0")
        self.weight = nn.Parameter(torch.empty(out_features, in_features, device=device, dtype=dtype))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        with torch.no_grad():  # nn.Linear.reset_parameters
            nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
            if self.bias is not None:
                bound = 1 / math.sqrt(in_features) if in_features > 0 else 0.0
                nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias)


class TinySequential(TinyModule):
    """Children under the keys ``"0"``, ``"1"``, ... (``add_module``: ``self.0 = ...`` is not valid Python)."""

    def __init__(self, *modules: TinyModule) -> None:
        super().__init__()
        for idx, module in enumerate(modules):
            self.add_module(str(idx), module)

    def __getitem__(self, idx: int) -> TinyModule:
        return self._modules[str(idx % len(self._modules))]

    def forward(self, x: Tensor) -> Tensor:
        for module in self._modules.values():
            x = module(x)
        return x


# --8<-- [end:layers]


# --8<-- [start:nets]
def _build(net: Any, linear_cls: type, sequential_cls: type, d: int) -> None:
    """The same body for both libraries: a parameter, two buffers, a plain tensor, nested and tied layers."""
    net.scale = nn.Parameter(torch.ones(d))
    net.register_buffer("steps", torch.zeros((), dtype=torch.long))  # persistent: saved
    net.register_buffer("cache", torch.zeros(d), persistent=False)  # moved by .to(), not saved
    net.offset = torch.zeros(d)  # a plain tensor attribute: not registered at all
    net.body = sequential_cls(linear_cls(d, d), linear_cls(d, d))
    net.head = linear_cls(d, d)
    net.head.weight = net.body[0].weight  # tied: one Parameter under two names


def _forward(net: Any, x: Tensor) -> Tensor:
    h = net.head(torch.tanh(net.body(x))) * net.scale
    if net.training:
        net.steps += 1
        net.cache = h.detach().mean(0)  # assigning a tensor to a buffer's name updates the buffer
    return h


class TinyNet(TinyModule):
    """The demo model on ``TinyModule``. ``x: (B, d) -> (B, d)``."""

    def __init__(self, d: int = 3) -> None:
        super().__init__()
        _build(self, TinyLinear, TinySequential, d)

    def forward(self, x: Tensor) -> Tensor:
        return _forward(self, x)


class TorchNet(nn.Module):
    """The same model on ``nn.Module`` (``nn.Linear``, ``nn.Sequential``)."""

    def __init__(self, d: int = 3) -> None:
        super().__init__()
        _build(self, nn.Linear, nn.Sequential, d)

    def forward(self, x: Tensor) -> Tensor:
        return _forward(self, x)


# --8<-- [end:nets]


# --8<-- [start:inventory]
class InventoryRow(NamedTuple):
    """One module of a tree: its dotted name, class and what it registered *itself* (not its children)."""

    name: str
    kind: str
    parameters: tuple[str, ...]
    buffers: tuple[str, ...]
    non_persistent: tuple[str, ...]


def module_inventory(model: nn.Module | TinyModule) -> list[InventoryRow]:
    """What each module of ``model`` holds in ``_parameters`` / ``_buffers`` (works for both classes)."""
    rows = []
    for name, module in model.named_modules():
        hidden = module._non_persistent_buffers_set
        buffers = tuple(n for n, _ in module.named_buffers(recurse=False))
        rows.append(
            InventoryRow(
                name=name or "(root)",
                kind=type(module).__name__,
                parameters=tuple(n for n, _ in module.named_parameters(recurse=False)),
                buffers=tuple(n for n in buffers if n not in hidden),
                non_persistent=tuple(n for n in buffers if n in hidden),
            )
        )
    return rows


def format_inventory(rows: list[InventoryRow]) -> str:
    """A plain-text table of :func:`module_inventory` (``-`` for none)."""
    table = [("module", "class", "_parameters", "_buffers")]
    for r in rows:
        bufs = list(r.buffers) + [f"{n} (non-persistent)" for n in r.non_persistent]
        table.append((r.name, r.kind, ", ".join(r.parameters) or "-", ", ".join(bufs) or "-"))
    widths = [max(len(row[i]) for row in table) for i in range(3)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths)) + "  " + row[3] for row in table
    ).rstrip()


# --8<-- [end:inventory]


if __name__ == "__main__":
    torch.manual_seed(0)
    ours = TinyNet()
    torch.manual_seed(0)
    ref = TorchNet()
    print([n for n, _ in ours.named_parameters()])
    print(list(ours.state_dict()) == list(ref.state_dict()), ours.load_state_dict(ref.state_dict()))
    print(format_inventory(module_inventory(ours)))
