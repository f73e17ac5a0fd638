"""full_training_state: model + optimizer + scheduler + GradScaler through torch.save / weights_only load."""

from __future__ import annotations

import argparse
import copy
import dataclasses
import io
import pickle

import pytest
import torch
from torch import nn

from snippets.pytorch.training_state import (
    full_training_state,
    load_training_state,
    restore_training_state,
    save_training_state,
    state_diff,
)


def _build(seed: int = 0, device: str = "cpu"):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2)).to(device)
    opt = torch.optim.AdamW(
        [{"params": model[0].parameters()}, {"params": [*model[1].parameters(), *model[3].parameters()], "lr": 0.01}],
        lr=0.05,
    )
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[0.05, 0.01], total_steps=40)
    scaler = torch.amp.GradScaler(device, init_scale=2.0**8, growth_interval=3)
    return model, opt, sched, scaler


def _train(model, opt, sched, scaler, steps: int, seed: int) -> list[float]:
    g = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    losses = []
    model.train()
    for _ in range(steps):
        x, y = torch.randn(16, 4, generator=g).to(device), torch.randn(16, 2, generator=g).to(device)
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        sched.step()
        losses.append(loss.item())
    return losses


def test_every_part_survives_save_and_weights_only_load(device: torch.device) -> None:
    parts = _build(device=device.type)
    _train(*parts, steps=7, seed=1)
    state = full_training_state(*parts, epoch=3, best_loss=0.25)
    buf = io.BytesIO()
    save_training_state(state, buf)
    loaded = load_training_state(buf)
    assert state_diff(loaded, state) == []  # every tensor (dtype, shape, device, values), int, float, key
    assert list(loaded) == ["model", "optimizer", "scheduler", "scaler", "epoch", "best_loss"]
    assert isinstance(loaded["model"]["1.num_batches_tracked"], torch.Tensor)  # a buffer, an int64 tensor
    assert loaded["scheduler"]["last_epoch"] == 7 and loaded["scaler"]["_growth_tracker"] == 7 % 3


def test_restore_into_fresh_objects_continues_identically(device: torch.device) -> None:
    a = _build(device=device.type)
    _train(*a, steps=10, seed=1)
    buf = io.BytesIO()
    save_training_state(full_training_state(*a, step=10), buf)
    b = _build(seed=123, device=device.type)  # different initial weights: everything must come from the file
    extra = restore_training_state(load_training_state(buf), *b)
    assert extra == {"step": 10}
    assert state_diff(full_training_state(*b), full_training_state(*a)) == []
    assert _train(*b, steps=12, seed=2) == _train(*a, steps=12, seed=2)
    for pa, pb in zip(a[0].state_dict().values(), b[0].state_dict().values()):
        assert torch.equal(pa, pb)


def test_scaler_scale_changes_and_is_restored() -> None:
    parts = _build()
    _train(*parts, steps=6, seed=1)
    assert parts[3].get_scale() == 2.0**10  # grew twice (growth_interval=3, no inf/NaN)
    fresh = torch.amp.GradScaler("cpu")
    fresh.load_state_dict(load_training_state(_saved(full_training_state(*parts)))["scaler"])
    assert fresh.get_scale() == 2.0**10


def _saved(state: dict) -> io.BytesIO:
    buf = io.BytesIO()
    save_training_state(state, buf)
    return buf


def test_save_to_a_file_path(tmp_path) -> None:
    parts = _build()
    _train(*parts, steps=2, seed=0)
    path = tmp_path / "ckpt.pt"
    save_training_state(full_training_state(*parts), path)
    assert state_diff(load_training_state(path), full_training_state(*parts)) == []


def test_state_dicts_are_live_references_until_saved() -> None:
    model, opt, sched, scaler = _build()
    _train(model, opt, sched, scaler, steps=2, seed=0)
    live = full_training_state(model, opt, sched, scaler)
    frozen = copy.deepcopy(live)
    on_disk = _saved(live)
    assert live["model"]["0.weight"].data_ptr() == model[0].weight.data_ptr()
    exp_avg = opt.state[model[0].weight]["exp_avg"]
    assert live["optimizer"]["state"][0]["exp_avg"] is exp_avg
    _train(model, opt, sched, scaler, steps=1, seed=5)
    assert not torch.equal(live["model"]["0.weight"], frozen["model"]["0.weight"])  # it moved with training
    assert state_diff(load_training_state(on_disk), frozen) == []  # the saved copy did not
    assert live["scheduler"]["last_epoch"] == 2  # plain ints are copied when the dict is built


