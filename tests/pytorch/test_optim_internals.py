"""OptimizerBase / ScratchSGD vs torch.optim.SGD: trajectories, state_dict layout, loading both ways."""

from __future__ import annotations

import copy
import io
import warnings

import pytest
import torch
from torch import nn

from snippets.pytorch.optim_internals import (
    OptimizerBase,
    ScratchSGD,
    activation_bytes,
    optimizer_state_bytes,
    parameter_bytes,
    required,
)
from snippets.pytorch.training_state import state_diff
from tests.conftest import assert_close

F64 = torch.float64
CONFIGS = [
    {},
    {"momentum": 0.9},
    {"momentum": 0.8, "dampening": 0.3},
    {"momentum": 0.9, "nesterov": True},
    {"momentum": 0.7, "weight_decay": 0.05},
    {"momentum": 0.5, "weight_decay": 0.01, "nesterov": True, "maximize": True},
]


def _model(seed: int, device: torch.device) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).to(device, F64)
    model.register_parameter("unused", nn.Parameter(torch.randn(2, device=device, dtype=F64)))  # never gets .grad
    return model


def _groups(model: nn.Module, second: dict) -> list[dict]:
    return [
        {"params": [*model[0].parameters(), model.unused]},
        {"params": model[2].parameters(), "lr": 0.03, **second},
    ]


def _train_step(model: nn.Module, opt, x: torch.Tensor, y: torch.Tensor) -> None:
    opt.zero_grad()
    nn.functional.mse_loss(model(x), y).backward()
    opt.step()


def _pair(seed: int, device: torch.device, cfg: dict, second: dict | None = None):
    second = {"momentum": 0.6} if second is None else second
    ours_m, ref_m = _model(seed, device), _model(seed, device)
    ours = ScratchSGD(_groups(ours_m, second), lr=0.1, **cfg)
    ref = torch.optim.SGD(_groups(ref_m, second), lr=0.1, **cfg)
    return ours_m, ours, ref_m, ref


def _data(seed: int, device: torch.device, steps: int):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(8, 5, generator=g, dtype=F64).to(device), torch.randn(8, 3, generator=g, dtype=F64).to(device))
        for _ in range(steps)
    ]


@pytest.mark.parametrize("cfg", CONFIGS, ids=[",".join(c) or "plain" for c in CONFIGS])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_sgd_20_step_trajectory_two_groups(seed: int, cfg: dict, device: torch.device) -> None:
    ours_m, ours, ref_m, ref = _pair(seed, device, cfg)
    for x, y in _data(seed, device, 20):
        _train_step(ours_m, ours, x, y)
        _train_step(ref_m, ref, x, y)
        for a, b in zip(ours_m.parameters(), ref_m.parameters()):
            assert_close(a, b)
    for pa, pb in zip(ours_m.parameters(), ref_m.parameters()):
        assert (pa in ours.state) == (pb in ref.state)
        if pa in ours.state:
            assert_close(ours.state[pa]["momentum_buffer"], ref.state[pb]["momentum_buffer"])


@pytest.mark.parametrize("cfg", CONFIGS[1:4], ids=["momentum", "dampening", "nesterov"])
def test_state_dict_layout_equals_torch(cfg: dict, device: torch.device) -> None:
    ours_m, ours, ref_m, ref = _pair(3, device, cfg)
    for x, y in _data(3, device, 4):
        _train_step(ours_m, ours, x, y)
        _train_step(ref_m, ref, x, y)
    mine, theirs = ours.state_dict(), ref.state_dict()
    assert [list(g) for g in mine["param_groups"]] == [list(g) for g in theirs["param_groups"]]  # key order too
    assert [g["params"] for g in mine["param_groups"]] == [[0, 1, 2], [3, 4]]  # indices, not tensors
    assert sorted(mine["state"]) == sorted(theirs["state"]) == [0, 1, 3, 4]  # 2 (no grad) has no state
    for k in mine["state"]:
        assert_close(mine["state"][k]["momentum_buffer"], theirs["state"][k]["momentum_buffer"])
    assert all(type(k) is int for k in mine["state"])
    assert state_diff(mine["param_groups"], theirs["param_groups"]) == []


