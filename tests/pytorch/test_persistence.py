"""save/load of tensors and state_dicts, whole-model pickling and weights_only=True (torch 2.13)."""

from __future__ import annotations

import pickle
import sys
import textwrap

import pytest
import torch
from torch import nn

from snippets.pytorch import persistence
from snippets.pytorch.persistence import (
    CALLS,
    CodeOnLoad,
    TinyNet,
    compare_state_dict,
    load_tensors,
    load_weights,
    pickled_globals,
    save_tensors,
    save_weights,
)
from tests.conftest import assert_close

F64 = torch.float64


def _trained_net(seed: int, device: torch.device) -> TinyNet:
    """A TinyNet whose BatchNorm running statistics moved away from their defaults."""
    torch.manual_seed(seed)
    net = TinyNet().to(device=device, dtype=F64)
    net.train()
    for _ in range(3):
        net(torch.randn(5, 4, dtype=F64, device=device))
    return net.eval()


@pytest.mark.parametrize("seed", range(3))
def test_tensor_list_dict_roundtrip(seed: int, device: torch.device, tmp_path) -> None:
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(3, 4, generator=g, dtype=F64).to(device)
    objs = [
        t,
        [t, torch.arange(5, device=device)],
        {"x": t, "y": [torch.ones(2, dtype=torch.bool, device=device)], "z": (t[0],)},
    ]
    for i, obj in enumerate(objs):
        save_tensors(obj, tmp_path / f"{i}.pt")
        back = load_tensors(tmp_path / f"{i}.pt")
        assert type(back) is type(obj)
        flat, flat_back = _flatten(obj), _flatten(back)
        assert len(flat) == len(flat_back)
        for a, b in zip(flat, flat_back):
            assert a.dtype == b.dtype and a.device == b.device
            assert torch.equal(a, b)
    on_cpu = load_tensors(tmp_path / "0.pt", map_location="cpu")
    assert on_cpu.device.type == "cpu" and torch.equal(on_cpu, t.cpu())


def _flatten(obj) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    items = obj.values() if isinstance(obj, dict) else obj
    return [t for item in items for t in _flatten(item)]


def test_a_saved_view_keeps_its_whole_storage_and_sharing(tmp_path) -> None:
    big = torch.arange(10_000, dtype=torch.float32)
    torch.save(big[:2], tmp_path / "view.pt")
    torch.save(big[:2].clone(), tmp_path / "clone.pt")
    size_view, size_clone = (tmp_path / "view.pt").stat().st_size, (tmp_path / "clone.pt").stat().st_size
    assert size_view > 40_000 > 2_000 > size_clone  # the view drags its 40 kB storage along
    torch.save([big, big[10:20]], tmp_path / "shared.pt")
    a, b = torch.load(tmp_path / "shared.pt", weights_only=True)
    a[10] = -1.0
    assert b[0] == -1.0  # views of one storage are still views of one storage after loading


