"""*args / **kwargs: packed vs unpacked calls, keyword-only parameters, forwarding wrappers, what * and ** accept."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping
from types import MappingProxyType

import pytest
import torch
from torch import nn

from snippets.python.args_kwargs import Wrapper, bind_arguments, forward_all, packed, stack_scaled
from tests.conftest import assert_close

F64 = torch.float64


def test_definition_packs_into_tuple_and_dict() -> None:
    args, kwargs = packed(1, 2, 3, lr=0.1, momentum=0.9)
    assert args == (1, 2, 3) and type(args) is tuple
    assert kwargs == {"lr": 0.1, "momentum": 0.9} and type(kwargs) is dict
    assert packed() == ((), {})
    args, _ = packed(*[1, 2])  # a list unpacked into the call is packed again as a tuple
    assert args == (1, 2) and type(args) is tuple


def test_kwargs_is_a_fresh_dict() -> None:
    config = {"lr": 0.1}

    def mutate(**kwargs: float) -> None:
        kwargs["lr"] = 99.0

    mutate(**config)
    assert config == {"lr": 0.1}
    _, kwargs = packed(**config)
    assert kwargs == config and kwargs is not config


def test_kwargs_keep_call_order() -> None:
    _, kwargs = packed(b=1, a=2, c=3)
    assert list(kwargs) == ["b", "a", "c"]  # PEP 468


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((), {}), ((3.0,), {}), ((-2.0, 5.0), {}), ((1.0,), {"beta": 2.0}), ((), {"a": 1.0, "beta": 0.5})],
)
def test_packed_and_unpacked_calls_are_identical(args: tuple, kwargs: dict) -> None:
    def f(a: float = 1.0, b: float = 2.0, *, beta: float = 1.0) -> float:
        return a * 10 + b * beta

    assert forward_all(f, *args, **kwargs) == f(*args, **kwargs)


@pytest.mark.parametrize("seed", range(3))
def test_forward_all_with_tensor_functions(seed: int, device: torch.device) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 4, generator=g, dtype=F64).to(device)
    w = torch.randn(2, 4, generator=g, dtype=F64).to(device)
    assert_close(forward_all(torch.nn.functional.linear, x, w), torch.nn.functional.linear(x, w))
    assert_close(forward_all(torch.softmax, x, dim=-1), torch.softmax(x, dim=-1))
    args, kwargs = (x,), {"dim": 0, "keepdim": True}
    assert_close(forward_all(torch.sum, *args, **kwargs), torch.sum(x, dim=0, keepdim=True))


def test_positional_only_fn_lets_a_keyword_called_fn_through() -> None:
    assert forward_all(dict, fn=1) == {"fn": 1}

    def naive(fn, *args, **kwargs):  # no `/`
        return fn(*args, **kwargs)

    with pytest.raises(TypeError, match="got multiple values for argument 'fn'"):
        naive(dict, fn=1)


def test_bind_arguments_shows_the_matching() -> None:
    def f(a, b=2, *rest, scale=1.0, **extra):
        return None

    assert bind_arguments(f, 1) == {"a": 1, "b": 2, "rest": (), "scale": 1.0, "extra": {}}
    assert bind_arguments(f, 1, 5, 6, 7, scale=3.0, mode="x") == {
        "a": 1,
        "b": 5,
        "rest": (6, 7),
        "scale": 3.0,
        "extra": {"mode": "x"},
    }
    with pytest.raises(TypeError, match="missing a required argument: 'a'"):
        bind_arguments(f)
    with pytest.raises(TypeError, match="multiple values for argument 'a'"):
        bind_arguments(f, 1, a=2)


def test_keyword_only_after_star_args(device: torch.device) -> None:
    a, b = torch.ones(2, dtype=F64, device=device), torch.full((2,), 2.0, dtype=F64, device=device)
    out = stack_scaled(a, b, scale=3.0)
    assert_close(out, torch.stack([a, b]) * 3.0)
    assert_close(stack_scaled(a, b, dim=1), torch.stack([a, b], dim=1))
    assert bind_arguments(stack_scaled, a, b, 3.0)["tensors"][-1] == 3.0  # a positional 3.0 is just another "tensor"
    with pytest.raises(TypeError, match=r"argument 2 is float, not a Tensor \(scale and dim are keyword-only"):
        stack_scaled(a, b, 3.0)
    lst = [a, b]
    assert_close(stack_scaled(*lst), torch.stack(lst))


def test_bare_star_makes_keyword_only_without_collecting() -> None:
    def f(x, *, scale):
        return x * scale

    assert f(2, scale=3) == 6
    with pytest.raises(TypeError, match="takes 1 positional argument but 2 were given"):
        f(2, 3)


def test_duplicate_keyword_is_an_error() -> None:
    def g(x):
        return x

    with pytest.raises(TypeError, match="got multiple values for keyword argument 'x'"):
        g(x=1, **{"x": 2})
    with pytest.raises(TypeError, match="got multiple values for argument 'x'"):
        g(1, x=2)


def test_names_args_and_kwargs_are_only_a_convention() -> None:
    def f(*inputs, **options):
        return inputs, options

    assert f(1, 2, k=3) == packed(1, 2, k=3)


def test_star_unpacks_any_iterable() -> None:
    args, _ = packed(*"ab", *range(2), *{"k": 1}, *(x for x in [9]), *torch.Size([2, 3]))
    assert args == ("a", "b", 0, 1, "k", 9, 2, 3)  # a dict gives its keys
    t_args, _ = packed(*torch.tensor([1.0, 2.0]))  # a tensor iterates over dim 0
    assert len(t_args) == 2 and all(t.dim() == 0 for t in t_args)
    with pytest.raises(TypeError, match="argument after \\* must be an iterable, not int"):
        packed(*5)


def test_double_star_unpacks_any_mapping() -> None:
    class Config(Mapping):
        def __init__(self, **items: int) -> None:
            self._items = items

        def __getitem__(self, key: str) -> int:
            return self._items[key]

        def __iter__(self) -> Iterator[str]:
            return iter(self._items)

        def __len__(self) -> int:
            return len(self._items)

    _, kwargs = packed(**MappingProxyType({"a": 1}), **OrderedDict(b=2), **Config(c=3))
    assert kwargs == {"a": 1, "b": 2, "c": 3}

    class KeysAndGetitem:  # not a Mapping subclass: keys() and __getitem__ are enough
        def keys(self) -> list[str]:
            return ["z"]

        def __getitem__(self, key: str) -> int:
            return 0

    assert packed(**KeysAndGetitem()) == ((), {"z": 0})
    with pytest.raises(TypeError, match="argument after \\*\\* must be a mapping, not list"):
        packed(**[("a", 1)])
    with pytest.raises(TypeError, match="keywords must be strings"):
        packed(**{1: 2})


def test_wrapper_forwards_every_calling_convention(device: torch.device) -> None:
    torch.manual_seed(0)
    attn = nn.MultiheadAttention(8, 2, batch_first=True).to(device, F64)
    wrapped = Wrapper(attn)
    q = torch.randn(2, 5, 8, dtype=F64, device=device)
    mask = torch.zeros(2, 5, dtype=torch.bool, device=device)
    mask[0, -2:] = True
    calls = [
        ((q, q, q), {}),
        ((q, q, q), {"key_padding_mask": mask, "need_weights": False}),
        ((q,), {"key": q, "value": q, "average_attn_weights": False}),
    ]
    for args, kwargs in calls:
        ours, ref = wrapped(*args, **kwargs), attn(*args, **kwargs)
        assert_close(ours[0], ref[0])
        assert (ours[1] is None) == (ref[1] is None)
        if ref[1] is not None:
            assert_close(ours[1], ref[1])
    assert wrapped.calls == len(calls)
    assert list(wrapped.state_dict()) == [f"inner.{k}" for k in attn.state_dict()]


def test_wrapper_gradients_and_hooks() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(3, 2).double()
    wrapped = Wrapper(lin)
    seen = []
    lin.register_forward_hook(lambda m, args, out: seen.append(out.shape))  # the inner module's hook still runs
    x = torch.randn(4, 3, dtype=F64, requires_grad=True)
    wrapped(x).sum().backward()
    grad_wrapped = x.grad.clone()
    x.grad = None
    lin(x).sum().backward()
    assert_close(grad_wrapped, x.grad)
    assert seen == [torch.Size([4, 2])] * 2


def test_pre_hook_args_are_the_packed_positional_arguments() -> None:
    class Echo(nn.Module):
        def forward(self, *args, **kwargs):
            return args, kwargs

    wrapped = Wrapper(Echo())
    seen = []
    wrapped.register_forward_pre_hook(lambda m, args, kwargs: seen.append((args, kwargs)), with_kwargs=True)
    x = torch.ones(1)
    out = wrapped(x, x, flag=True)
    ((args, kwargs),) = seen
    assert type(args) is tuple and len(args) == 2 and kwargs == {"flag": True}
    assert out[0] == args and out[1] == kwargs  # the inner module received exactly the same


def test_pytorch_apis_that_take_varargs() -> None:
    x = torch.arange(6)
    assert x.view(2, 3).shape == x.view((2, 3)).shape == x.view(*[2, 3]).shape == (2, 3)
    assert x.reshape(3, 2).shape == x.reshape((3, 2)).shape
    layers = [nn.Linear(2, 2), nn.ReLU()]
    assert len(nn.Sequential(*layers)) == 2
    with pytest.raises(TypeError, match="list is not a Module subclass"):
        nn.Sequential(layers)
    with pytest.raises(TypeError, match="must be tuple of Tensors, not Tensor"):
        torch.stack(torch.ones(2), torch.ones(2))  # stack takes ONE sequence: torch.stack([a, b])


def test_model_called_with_a_batch_dict() -> None:
    class Tagger(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(10, 4)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
            h = self.emb(input_ids)
            return h if attention_mask is None else h * attention_mask.unsqueeze(-1)

    model = Tagger()
    batch = {"input_ids": torch.tensor([[1, 2, 3]]), "attention_mask": torch.tensor([[1, 1, 0]])}
    torch.testing.assert_close(model(**batch), model(batch["input_ids"], attention_mask=batch["attention_mask"]))
    with pytest.raises(TypeError, match="got an unexpected keyword argument 'labels'"):
        model(**batch, labels=torch.tensor([0]))


def test_rejected_inputs() -> None:
    with pytest.raises(TypeError, match="fn must be callable, got int"):
        forward_all(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="stack_scaled needs at least one tensor, got none"):
        stack_scaled()
    with pytest.raises(TypeError, match="argument 0 is list, not a Tensor"):
        stack_scaled([torch.ones(1)])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="inner must be an nn.Module, got function"):
        Wrapper(lambda x: x)  # type: ignore[arg-type]