def test_state_dict_values_are_live_references() -> None:
    ours_m, ours, ref_m, ref = _pair(0, torch.device("cpu"), {"momentum": 0.9})
    x, y = _data(0, torch.device("cpu"), 1)[0]
    _train_step(ours_m, ours, x, y)
    _train_step(ref_m, ref, x, y)
    w_ours, w_ref = ours_m[0].weight, ref_m[0].weight
    assert ours.state_dict()["state"][0]["momentum_buffer"] is ours.state[w_ours]["momentum_buffer"]
    assert ref.state_dict()["state"][0]["momentum_buffer"] is ref.state[w_ref]["momentum_buffer"]


@pytest.mark.parametrize("direction", ["torch_to_ours", "ours_to_torch"])
@pytest.mark.parametrize("cfg", CONFIGS[1:], ids=[",".join(c) for c in CONFIGS[1:]])
def test_load_state_dict_round_trip_continues_identically(direction: str, cfg: dict, device: torch.device) -> None:
    data = _data(5, device, 16)
    ours_m, ours, ref_m, ref = _pair(5, device, cfg)
    for x, y in data[:8]:
        _train_step(ours_m, ours, x, y)
        _train_step(ref_m, ref, x, y)
    # fresh optimizers with a different lr: load_state_dict must bring the saved hyperparameters back
    if direction == "torch_to_ours":
        src, dst_m = ref, ours_m
        dst = ScratchSGD(_groups(dst_m, {"momentum": 0.6}), lr=9.0, **cfg)
        other_m, other = ref_m, ref
    else:
        src, dst_m = ours, ref_m
        dst = torch.optim.SGD(_groups(dst_m, {"momentum": 0.6}), lr=9.0, **cfg)
        other_m, other = ours_m, ours
    buf = io.BytesIO()
    torch.save(src.state_dict(), buf)
    buf.seek(0)
    dst.load_state_dict(torch.load(buf, weights_only=True))
    assert state_diff(dst.state_dict(), src.state_dict()) == []
    for x, y in data[8:]:
        _train_step(dst_m, dst, x, y)
        _train_step(other_m, other, x, y)
        for a, b in zip(dst_m.parameters(), other_m.parameters()):
            assert_close(a, b)


def test_torch_load_state_dict_aliases_in_memory_tensors_ours_copies() -> None:
    ours_m, ours, ref_m, ref = _pair(0, torch.device("cpu"), {"momentum": 0.9})
    x, y = _data(0, torch.device("cpu"), 1)[0]
    _train_step(ours_m, ours, x, y)
    _train_step(ref_m, ref, x, y)
    twin = torch.optim.SGD(_groups(_model(0, torch.device("cpu")), {"momentum": 0.6}), lr=0.1, momentum=0.9)
    twin.load_state_dict(ref.state_dict())
    w = twin.param_groups[0]["params"][0]
    assert twin.state[w]["momentum_buffer"] is ref.state[ref_m[0].weight]["momentum_buffer"]  # shared!
    mine = ScratchSGD(_groups(_model(0, torch.device("cpu")), {"momentum": 0.6}), lr=0.1, momentum=0.9)
    mine.load_state_dict(ours.state_dict())
    buf_new = mine.state[mine.param_groups[0]["params"][0]]["momentum_buffer"]
    buf_old = ours.state[ours_m[0].weight]["momentum_buffer"]
    assert buf_new is not buf_old and torch.equal(buf_new, buf_old)


def test_load_state_dict_casts_to_parameter_dtype() -> None:
    p32 = nn.Parameter(torch.randn(3))
    src = ScratchSGD([p32], lr=0.1, momentum=0.9)
    p32.grad = torch.ones(3)
    src.step()
    p64 = nn.Parameter(torch.randn(3, dtype=F64))
    for opt in (ScratchSGD([p64], lr=0.1, momentum=0.9), torch.optim.SGD([p64], lr=0.1, momentum=0.9)):
        opt.load_state_dict(src.state_dict())
        assert opt.state[p64]["momentum_buffer"].dtype == F64