@pytest.mark.parametrize("seed", range(3))
def test_load_weights_gives_identical_outputs(seed: int, device: torch.device, tmp_path) -> None:
    net = _trained_net(seed, device)
    save_weights(net, tmp_path / "w.pt")
    torch.manual_seed(seed + 100)
    fresh = TinyNet().to(device=device, dtype=F64).eval()
    x = torch.randn(6, 4, dtype=F64, device=device)
    assert not torch.equal(fresh(x), net(x))
    diff = load_weights(fresh, tmp_path / "w.pt", map_location=device)
    assert not diff
    assert torch.equal(fresh(x), net(x))
    for (k, a), (_, b) in zip(net.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(a, b), k
    # gradients flow the same way through the loaded copy
    x.requires_grad_()
    net(x).sum().backward()
    g_ref = x.grad.clone()
    x.grad = None
    fresh(x).sum().backward()
    assert_close(x.grad, g_ref)


def test_state_dict_holds_persistent_buffers_only() -> None:
    keys = list(TinyNet().state_dict())
    assert keys == [
        "fc1.weight", "fc1.bias",
        "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var", "bn.num_batches_tracked",
        "fc2.weight", "fc2.bias",
    ]  # fmt: skip
    net = TinyNet()
    assert "offset" in dict(net.named_buffers())  # a buffer, but persistent=False: not saved
    assert net.state_dict()["bn.num_batches_tracked"].dtype == torch.int64
    assert set(dict(net.named_parameters())) < set(keys)


def test_whole_model_pickle_needs_weights_only_false(tmp_path) -> None:
    net = _trained_net(0, torch.device("cpu"))
    torch.save(net, tmp_path / "whole.pt")
    with pytest.raises(
        pickle.UnpicklingError, match=r"Unsupported global: GLOBAL snippets\.pytorch\.persistence\.TinyNet"
    ):
        torch.load(tmp_path / "whole.pt")  # weights_only=True is the default since 2.6
    loaded = torch.load(tmp_path / "whole.pt", weights_only=False)
    assert type(loaded) is TinyNet
    x = torch.randn(3, 4, dtype=F64)
    assert torch.equal(loaded(x), net(x))
    unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(tmp_path / "whole.pt"))
    assert set(unsafe) == {
        "snippets.pytorch.persistence.TinyNet",
        "torch.nn.modules.linear.Linear",
        "torch.nn.modules.batchnorm.BatchNorm1d",
    }
    with torch.serialization.safe_globals([TinyNet, nn.Linear, nn.BatchNorm1d]):
        assert type(torch.load(tmp_path / "whole.pt", weights_only=True)) is TinyNet


def test_whole_model_pickle_restores_dict_without_running_init(tmp_path, monkeypatch) -> None:
    calls = []
    original_init = TinyNet.__init__

    def counting_init(self):
        calls.append("init")
        original_init(self)

    monkeypatch.setattr(TinyNet, "__init__", counting_init)
    net = TinyNet()
    net.offset.fill_(0.5)  # non-persistent: absent from state_dict, present in __dict__
    net.note = "a plain attribute"
    torch.save(net, tmp_path / "whole.pt")
    torch.save(net.state_dict(), tmp_path / "sd.pt")
    loaded = torch.load(tmp_path / "whole.pt", weights_only=False)
    assert calls == ["init"]  # unpickling does not call __init__
    assert torch.equal(loaded.offset, torch.full((2,), 0.5)) and loaded.note == "a plain attribute"
    assert "offset" not in torch.load(tmp_path / "sd.pt", weights_only=True)
    # one zip record per storage: 10 for the whole object, 9 for the state_dict
    assert _n_storages(tmp_path / "whole.pt") == 10 and _n_storages(tmp_path / "sd.pt") == 9


def _n_storages(path) -> int:
    import zipfile

    with zipfile.ZipFile(path) as z:
        return sum(1 for n in z.namelist() if "/data/" in n and not n.split("/")[-2].startswith("."))


def test_pickle_stores_references_not_code(tmp_path) -> None:
    torch.save(TinyNet(), tmp_path / "whole.pt")
    refs = pickled_globals(tmp_path / "whole.pt")
    assert refs[0] == "snippets.pytorch.persistence.TinyNet"
    assert {"torch.nn.modules.linear.Linear", "torch.nn.modules.batchnorm.BatchNorm1d"} <= set(refs)
    unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(tmp_path / "whole.pt"))
    assert set(unsafe) <= set(refs)  # torch's own scan finds a subset of what the pickle names
    data = _data_pkl(tmp_path / "whole.pt")
    assert b"def forward" not in data and b"relu" not in data  # no source, no bytecode
    torch.save(TinyNet().state_dict(), tmp_path / "sd.pt")
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(tmp_path / "sd.pt")) == []
    assert not any("TinyNet" in r for r in pickled_globals(tmp_path / "sd.pt"))
    torch.save(TinyNet(), tmp_path / "p4.pt", pickle_protocol=4)  # STACK_GLOBAL instead of GLOBAL
    assert set(pickled_globals(tmp_path / "p4.pt")) == set(refs) - {"__builtin__.set"}


def _data_pkl(path) -> bytes:
    import zipfile

    with zipfile.ZipFile(path) as z:
        return z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))


def _write_module(path, name: str, body: str) -> None:
    (path / f"{name}.py").write_text(textwrap.dedent(body), encoding="utf-8")


