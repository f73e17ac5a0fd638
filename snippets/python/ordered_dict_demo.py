"""``collections.OrderedDict`` and the ``state_dict`` built on it: iteration in insertion order, access by
key (not by position), positional access, ``move_to_end``, order-sensitive equality, and two state_dict
chores that depend on order — comparing two state_dicts and stripping DDP's ``"module."`` prefix.

Reference: Python documentation, ``collections.OrderedDict`` and "Dictionaries preserve insertion order"
(Python 3.7); ``torch.nn.Module.state_dict``;
``torch.nn.modules.utils.consume_prefix_in_state_dict_if_present``.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Mapping
from typing import TypeVar

import torch
from torch import Tensor

__all__ = ["nth_item", "state_dicts_equal", "strip_prefix"]

K = TypeVar("K")
V = TypeVar("V")


# --8<-- [start:nth_item]
def nth_item(d: dict[K, V], n: int) -> tuple[K, V]:
    """The ``n``-th ``(key, value)`` pair in insertion order, like ``list(d.items())[n]`` (negative ``n``
    counts from the end) but without building the list: ``d[n]`` looks up the *key* ``n`` instead.

    Works for ``OrderedDict`` and, since Python 3.7, for every plain ``dict``. O(n): walks the items.
    """
    if not isinstance(n, int) or isinstance(n, bool):
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    if not -len(d) <= n < len(d):
        raise IndexError(f"n={n} is out of range for a dict of {len(d)} items (need -{len(d)} <= n < {len(d)})")
    items = d.items() if n >= 0 else reversed(d.items())
    return next(itertools.islice(items, n if n >= 0 else -n - 1, None))


# --8<-- [end:nth_item]


# --8<-- [start:equal]
def state_dicts_equal(a: Mapping[str, Tensor], b: Mapping[str, Tensor], *, ordered: bool = True) -> bool:
    """True when ``a`` and ``b`` hold the same keys (in the same order if ``ordered``) and, under each key,
    tensors of equal shape, dtype and values (``torch.equal``).

    ``a == b`` does not work for state_dicts: dict equality compares values with ``==``, which for a
    tensor of more than one element is a tensor, whose truth value is ambiguous (``RuntimeError``).
    """
    keys_a, keys_b = list(a), list(b)
    if (keys_a != keys_b) if ordered else (set(keys_a) != set(keys_b)):
        return False
    return all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in keys_a)


# --8<-- [end:equal]


# --8<-- [start:strip_prefix]
def strip_prefix(state_dict: Mapping[str, Tensor], prefix: str = "module.") -> OrderedDict[str, Tensor]:
    """A new ``OrderedDict`` with ``prefix`` removed from every key that starts with it, **in the original
    order**, keeping the ``_metadata`` attribute (module versions) that ``load_state_dict`` reads.

    What ``consume_prefix_in_state_dict_if_present`` does in place, e.g. to load a checkpoint saved
    from a ``DistributedDataParallel`` model (whose keys read ``module.0.weight``) into the bare model.
    """
    if not prefix:
        raise ValueError("prefix must be a non-empty string, got ''")
    out = OrderedDict((k.removeprefix(prefix), v) for k, v in state_dict.items())
    if len(out) != len(state_dict):
        raise ValueError(f"stripping prefix={prefix!r} makes two keys equal: {sorted(state_dict)}")
    metadata = getattr(state_dict, "_metadata", None)
    if metadata is not None:
        wrapper = prefix.rstrip(".")  # metadata keys: "" the wrapper, "module" the model, "module.0" a child
        out._metadata = OrderedDict(  # type: ignore[attr-defined]
            ("" if k == wrapper else k.removeprefix(prefix), v)
            for k, v in metadata.items()
            if k != "" or wrapper not in metadata  # the wrapped model's entry replaces the wrapper's
        )
    return out


# --8<-- [end:strip_prefix]


if __name__ == "__main__":
    from torch import nn

    sd = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)).state_dict()
    print("type:", type(sd).__name__, "| keys in order:", list(sd))
    print("nth_item(sd, 2):", nth_item(sd, 2)[0], "| nth_item(sd, -1):", nth_item(sd, -1)[0])
    try:
        sd[0]  # type: ignore[index]
    except KeyError as err:
        print("sd[0] -> KeyError", err)
    wrapped = OrderedDict((f"module.{k}", v) for k, v in sd.items())
    print("strip_prefix:", list(strip_prefix(wrapped)), "| equal:", state_dicts_equal(strip_prefix(wrapped), sd))