def test_parameters_are_shared_with_the_model_not_copied() -> None:
    model = nn.Linear(3, 2)
    gen = model.parameters()  # a generator: consumed once by the optimizer
    opt = ScratchSGD(gen, lr=0.5)
    assert list(gen) == []
    assert opt.param_groups[0]["params"][0] is model.weight
    before = model.weight.detach().clone()
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    assert not torch.equal(model.weight, before)  # the model's own tensor moved
    assert_close(model.weight.detach(), before - 0.5 * torch.ones(2, 1) @ torch.ones(1, 3), rtol=1e-6, atol=1e-6)


def test_group_defaults_and_key_order_match_torch() -> None:
    a, b = nn.Parameter(torch.randn(2)), nn.Parameter(torch.randn(2))
    groups = [{"params": [a], "momentum": 0.9, "lr": 0.5}, {"params": b, "tag": "head"}]
    ours, ref = ScratchSGD(copy.copy(groups), lr=0.1), torch.optim.SGD(copy.copy(groups), lr=0.1)
    assert [list(g) for g in ours.param_groups] == [list(g) for g in ref.param_groups]
    assert ours.param_groups[1]["lr"] == 0.1 and ours.param_groups[1]["tag"] == "head"
    assert state_diff(ours.state_dict(), ref.state_dict()) == []
    assert ours.defaults == ref.defaults


def test_named_parameters_save_param_names_like_torch() -> None:
    model = nn.Linear(3, 2)
    ours, ref = ScratchSGD(model.named_parameters(), lr=0.1), torch.optim.SGD(model.named_parameters(), lr=0.1)
    assert ours.state_dict()["param_groups"][0]["param_names"] == ["weight", "bias"]
    assert state_diff(ours.state_dict(), ref.state_dict()) == []


@pytest.mark.parametrize("set_to_none", [True, False])
def test_zero_grad_matches_torch(set_to_none: bool) -> None:
    for cls in (ScratchSGD, torch.optim.SGD):
        p = nn.Parameter(torch.randn(3))
        p.grad = torch.ones(3)
        g = p.grad
        cls([p], lr=0.1).zero_grad(set_to_none=set_to_none)
        if set_to_none:
            assert p.grad is None
        else:
            assert p.grad is g and torch.equal(g, torch.zeros(3))


def test_step_closure_returns_loss() -> None:
    p = nn.Parameter(torch.tensor([2.0]))
    opt = ScratchSGD([p], lr=0.25)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = (p**2).sum()
        loss.backward()
        return loss

    assert opt.step(closure).item() == 4.0
    assert p.item() == 1.0  # 2 - 0.25 * 4


def test_base_class_requires_step_and_required_hyperparameters() -> None:
    p = nn.Parameter(torch.randn(2))
    with pytest.raises(NotImplementedError, match="must implement step"):
        OptimizerBase([p], {"lr": 0.1}).step()
    with pytest.raises(ValueError, match="didn't specify a value of required optimization parameter lr"):
        OptimizerBase([p], {"lr": required})
    assert OptimizerBase([{"params": [p], "lr": 0.2}], {"lr": required}).param_groups[0]["lr"] == 0.2


def test_adam_state_is_about_twice_the_parameters() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters())
    assert optimizer_state_bytes(opt) == 0  # state is created lazily, at the first step
    model(torch.randn(4, 64)).sum().backward()
    opt.step()
    n_tensors = len(list(model.parameters()))
    for s in opt.state.values():
        assert sorted(s) == ["exp_avg", "exp_avg_sq", "step"]
        assert s["step"].dtype == torch.float32 and s["step"].dim() == 0
    assert optimizer_state_bytes(opt) == 2 * parameter_bytes(opt) + 4 * n_tensors
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sgd.step()
    assert optimizer_state_bytes(sgd) == parameter_bytes(sgd)  # one momentum buffer per parameter
    assert optimizer_state_bytes(torch.optim.SGD(model.parameters(), lr=0.1)) == 0