def test_whole_model_needs_the_class_importable_by_the_same_name(tmp_path, monkeypatch) -> None:
    """The pickle looks the class up as ``module.qualname`` at load time: gone, renamed or changed."""
    mod = "kb_tmp_whole_model_net"
    monkeypatch.syspath_prepend(str(tmp_path))
    body = """
        import torch
        from torch import nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(3, 2)

            def forward(self, x):
                return self.fc(x){extra}
    """
    _write_module(tmp_path, mod, body.format(extra=""))
    module = __import__(mod)
    torch.manual_seed(0)
    net = module.Net()
    x = torch.randn(4, 3)
    torch.save(net, tmp_path / "net.pt")
    assert pickled_globals(tmp_path / "net.pt")[0] == f"{mod}.Net"

    # 1. the module cannot be imported any more
    monkeypatch.delitem(sys.modules, mod)
    (tmp_path / f"{mod}.py").unlink()
    with pytest.raises(ModuleNotFoundError, match=f"No module named '{mod}'"):
        torch.load(tmp_path / "net.pt", weights_only=False)

    # 2. the module exists but the class was renamed
    _write_module(tmp_path, mod, body.format(extra="").replace("class Net", "class Renamed"))
    with pytest.raises(AttributeError, match=f"Can't get attribute 'Net' on <module '{mod}'"):
        torch.load(tmp_path / "net.pt", weights_only=False)
    monkeypatch.delitem(sys.modules, mod)

    # 3. same name, different code: it loads, and runs the *new* forward with the old attributes
    _write_module(tmp_path, mod, body.format(extra=" * 10"))
    loaded = torch.load(tmp_path / "net.pt", weights_only=False)
    assert torch.equal(loaded.fc.weight, net.fc.weight)
    assert torch.equal(loaded(x), net(x) * 10)
    monkeypatch.delitem(sys.modules, mod)


def test_class_defined_in_main_is_saved_as_main(tmp_path, monkeypatch) -> None:
    """Saving from a script records ``__main__.Net``: another program cannot find it."""

    class Net(nn.Linear):
        pass

    Net.__module__, Net.__qualname__ = "__main__", "Net"
    monkeypatch.setattr(sys.modules["__main__"], "Net", Net, raising=False)
    torch.save(Net(2, 2), tmp_path / "main.pt")
    assert pickled_globals(tmp_path / "main.pt")[0] == "__main__.Net"
    monkeypatch.delattr(sys.modules["__main__"], "Net")
    with pytest.raises(AttributeError, match="Can't get attribute 'Net' on <module"):
        torch.load(tmp_path / "main.pt", weights_only=False)


def test_weights_only_refuses_code_that_runs_on_load(tmp_path) -> None:
    CALLS.clear()
    torch.save({"w": torch.ones(2), "payload": CodeOnLoad("hello from the pickle")}, tmp_path / "evil.pt")
    assert "snippets.pytorch.persistence.record_call" in pickled_globals(tmp_path / "evil.pt")
    with pytest.raises(
        pickle.UnpicklingError, match=r"Unsupported global: GLOBAL snippets\.pytorch\.persistence\.record_call"
    ):
        torch.load(tmp_path / "evil.pt", weights_only=True)
    assert CALLS == []  # refused before anything ran
    obj = torch.load(tmp_path / "evil.pt", weights_only=False)
    assert CALLS == ["hello from the pickle"]  # unpickling called the function
    assert obj["payload"] == "hello from the pickle"  # and its return value replaced the object
    CALLS.clear()
    # the same happens with the standard library's pickle: nothing torch-specific about it
    pickle.loads(pickle.dumps(CodeOnLoad("plain pickle")))
    assert CALLS == ["plain pickle"]
    CALLS.clear()


