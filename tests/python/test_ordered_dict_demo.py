"""OrderedDict: iterable in insertion order, keyed (not positional), move_to_end, order-sensitive ==; state_dict."""

from __future__ import annotations

import copy
import random
from collections import OrderedDict

import pytest
import torch
from torch import nn
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

from snippets.python.ordered_dict_demo import nth_item, state_dicts_equal, strip_prefix


class Wrapper(nn.Module):
    """Holds the model as ``self.module``, as DataParallel / DistributedDataParallel do."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module


def _net() -> nn.Sequential:
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)).double()


def test_state_dict_is_an_ordereddict_iterated_in_registration_order() -> None:
    sd = _net().state_dict()
    assert type(sd) is OrderedDict
    expected = ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var"]
    expected += ["1.num_batches_tracked", "3.weight", "3.bias"]
    assert list(sd) == [k for k in sd] == list(sd.keys()) == expected  # iterable, insertion order
    assert [k for k, _ in reversed(sd.items())] == expected[::-1]


@pytest.mark.parametrize("seed", range(3))
def test_iteration_follows_insertion_order_not_sorting(seed: int) -> None:
    rng = random.Random(seed)
    keys = rng.sample(range(1000), 12)
    od, d = OrderedDict(), {}
    for k in keys:
        od[k] = d[k] = str(k)
    assert list(od) == list(d) == keys  # plain dicts keep insertion order too (Python 3.7+)
    assert list(reversed(d)) == list(reversed(od)) == keys[::-1]  # and are reversible (3.8+)
    od[keys[0]] = "updated"  # re-assigning an existing key keeps its position
    assert list(od) == keys
    del od[keys[0]]
    od[keys[0]] = "re-inserted"  # deleting and inserting again moves it to the end
    assert list(od) == keys[1:] + keys[:1]


def test_access_is_by_key_not_by_position() -> None:
    sd = nn.Linear(2, 3).state_dict()
    assert sd["weight"].shape == (3, 2)
    with pytest.raises(KeyError):
        sd[0]  # type: ignore[index]
    od = OrderedDict([(0, "zero-key"), ("a", "first")])
    assert od[0] == "zero-key" and list(od.items())[0] == (0, "zero-key")  # od[0] means the *key* 0


@pytest.mark.parametrize("seed", range(3))
def test_nth_item_matches_list_of_items(seed: int) -> None:
    rng = random.Random(seed)
    od = OrderedDict((f"k{rng.randint(0, 99)}_{i}", i) for i in range(rng.randint(1, 9)))
    plain = dict(od)
    for n in range(-len(od), len(od)):
        assert nth_item(od, n) == list(od.items())[n] == nth_item(plain, n)


def test_nth_item_rejects_bad_positions() -> None:
    od = OrderedDict(a=1, b=2, c=3)
    with pytest.raises(IndexError, match=r"n=3 is out of range for a dict of 3 items \(need -3 <= n < 3\)"):
        nth_item(od, 3)
    with pytest.raises(IndexError, match="n=-4 is out of range"):
        nth_item(od, -4)
    with pytest.raises(IndexError, match="n=0 is out of range for a dict of 0 items"):
        nth_item({}, 0)
    with pytest.raises(TypeError, match="n must be an int, got str"):
        nth_item(od, "a")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="got bool"):
        nth_item(od, True)


def test_move_to_end_and_popitem() -> None:
    od = OrderedDict.fromkeys("abcde")
    od.move_to_end("b")
    assert "".join(od) == "acdeb"
    od.move_to_end("e", last=False)
    assert "".join(od) == "eacdb"
    assert od.popitem() == ("b", None)  # last in, first out ...
    assert od.popitem(last=False) == ("e", None)  # ... or first in, first out
    assert "".join(od) == "acd"
    with pytest.raises(KeyError):
        od.move_to_end("zzz")
    with pytest.raises(AttributeError):
        {}.move_to_end("a")  # type: ignore[attr-defined]


def test_lru_cache_with_move_to_end() -> None:
    cache: OrderedDict[str, int] = OrderedDict()
    for key in "abcab" + "d":
        if key in cache:
            cache.move_to_end(key)  # used: now the most recent
        else:
            cache[key] = ord(key)
            if len(cache) > 3:
                cache.popitem(last=False)  # evict the least recently used
    assert list(cache) == ["a", "b", "d"]  # c was the least recently used


def test_equality_is_order_sensitive_only_between_ordereddicts() -> None:
    ab, ba = OrderedDict(a=1, b=2), OrderedDict(b=2, a=1)
    assert ab != ba  # OrderedDict vs OrderedDict: order matters
    assert dict(ab) == dict(ba)  # dict vs dict: it does not
    assert ab == dict(ba) and dict(ab) == ba  # mixed: compared like dicts
    assert list(ab.items()) != list(ba.items())


def test_a_plain_dict_cannot_carry_attributes_an_ordereddict_can() -> None:
    sd = _net().state_dict()
    assert list(sd._metadata) == ["", "0", "1", "2", "3"]
    assert sd._metadata["1"]["version"] == 2  # BatchNorm's state_dict version
    with pytest.raises(AttributeError):
        {}._metadata = {}  # type: ignore[attr-defined]
    assert not hasattr(dict(sd), "_metadata")  # dict(sd) keeps the tensors, drops the metadata
    _net().load_state_dict(dict(sd))  # still loadable for modules at their current version


def test_load_state_dict_reads_the_version_from_metadata() -> None:
    seen: list[object] = []

    class Versioned(nn.Linear):
        _version = 3

        def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args) -> None:
            seen.append(local_metadata.get("version"))
            super()._load_from_state_dict(state_dict, prefix, local_metadata, *args)

    sd = Versioned(2, 2).state_dict()
    Versioned(2, 2).load_state_dict(sd)
    Versioned(2, 2).load_state_dict(dict(sd))
    assert seen == [3, None]  # from the OrderedDict's _metadata; a plain dict has none


def test_state_dict_equality_raises_state_dicts_equal_works(device: torch.device) -> None:
    torch.manual_seed(0)
    net = _net().to(device)
    with pytest.raises(RuntimeError, match="Boolean value of Tensor with more than one value is ambiguous"):
        _ = net.state_dict() == net.state_dict()
    a, b = net.state_dict(), copy.deepcopy(net.state_dict())
    assert state_dicts_equal(a, b)
    reordered = OrderedDict(reversed(list(b.items())))
    assert not state_dicts_equal(a, reordered) and state_dicts_equal(a, reordered, ordered=False)
    b["0.bias"] = b["0.bias"] + 1e-12
    assert not state_dicts_equal(a, b)
    c = copy.deepcopy(a)
    c["0.weight"] = c["0.weight"].float()
    assert not state_dicts_equal(a, c)  # same values, other dtype
    assert not state_dicts_equal(a, OrderedDict(list(a.items())[:-1]))


@pytest.mark.parametrize("seed", range(2))
def test_strip_prefix_matches_consume_prefix_in_state_dict_if_present(seed: int) -> None:
    torch.manual_seed(seed)
    net = _net()
    wrapped = Wrapper(net).state_dict()
    assert list(wrapped)[0] == "module.0.weight"
    assert list(wrapped._metadata)[:3] == ["", "module", "module.0"]
    ours = strip_prefix(wrapped)
    ref = copy.deepcopy(wrapped)
    consume_prefix_in_state_dict_if_present(ref, "module.")
    assert list(ours) == list(ref) == list(net.state_dict())  # same keys, same order
    assert state_dicts_equal(ours, ref)
    assert ours._metadata == ref._metadata and list(ours._metadata) == list(ref._metadata)
    assert list(wrapped)[0] == "module.0.weight"  # ours copies, the input is unchanged
    fresh = _net()
    fresh.load_state_dict(ours)
    assert state_dicts_equal(fresh.state_dict(), net.state_dict())


def test_strip_prefix_keeps_the_position_of_every_key() -> None:
    sd = OrderedDict([("module.a", torch.zeros(1)), ("b", torch.ones(1)), ("module.c", torch.ones(2))])
    assert list(strip_prefix(sd)) == ["a", "b", "c"]  # unprefixed keys stay where they are
    ref = copy.copy(sd)
    consume_prefix_in_state_dict_if_present(ref, "module.")
    assert list(ref) == ["b", "a", "c"]  # torch's in-place version re-inserts renamed keys at the end


def test_strip_prefix_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="prefix must be a non-empty string"):
        strip_prefix(OrderedDict(a=torch.zeros(1)), "")
    clash = OrderedDict([("module.w", torch.zeros(1)), ("w", torch.ones(1))])
    with pytest.raises(ValueError, match=r"stripping prefix='module\.' makes two keys equal"):
        strip_prefix(clash)