def test_adam_exp_avg_is_an_exponential_moving_average_of_gradients() -> None:
    p = nn.Parameter(torch.zeros(3, dtype=F64))
    beta1, beta2 = 0.9, 0.99
    opt = torch.optim.Adam([p], betas=(beta1, beta2))
    grads = [torch.randn(3, dtype=F64, generator=torch.Generator().manual_seed(k)) for k in range(6)]
    for g in grads:
        p.grad = g.clone()
        opt.step()
    t = len(grads)
    ema = sum((1 - beta1) * beta1 ** (t - 1 - k) * g for k, g in enumerate(grads))
    ema_sq = sum((1 - beta2) * beta2 ** (t - 1 - k) * g**2 for k, g in enumerate(grads))
    assert_close(opt.state[p]["exp_avg"], ema)
    assert_close(opt.state[p]["exp_avg_sq"], ema_sq)


def test_activations_dominate_optimizer_state_at_large_batch() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    adam_state = 2 * sum(p.nbytes for p in model.parameters())
    assert activation_bytes(model, torch.randn(8, 256)) < adam_state / 10
    assert activation_bytes(model, torch.randn(2048, 256)) > 2 * adam_state


def test_activation_bytes_counts_saved_inputs() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    x = torch.randn(16, 4)
    assert activation_bytes(model, x) == x.nbytes + 16 * 8 * 4  # x, then tanh's output (also Linear 2's input)


def test_torch_scheduler_needs_a_torch_optimizer() -> None:
    opt = ScratchSGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(TypeError, match="ScratchSGD is not an Optimizer"):
        torch.optim.lr_scheduler.StepLR(opt, step_size=1)


# ---------------------------------------------------------------- rejected input


def test_rejects_a_single_tensor_like_torch() -> None:
    p = nn.Parameter(torch.randn(3))
    for cls in (ScratchSGD, torch.optim.SGD):
        with pytest.raises(TypeError, match="should be an iterable of Tensors or dicts, but got torch.FloatTensor"):
            cls(p, lr=0.1)


def test_rejects_a_single_dict() -> None:
    with pytest.raises(TypeError, match="single dict"):
        ScratchSGD({"params": [nn.Parameter(torch.randn(1))]}, lr=0.1)


def test_rejects_negative_lr() -> None:
    p = nn.Parameter(torch.randn(3))
    with pytest.raises(ValueError, match="Invalid lr: lr=-0.1 must be >= 0"):
        ScratchSGD([p], lr=-0.1)
    with pytest.raises(ValueError, match="Invalid learning rate: -0.1"):
        torch.optim.SGD([p], lr=-0.1)


