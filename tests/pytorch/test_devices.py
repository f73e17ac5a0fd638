"""get_device / to_device / module_apply_ vs Module.to, and what .to() moves (and what it leaves)."""

from __future__ import annotations

import collections
import copy
import threading
import time

import pytest
import torch
from torch import nn

from snippets.pytorch.devices import get_device, module_apply_, to_device
from tests.conftest import CUDA, assert_close

F64 = torch.float64


class WithAttributes(nn.Module):
    """A parameter, a buffer, a non-persistent buffer, a plain tensor attribute and a list of tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 3)
        self.register_buffer("scale", torch.full((3,), 2.0))
        self.register_buffer("cache", torch.zeros(3), persistent=False)
        self.offset = torch.ones(3)  # plain attribute: invisible to .to()
        self.extras = [torch.zeros(3)]  # same for a list of tensors

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) * self.scale + self.offset


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    d, h = (int(v) for v in torch.randint(2, 7, (2,), generator=g))
    return nn.Sequential(
        nn.Linear(d, h), nn.BatchNorm1d(h), nn.Sequential(nn.Tanh(), nn.LayerNorm(h)), nn.Linear(h, 2)
    ), d


def _like_to_float64(t: torch.Tensor) -> torch.Tensor:
    """What ``Module.to(torch.float64)`` does to one tensor: integers (num_batches_tracked) stay."""
    return t.to(F64) if t.is_floating_point() else t


@pytest.mark.parametrize("seed", range(4))
def test_module_apply_matches_module_to(seed: int, device: torch.device) -> None:
    ours, d = _model(seed)
    ours(torch.randn(5, d)).sum().backward()  # grads and BatchNorm running stats exist
    ref = copy.deepcopy(ours)  # deepcopy does not copy .grad: copy it by hand
    for p, q in zip(ours.parameters(), ref.parameters()):
        q.grad = p.grad.clone()
    params_before = list(ours.parameters())
    module_apply_(ours, lambda t: _like_to_float64(t).to(device))
    assert ref.to(device, F64) is ref  # Module.to works in place and returns the module itself
    sd, sd_ref = ours.state_dict(), ref.state_dict()
    assert list(sd) == list(sd_ref)
    for key in sd:
        assert sd[key].dtype == sd_ref[key].dtype and sd[key].device == sd_ref[key].device, key
        assert torch.equal(sd[key], sd_ref[key]), key
    assert sd["1.num_batches_tracked"].dtype == torch.int64  # integer buffers keep their dtype
    for p, q, before in zip(ours.parameters(), ref.parameters(), params_before):
        assert p is before  # same Parameter objects: an optimizer built earlier still holds them
        assert p.grad.dtype == F64 and p.grad.device.type == device.type
        assert_close(p.grad, q.grad)
    x = torch.randn(4, d, dtype=F64, device=device, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    out, out_ref = ours(x), ref(x_ref)
    assert_close(out, out_ref)
    out.sum().backward()
    out_ref.sum().backward()
    assert_close(x.grad, x_ref.grad)


def test_module_apply_walks_depth_first_like_module_apply() -> None:
    model, _ = _model(0)
    seen: dict[str, list[tuple]] = {"ours": [], "torch": []}

    def recorder(key: str):
        def fn(t: torch.Tensor) -> torch.Tensor:
            seen[key].append((tuple(t.shape), t.dtype))
            return t

        return fn

    module_apply_(model, recorder("ours"))
    model._apply(recorder("torch"))  # the engine behind .to() / .cuda() / .double()
    assert seen["ours"] == seen["torch"]
    assert seen["ours"][0] == ((model[0].out_features, model[0].in_features), torch.float32)  # first leaf first


def test_to_float64_moves_parameters_and_buffers_but_not_plain_attributes() -> None:
    for convert in (lambda m: m.to(F64), lambda m: module_apply_(m, _like_to_float64)):
        m = convert(WithAttributes())
        assert m.lin.weight.dtype == m.lin.bias.dtype == m.scale.dtype == m.cache.dtype == F64
        assert m.offset.dtype == m.extras[0].dtype == torch.float32  # left behind
        assert "cache" not in m.state_dict() and "offset" not in m.state_dict()


def test_a_forgotten_attribute_breaks_the_forward_after_a_device_move() -> None:
    m = WithAttributes().to("meta")  # on a CPU-only machine, meta plays the GPU
    x = torch.randn(2, 3, device="meta")
    with pytest.raises(RuntimeError, match="Tensor on device cpu is not on the expected device meta"):
        m(x)  # self.offset stayed on the CPU
    offset = m.offset
    del m.offset
    m.register_buffer("offset", offset)  # the fix: register it, then move again
    m.to("meta")
    assert m(x).device.type == "meta"


def test_input_and_model_on_different_devices_raise() -> None:
    layer = nn.Linear(3, 2, device="meta")
    with pytest.raises(RuntimeError, match="Tensor on device meta is not on the expected device cpu"):
        layer(torch.randn(4, 3))
    out = layer(to_device(torch.randn(4, 3), "meta"))
    assert out.device.type == "meta" and out.shape == (4, 2)


def test_meta_tensors_have_shapes_but_no_data() -> None:
    big = nn.Linear(10_000, 10_000, device="meta")  # 400 MB of weights in float32, nothing allocated
    assert big.weight.nbytes == 400_000_000 and big.weight.untyped_storage().data_ptr() == 0
    assert big(torch.empty(8, 10_000, device="meta")).shape == (8, 10_000)


def test_module_apply_to_meta_replaces_parameters() -> None:
    ours, ref = nn.Linear(3, 2), nn.Linear(3, 2)
    before, before_ref = ours.weight, ref.weight
    module_apply_(ours, lambda t: t.to("meta"))
    ref.to("meta")
    assert ours.weight is not before and ref.weight is not before_ref  # incompatible type: new objects
    assert isinstance(ours.weight, nn.Parameter) and ours.weight.device.type == "meta"


Pair = collections.namedtuple("Pair", ["src", "tgt"])


def test_to_device_recurses_and_keeps_container_types() -> None:
    d = collections.defaultdict(list, {"a": torch.zeros(1)})
    batch = {
        "x": torch.zeros(2, 3),
        "pair": Pair(torch.zeros(1), [torch.ones(1), "text"]),
        "lens": (torch.tensor([3]), 7, None),
        "od": collections.OrderedDict(b=torch.zeros(1)),
        "dd": d,
    }
    moved = to_device(batch, "meta")
    assert moved["x"].device.type == "meta" and batch["x"].device.type == "cpu"  # a copy, input untouched
    assert isinstance(moved["pair"], Pair) and moved["pair"].src.device.type == "meta"
    assert moved["pair"].tgt[0].device.type == "meta" and moved["pair"].tgt[1] == "text"
    assert isinstance(moved["lens"], tuple) and moved["lens"][1:] == (7, None)
    assert isinstance(moved["od"], collections.OrderedDict)
    assert isinstance(moved["dd"], collections.defaultdict) and moved["dd"]["new"] == []
    model = nn.Linear(2, 2)
    assert to_device(model, "meta") is model and model.weight.device.type == "meta"


def test_tensor_to_returns_self_when_nothing_changes() -> None:
    t = torch.zeros(3)
    assert t.to("cpu") is t and t.to(torch.float32) is t
    assert to_device(t, "cpu") is t
    assert t.to(F64) is not t and t.to("cpu", copy=True) is not t


def test_get_device() -> None:
    assert get_device("cpu") == torch.device("cpu")
    assert get_device() == torch.device("cuda" if CUDA else "cpu")
    assert get_device("mps").type in ("mps", "cpu")


def test_torch_ops_release_the_gil() -> None:
    """While one thread is inside a single long PyTorch op, another Python thread keeps running."""
    a = torch.randn(1800, 1800)
    span: list[float] = []

    def heavy() -> None:
        span.append(time.perf_counter())
        torch.mm(a, a)  # one call of tens of milliseconds, no Python bytecode inside
        span.append(time.perf_counter())

    samples: list[float] = []
    worker = threading.Thread(target=heavy)
    worker.start()
    while worker.is_alive():
        samples.append(time.perf_counter())  # pure Python: needs the GIL
    worker.join()
    start, end = span
    quarter = (end - start) / 4  # a thread switch at the edges of the call can give main a few ms
    inside = sum(start + quarter < t < end - quarter for t in samples)
    assert end - start > 0.02 and inside > 100  # main ran in the middle of the op: the GIL was released


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="prefer='gpu' must be one of"):
        get_device("gpu")
    with pytest.raises(TypeError, match="module must be an nn.Module, got Tensor"):
        module_apply_(torch.zeros(1), lambda t: t)


@pytest.mark.skipif(not CUDA, reason="no CUDA device")
def test_cuda_work_is_queued_and_item_synchronizes() -> None:
    a = torch.randn(4096, 4096, device="cuda")
    torch.cuda.synchronize()
    b = a
    for _ in range(50):
        b = (b @ a) / 64.0  # returns at once: the kernels are only queued
    stream = torch.cuda.current_stream()
    assert not stream.query()  # still running on the GPU while Python went on
    b.sum().item()  # .item() needs the value, so the host waits for the whole queue
    assert stream.query()


@pytest.mark.skipif(not CUDA, reason="no CUDA device")
def test_non_blocking_copy_from_pinned_memory() -> None:
    x = torch.randn(1 << 20).pin_memory()
    assert x.is_pinned()
    batch = to_device({"x": x, "n": 3}, "cuda", non_blocking=True)
    torch.cuda.current_stream().synchronize()  # the copy may still be in flight until here
    assert batch["n"] == 3 and torch.equal(batch["x"].cpu(), x)


@pytest.mark.skipif(not CUDA, reason="no CUDA device")
def test_cuda_move_keeps_parameter_identity() -> None:
    m = nn.Linear(3, 2)
    before = m.weight
    module_apply_(m, lambda t: t.cuda())
    assert m.weight is before and m.weight.is_cuda
    ref = nn.Linear(3, 2)
    before = ref.weight
    assert ref.cuda().weight is before


@pytest.mark.skipif(not CUDA, reason="no CUDA device")
def test_cuda_device_mismatch_message() -> None:
    layer = nn.Linear(3, 2, device="cuda")
    with pytest.raises(RuntimeError, match="Expected all tensors to be on the same device"):
        layer(torch.randn(4, 3))