def test_three_state_dicts_use_three_key_schemes() -> None:
    model, opt, sched, scaler = _build()
    _train(model, opt, sched, scaler, steps=1, seed=0)
    s = full_training_state(model, opt, sched, scaler)
    assert list(s["model"])[:3] == ["0.weight", "0.bias", "1.weight"]  # by attribute path
    assert sorted(s["optimizer"]["state"]) == list(range(6))  # by position in param_groups
    assert {"last_epoch", "base_lrs", "_last_lr"} <= set(s["scheduler"])  # the scheduler's attributes
    assert set(s["scaler"]) == {"scale", "growth_factor", "backoff_factor", "growth_interval", "_growth_tracker"}


def test_optimizer_state_is_matched_by_position_not_by_name() -> None:
    torch.manual_seed(0)
    src = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    opt = torch.optim.SGD(src.parameters(), lr=0.1, momentum=0.9)
    src(torch.randn(2, 3)).sum().backward()
    opt.step()
    swapped = torch.optim.SGD([*src[1].parameters(), *src[0].parameters()], lr=0.1, momentum=0.9)
    swapped.load_state_dict(opt.state_dict())  # same shapes: torch accepts it silently
    wrong = swapped.state[src[1].weight]["momentum_buffer"]
    assert torch.equal(wrong, opt.state[src[0].weight]["momentum_buffer"])  # layer 0's momentum on layer 1


@dataclasses.dataclass
class Config:
    lr: float = 0.1


def test_weights_only_refuses_arbitrary_objects() -> None:
    parts = _build()
    buf = _saved(full_training_state(*parts, config=Config()))
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_training_state(buf)
    buf.seek(0)
    assert torch.load(buf, weights_only=False)["config"].lr == 0.1  # only for files you trust
    ok = _saved(full_training_state(*parts, config=dataclasses.asdict(Config())))
    assert load_training_state(ok)["config"] == {"lr": 0.1}
    args = argparse.Namespace(lr=0.1, epochs=3)
    with pytest.raises(pickle.UnpicklingError, match="Unsupported global: GLOBAL argparse.Namespace"):
        load_training_state(_saved({"args": args}))
    with pytest.raises(pickle.UnpicklingError):  # weights_only=True is torch.load's default (since 2.6)
        buf = _saved({"args": args})
        buf.seek(0)
        torch.load(buf)
    assert load_training_state(_saved({"args": vars(args)})) == {"args": {"lr": 0.1, "epochs": 3}}


def test_state_diff_reports_paths() -> None:
    a = {"x": torch.zeros(2), "n": 1, "l": [1.0, "s"]}
    assert state_diff(a, copy.deepcopy(a)) == []
    b = {"x": torch.tensor([0.0, 1.0]), "n": 2, "l": [1.0, "t"]}
    assert state_diff(a, b) == [
        "state['x']: tensor values differ",
        "state['n']: 1 vs 2",
        "state['l'][1]: 's' vs 't'",
    ]
    assert state_diff({"x": torch.zeros(2)}, {"x": torch.zeros(2, dtype=torch.float64)})[0].startswith("state['x']: ")
    assert state_diff({"a": 1}, {"b": 1}) == ["state: keys ['a'] vs ['b']"]
    assert state_diff(torch.tensor([float("nan")]), torch.tensor([float("nan")])) == []  # NaN == NaN here
    assert state_diff(0, 0.0) == ["state: 0 vs 0.0"]  # types matter: an int must come back an int


# ---------------------------------------------------------------- rejected input


def test_restore_rejects_missing_or_unexpected_parts() -> None:
    model, opt, sched, scaler = _build()
    without_sched = full_training_state(model, opt)
    with pytest.raises(ValueError, match="scheduler was given but the saved state has no 'scheduler' entry"):
        restore_training_state(without_sched, model, opt, sched)
    with pytest.raises(ValueError, match="the saved state has a 'scaler' entry"):
        restore_training_state(full_training_state(model, opt, scaler=scaler), model, opt)


def test_resuming_from_the_model_alone_is_not_the_same_run() -> None:
    a = _build()
    _train(*a, steps=10, seed=1)
    buf = _saved(full_training_state(*a))
    model_only = _build(seed=123)
    model_only[0].load_state_dict(load_training_state(buf)["model"])  # fresh optimizer, scheduler and scaler
    full = _build(seed=123)
    restore_training_state(load_training_state(buf), *full)
    reference = _train(*a, steps=8, seed=2)
    assert _train(*full, steps=8, seed=2) == reference
    assert _train(*model_only, steps=8, seed=2) != reference