def test_rejects_negative_lr_in_a_group_which_torch_accepts() -> None:
    a, b = nn.Parameter(torch.randn(1)), nn.Parameter(torch.randn(1))
    groups = [{"params": [a]}, {"params": [b], "lr": -1.0}]
    torch.optim.SGD(copy.copy(groups), lr=0.1)  # torch validates only the defaults
    with pytest.raises(ValueError, match="Invalid lr: lr=-1.0"):
        ScratchSGD(groups, lr=0.1)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"momentum": -0.5}, "Invalid momentum"),
        ({"weight_decay": -1}, "Invalid weight_decay"),
        ({"nesterov": True}, "Nesterov momentum requires a momentum"),
        ({"momentum": 0.9, "dampening": 0.1, "nesterov": True}, "zero dampening"),
        ({"fused": True}, "no differentiable/fused"),
    ],
)
def test_rejects_bad_hyperparameters(kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ScratchSGD([nn.Parameter(torch.randn(1))], lr=0.1, **kw)


def test_rejects_a_parameter_in_two_groups_like_torch() -> None:
    p = nn.Parameter(torch.randn(3))
    for cls in (ScratchSGD, torch.optim.SGD):
        with pytest.raises(ValueError, match="some parameters appear in more than one parameter group"):
            cls([{"params": [p]}, {"params": [p]}], lr=0.1)


def test_rejects_a_duplicate_inside_a_group_where_torch_warns() -> None:
    p = nn.Parameter(torch.randn(3))
    with pytest.raises(ValueError, match="same parameter twice"):
        ScratchSGD([p, p], lr=0.1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.optim.SGD([p, p], lr=0.1)
    assert any("duplicate parameters" in str(w.message) for w in caught)


def test_rejects_empty_non_leaf_non_tensor_and_set() -> None:
    p = nn.Parameter(torch.randn(3))
    with pytest.raises(ValueError, match="empty parameter list"):
        ScratchSGD([], lr=0.1)
    with pytest.raises(ValueError, match="can't optimize a non-leaf Tensor"):
        ScratchSGD([p * 2], lr=0.1)
    with pytest.raises(TypeError, match="can only optimize Tensors, but one of the params is str"):
        ScratchSGD(["w"], lr=0.1)
    with pytest.raises(TypeError, match="not a set"):
        ScratchSGD([{"params": {p}}], lr=0.1)
    with pytest.raises(ValueError, match="needs a 'params' entry"):
        ScratchSGD([{"lr": 0.1}], lr=0.1)
    with pytest.raises(TypeError, match="param_group must be a dict"):
        ScratchSGD([p], lr=0.1).add_param_group([p])


def test_rejects_mixing_named_and_unnamed_groups() -> None:
    a, b = nn.Parameter(torch.randn(1)), nn.Parameter(torch.randn(1))
    with pytest.raises(ValueError, match="with/without names"):
        ScratchSGD([{"params": [("a", a)]}, {"params": [b]}], lr=0.1)
    with pytest.raises(ValueError, match="Some param names are missing"):
        ScratchSGD([("a", a), b], lr=0.1)


def _stepped(groups_of: list[int]) -> ScratchSGD:
    groups = [{"params": [nn.Parameter(torch.randn(2)) for _ in range(n)]} for n in groups_of]
    opt = ScratchSGD(groups, lr=0.1, momentum=0.9)
    for g in opt.param_groups:
        for p in g["params"]:
            p.grad = torch.ones(2)
    opt.step()
    return opt


def test_load_rejects_mismatched_group_count_and_size() -> None:
    sd = _stepped([2, 1]).state_dict()
    with pytest.raises(ValueError, match="loaded state dict has 2 parameter groups, this optimizer has 1"):
        _stepped([3]).load_state_dict(sd)
    with pytest.raises(ValueError, match="parameter group 0: loaded state dict has 2 parameters, this optimizer has 1"):
        _stepped([1, 2]).load_state_dict(sd)
    with pytest.raises(ValueError, match="different number of parameter groups"):
        torch.optim.SGD([nn.Parameter(torch.randn(2))], lr=0.1).load_state_dict(sd)


def test_load_rejects_missing_keys_unknown_index_and_wrong_shape() -> None:
    opt = _stepped([2])
    with pytest.raises(ValueError, match=r"missing \['state'\]"):
        opt.load_state_dict({"param_groups": []})
    sd = copy.deepcopy(opt.state_dict())
    sd["state"][7] = sd["state"].pop(1)
    with pytest.raises(ValueError, match="parameter index 7"):
        opt.load_state_dict(sd)
    sd = copy.deepcopy(opt.state_dict())
    sd["state"][0]["momentum_buffer"] = torch.zeros(5)
    with pytest.raises(ValueError, match=r"state 'momentum_buffer' has shape \(5,\) but its parameter has \(2,\)"):
        opt.load_state_dict(sd)
    sd["param_groups"][0]["lr"] = -3.0
    sd["state"][0]["momentum_buffer"] = torch.zeros(2)
    with pytest.raises(ValueError, match="Invalid lr"):
        opt.load_state_dict(sd)