def test_strict_false_reports_missing_and_unexpected_keys(tmp_path) -> None:
    torch.manual_seed(0)
    src = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    save_weights(src, tmp_path / "w.pt")
    dst = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2), nn.Linear(2, 2))
    with pytest.raises(ValueError, match=r"missing keys .*\['3\.weight', '3\.bias'\]"):
        load_weights(dst, tmp_path / "w.pt")
    diff = load_weights(dst, tmp_path / "w.pt", strict=False)
    assert diff.missing == ["3.weight", "3.bias"] and diff.unexpected == [] and diff.mismatched == []
    assert torch.equal(dst[0].weight, src[0].weight)
    small = nn.Sequential(nn.Linear(3, 4))
    diff = load_weights(small, tmp_path / "w.pt", strict=False)
    assert diff.unexpected == ["2.weight", "2.bias"]
    theirs = small.load_state_dict(torch.load(tmp_path / "w.pt", weights_only=True), strict=False)
    assert theirs.unexpected_keys == diff.unexpected and theirs.missing_keys == diff.missing


def test_shape_mismatch_is_reported_before_the_model_is_touched(tmp_path) -> None:
    torch.manual_seed(0)
    src = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    save_weights(src, tmp_path / "w.pt")
    dst = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 5))
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    msg = r"shape mismatches: 1\.weight: saved \(2, 4\) vs model \(5, 4\), 1\.bias: saved \(2,\) vs model \(5,\)"
    for strict in (True, False):
        with pytest.raises(ValueError, match=msg):
            load_weights(dst, tmp_path / "w.pt", strict=strict)
    assert all(torch.equal(before[k], v) for k, v in dst.state_dict().items())  # untouched
    sd = torch.load(tmp_path / "w.pt", weights_only=True)
    assert compare_state_dict(dst, sd).mismatched == [("1.weight", (2, 4), (5, 4)), ("1.bias", (2,), (5,))]
    # torch's own load_state_dict raises too, even with strict=False ...
    with pytest.raises(
        RuntimeError, match=r"size mismatch for 1\.weight: copying a param with shape torch\.Size\(\[2, 4\]\)"
    ):
        dst.load_state_dict(sd, strict=False)
    # ... but only after it has already copied the tensors that did fit
    assert torch.equal(dst[0].weight, src[0].weight) and not torch.equal(dst[0].weight, before["0.weight"])


def test_registered_submodules_are_saved_plain_callables_are_not() -> None:
    """Notes L369: a custom layer assigned in __init__ goes to _modules (and its parameters to the
    state_dict) only if it is an nn.Module; a plain function attribute is neither registered nor saved."""

    class Scale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.s = nn.Parameter(torch.ones(1))

        def forward(self, x):
            return self.s * x

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = Scale()
            self.act = torch.tanh  # a plain callable: an ordinary attribute

        def forward(self, x):
            return self.act(self.scale(x))

    net = Net()
    assert list(net._modules) == ["scale"]
    assert list(net.state_dict()) == ["scale.s"]
    assert "act" in net.__dict__ and "scale" not in net.__dict__


@pytest.mark.parametrize(
    ("obj", "match"),
    [
        (3.0, "obj is a float; only tensors, lists, tuples and dicts are saved here"),
        ({"a": [torch.ones(1), "text"]}, r"obj\['a'\]\[1\] is a str"),
        ({1: torch.ones(1)}, "obj has a non-string key 1; use str keys"),
        ([lambda: 0], r"obj\[0\] is a function"),
    ],
)
def test_save_tensors_rejects_non_tensor_content(obj, match, tmp_path) -> None:
    with pytest.raises(TypeError, match=match):
        save_tensors(obj, tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()


def test_rejects_missing_directory(tmp_path) -> None:
    target = tmp_path / "nope" / "w.pt"
    with pytest.raises(ValueError, match=r"directory '.*nope' does not exist"):
        save_weights(TinyNet(), target)
    with pytest.raises(ValueError, match=r"directory '.*nope' does not exist"):
        save_tensors(torch.ones(1), target)


def test_module_demo_runs(capsys) -> None:
    import runpy
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # runpy: module already imported
        runpy.run_module("snippets.pytorch.persistence", run_name="__main__", alter_sys=True)
    out = capsys.readouterr().out
    assert "same output after load: True" in out
    assert "__main__.TinyNet" in out  # saved from a script: the class is recorded as __main__.TinyNet


def test_tinynet_shapes() -> None:
    assert TinyNet().eval()(torch.randn(5, 4)).shape == (5, 2)
    assert persistence.__all__ and all(hasattr(persistence, n) for n in persistence.__all__)
