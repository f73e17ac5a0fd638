"""Checkpoints: bit-identical resume, every part needed, atomic writes under SIGKILL, clear errors."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from snippets.pytorch.checkpoint import (
    CHECKPOINT_VERSION,
    Progress,
    ResumableRandomSampler,
    atomic_save,
    atomic_write,
    capture_rng_states,
    list_checkpoints,
    load_checkpoint,
    load_run,
    make_demo_run,
    restore_rng_states,
    save_checkpoint,
    save_run,
    train_steps,
)

ROOT = Path(__file__).resolve().parents[2]
N = 7  # 7 steps, 6 batches per epoch: the checkpoint falls in the middle of epoch 1


def _straight(device: torch.device) -> tuple[torch.Tensor, object, list[float]]:
    torch.manual_seed(0)
    run = make_demo_run(device=device)
    losses, scales = [], []
    for _ in range(2 * N):
        losses.append(train_steps(run, 1))
        scales.append(run.scaler.get_scale())
    return torch.cat(losses), run, scales


def _first_half(path: Path, device: torch.device) -> torch.Tensor:
    torch.manual_seed(0)
    run = make_demo_run(device=device)
    head = train_steps(run, N)
    save_run(path, run)
    return head


def _assert_same_state(a, b) -> None:
    for (name, p), q in zip(a.model.named_parameters(), b.model.parameters()):
        assert torch.equal(p, q), name
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        sa, sb = a.optimizer.state[p], b.optimizer.state[q]
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    assert a.scheduler.get_last_lr() == b.scheduler.get_last_lr()
    assert a.scaler.state_dict() == b.scaler.state_dict()
    assert a.progress == b.progress


def test_resume_is_bit_identical(device: torch.device, tmp_path) -> None:
    straight, straight_run, scales = _straight(device)
    head = _first_half(tmp_path / "ckpt.pt", device)
    torch.manual_seed(12345)  # another global RNG state and other initial weights: all must be overwritten
    run = load_run(tmp_path / "ckpt.pt", make_demo_run(init_seed=99, device=device))
    assert (run.progress.epoch, run.progress.step, run.progress.step_in_epoch) == (1, N, 1)  # mid-epoch
    tail = train_steps(run, N)
    assert torch.equal(torch.cat([head, tail]), straight)  # every loss, bit for bit
    _assert_same_state(run, straight_run)
    # the run really exercises the GradScaler: it backs off (a skipped step) in both halves
    backoffs = [i for i in range(1, 2 * N) if scales[i] < scales[i - 1]]
    assert any(i < N for i in backoffs) and any(i >= N for i in backoffs)
    # eta_t = eta_0 * gamma ** (t // step_size), and the scale doubles after a finite step, halves on inf
    assert straight_run.scheduler.get_last_lr()[0] == pytest.approx(0.02 * 0.7 ** (2 * N // 4), rel=1e-12)
    assert scales[0] == 2 * 2.0**10
    assert all(b in (2 * a, a / 2) for a, b in zip(scales, scales[1:]))


@pytest.mark.parametrize("dropped", ["optimizer", "scheduler", "scaler", "rng", "sampler_seed", "step_in_epoch"])
def test_every_part_of_the_checkpoint_is_needed(dropped: str, tmp_path) -> None:
    cpu = torch.device("cpu")
    straight, straight_run, _ = _straight(cpu)
    head = _first_half(tmp_path / "ckpt.pt", cpu)
    torch.manual_seed(12345)
    run = make_demo_run(init_seed=99)
    parts = {"optimizer": run.optimizer, "scheduler": run.scheduler, "scaler": run.scaler}
    if dropped in parts:
        parts[dropped] = None  # that object stays freshly constructed
    run.progress = load_checkpoint(
        tmp_path / "ckpt.pt", model=run.model, sampler=run.sampler, restore_rng=dropped != "rng", **parts
    )
    if dropped == "sampler_seed":
        run.sampler.seed = 7  # another shuffling order
    if dropped == "step_in_epoch":
        run.progress.step_in_epoch = 0  # restart the epoch instead of continuing it
    tail = train_steps(run, N)
    same_losses = torch.equal(torch.cat([head, tail]), straight)
    same_params = all(torch.equal(p, q) for p, q in zip(run.model.parameters(), straight_run.model.parameters()))
    assert not (same_losses and same_params), f"dropping {dropped} did not change the run"


def test_checkpoint_contents_and_weights_only(tmp_path) -> None:
    import numpy as np  # imported: its global RNG is then saved too

    torch.manual_seed(0)
    run = make_demo_run()
    train_steps(run, 3)
    run.progress.extra["best_loss"] = 0.5
    save_run(tmp_path / "ckpt.pt", run)
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(tmp_path / "ckpt.pt")) == []
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert set(ckpt) == {"version", "model", "optimizer", "scheduler", "scaler", "sampler", "progress", "extra", "rng"}
    assert ckpt["version"] == CHECKPOINT_VERSION
    assert set(ckpt["optimizer"]["state"][0]) == {"momentum_buffer"}
    assert {"last_epoch", "base_lrs", "_last_lr"} <= set(ckpt["scheduler"])
    assert set(ckpt["scaler"]) == {"scale", "growth_factor", "backoff_factor", "growth_interval", "_growth_tracker"}
    assert set(ckpt["rng"]) >= {"torch", "python", "cuda", "numpy"}
    assert ckpt["progress"] == {"epoch": 0, "step": 3, "step_in_epoch": 3} and ckpt["extra"] == {"best_loss": 0.5}
    assert ckpt["rng"]["torch"].dtype == torch.uint8 and ckpt["rng"]["torch"].numel() == 5056
    assert np.random.get_state()[1].shape == (624,)


def _nbytes(obj) -> int:
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    return len(buf.getvalue())


def test_checkpoint_part_sizes() -> None:
    """The figure's claims: a small model's RNG state outweighs its weights; Adam doubles a big one."""
    run = make_demo_run()
    n_params = sum(p.numel() for p in run.model.parameters())
    assert n_params == 321
    assert 1000 < _nbytes({}) < 1500  # zip + pickle overhead of any torch.save file
    assert _nbytes(torch.get_rng_state()) > _nbytes(run.model.state_dict())
    big = nn.Linear(1000, 1000)
    adam = torch.optim.Adam(big.parameters())
    big(torch.randn(2, 1000)).sum().backward()
    adam.step()
    ratio = _nbytes(adam.state_dict()) / _nbytes(big.state_dict())
    assert 1.99 < ratio < 2.01  # exp_avg and exp_avg_sq, each the size of the weights


def test_rng_states_roundtrip_all_generators() -> None:
    import numpy as np

    torch.manual_seed(1)
    random.seed(2)
    np.random.seed(3)
    states = capture_rng_states()
    first = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(9)
    random.seed(9)
    np.random.seed(9)
    restore_rng_states(states)
    again = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(first[0], again[0]) and first[1:] == again[1:]


def test_dataloader_iter_draws_from_the_global_rng_unless_given_a_generator() -> None:
    ds = TensorDataset(torch.arange(8.0))
    before = torch.get_rng_state()
    iter(DataLoader(ds, batch_size=2))  # draws the worker base seed from the global RNG
    assert not torch.equal(before, torch.get_rng_state())
    before = torch.get_rng_state()
    iter(DataLoader(ds, batch_size=2, generator=torch.Generator().manual_seed(0)))
    assert torch.equal(before, torch.get_rng_state())
    before = torch.get_rng_state()
    iter(make_demo_run().loader)
    assert torch.equal(before, torch.get_rng_state())


class _Counting(Dataset):
    def __init__(self, n: int) -> None:
        self.n, self.reads = n, []

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        self.reads.append(i)
        return i


def test_sampler_resumes_mid_epoch_with_the_same_batches() -> None:
    ds = _Counting(10)
    sampler = ResumableRandomSampler(10, seed=5)
    loader = DataLoader(ds, batch_size=3, sampler=sampler)
    sampler.set_epoch(2)
    full = [b.tolist() for b in loader]
    assert sorted(sum(full, [])) == list(range(10))  # a permutation
    sampler.set_epoch(3)
    assert [b.tolist() for b in loader] != full  # a new order every epoch
    fresh = ResumableRandomSampler(10, seed=0)
    fresh.load_state_dict(sampler.state_dict())
    fresh.set_epoch(2, start=2 * 3)  # two batches of epoch 2 were done
    ds.reads.clear()
    rest = [b.tolist() for b in DataLoader(ds, batch_size=3, sampler=fresh)]
    assert rest == full[2:]
    assert sorted(ds.reads) == sorted(sum(full[2:], []))  # skipped samples were never read
    assert len(fresh) == 4


def test_sampler_matches_randperm_with_seed_plus_epoch() -> None:
    s = ResumableRandomSampler(7, seed=10)
    s.set_epoch(4)
    assert list(s) == torch.randperm(7, generator=torch.Generator().manual_seed(14)).tolist()


_WRITER = textwrap.dedent(
    """
    import sys, threading, time
    import torch
    from snippets.pytorch.checkpoint import atomic_write

    target, naive = sys.argv[1], sys.argv[2]
    big = {"model": torch.arange(2_000_000, dtype=torch.float32)}  # 8 MB, written in pieces

    PRINT = threading.Lock()

    class Stall:
        # file wrapper: after `limit` bytes it announces itself and hangs until killed
        def __init__(self, f, tag, limit=3_000_000):
            self.f, self.tag, self.limit, self.n = f, tag, limit, 0
        def write(self, b):
            b = memoryview(b)
            if self.n + len(b) >= self.limit:  # write up to the limit, then hang mid-record
                self.f.write(b[: self.limit - self.n])
                self.f.flush()
                with PRINT:  # one whole line per writer, even when both reach the limit at once
                    print(self.tag, flush=True)
                time.sleep(600)
            self.n += self.f.write(b)
            return len(b)
        def flush(self):
            self.f.flush()

    def plain():
        with open(naive, "wb") as f:  # torch.save straight over the old file
            torch.save(big, Stall(f, "naive"))

    threading.Thread(target=plain, daemon=True).start()
    atomic_write(target, lambda f: torch.save(big, Stall(f, "atomic")))
    """
)


def test_killed_writer_leaves_the_previous_checkpoint_intact(tmp_path) -> None:
    ckpt_dir, naive_dir = tmp_path / "ckpts", tmp_path / "naive"
    ckpt_dir.mkdir()
    naive_dir.mkdir()
    old = {"model": torch.arange(5.0)}
    atomic_save(old, ckpt_dir / "ckpt.pt")
    torch.save(old, naive_dir / "ckpt.pt")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(ckpt_dir / "ckpt.pt"), str(naive_dir / "ckpt.pt")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
    )  # fmt: skip
    watchdog = threading.Timer(60, proc.kill)
    watchdog.start()
    seen = set()
    try:
        for _ in range(2):  # each writer prints its tag once it is half-way and hanging
            line = proc.stdout.readline()
            if not line:
                break
            seen.add(line.split()[0])
    finally:
        proc.send_signal(signal.SIGKILL)  # crash both writers half-way through
        proc.wait()
        watchdog.cancel()
    assert seen == {"naive", "atomic"}, proc.stderr.read()
    assert proc.returncode == -signal.SIGKILL

    # writing in place destroyed the old file
    with pytest.raises(RuntimeError, match="failed finding central directory"):
        torch.load(naive_dir / "ckpt.pt", weights_only=True)
    # the atomic writer left the old checkpoint as it was, plus a half-written temp file
    assert torch.equal(torch.load(ckpt_dir / "ckpt.pt", weights_only=True)["model"], old["model"])
    temps = [p for p in ckpt_dir.iterdir() if p.name != "ckpt.pt"]
    assert len(temps) == 1 and temps[0].name.startswith(".ckpt.pt.") and temps[0].name.endswith(".tmp")
    assert temps[0].stat().st_size == (naive_dir / "ckpt.pt").stat().st_size == 3_000_000
    with pytest.raises(RuntimeError):
        torch.load(temps[0], weights_only=True)
    assert list_checkpoints(ckpt_dir) == [ckpt_dir / "ckpt.pt"]  # the temp file is never picked up


def test_atomic_write_removes_its_temp_file_on_error(tmp_path) -> None:
    atomic_save({"a": torch.ones(1)}, tmp_path / "c.pt")

    def broken(f) -> None:
        f.write(b"partial")
        raise KeyboardInterrupt  # even an interrupt must not leave a temp file or a broken target

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "c.pt", broken)
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]
    assert torch.equal(torch.load(tmp_path / "c.pt", weights_only=True)["a"], torch.ones(1))


def test_list_checkpoints_orders_and_filters(tmp_path) -> None:
    for name in ("step-002.pt", "step-001.pt", ".step-003.pt.abc.tmp", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-001.pt", "step-002.pt"]
    with pytest.raises(ValueError, match="directory '.*missing' does not exist"):
        list_checkpoints(tmp_path / "missing")


def _saved(tmp_path) -> tuple[Path, object]:
    torch.manual_seed(0)
    run = make_demo_run()
    train_steps(run, 2)
    return save_run(tmp_path / "ckpt.pt", run), run


def test_rejects_missing_directory_before_touching_anything(tmp_path) -> None:
    run = make_demo_run()
    before = [p.clone() for p in run.model.parameters()]
    rng = torch.get_rng_state()
    target = tmp_path / "no" / "such" / "ckpt.pt"
    with pytest.raises(ValueError, match=r"checkpoint directory '.*no/such' does not exist"):
        save_run(target, run)
    with pytest.raises(ValueError, match=r"checkpoint directory '.*no/such' does not exist"):
        load_run(target, run)
    with pytest.raises(FileNotFoundError, match="no checkpoint file at '.*absent.pt'"):
        load_run(tmp_path / "absent.pt", run)
    assert all(torch.equal(a, b) for a, b in zip(before, run.model.parameters()))
    assert torch.equal(rng, torch.get_rng_state())
    assert list(tmp_path.iterdir()) == []


def test_rejects_incompatible_model_naming_keys_and_shapes(tmp_path) -> None:
    path, _ = _saved(tmp_path)
    other = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 1), nn.Linear(1, 1))
    opt = torch.optim.SGD(other.parameters(), lr=0.1, momentum=0.9)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    rng = torch.get_rng_state()
    msg = (
        r"does not fit Sequential: missing keys \(in the model, not in the file\): \['4\.weight', '4\.bias'\]; "
        r"shape mismatches: 0\.weight: saved \(32, 8\) vs model \(16, 8\), 0\.bias: saved \(32,\) vs model \(16,\), "
        r"3\.weight: saved \(1, 32\) vs model \(1, 16\)"
    )
    with pytest.raises(ValueError, match=msg):
        load_checkpoint(path, model=other, optimizer=opt)
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())  # untouched
    assert opt.state_dict()["state"] == {} and torch.equal(rng, torch.get_rng_state())


def test_rejects_mismatched_optimizer_and_missing_parts(tmp_path) -> None:
    path, run = _saved(tmp_path)
    fresh = make_demo_run()
    groups = [{"params": list(fresh.model.parameters())[:2]}, {"params": list(fresh.model.parameters())[2:]}]
    opt = torch.optim.SGD(groups, lr=0.1)
    with pytest.raises(ValueError, match=r"optimizer parameter groups of sizes \[4\], this optimizer has \[2, 2\]"):
        load_checkpoint(path, model=fresh.model, optimizer=opt)
    save_checkpoint(tmp_path / "bare.pt", model=run.model, optimizer=run.optimizer, progress=Progress())
    with pytest.raises(ValueError, match="has no scaler state, but a scaler was passed"):
        load_checkpoint(tmp_path / "bare.pt", model=fresh.model, scaler=fresh.scaler)
    with pytest.raises(ValueError, match="has no sampler state"):
        load_checkpoint(tmp_path / "bare.pt", model=fresh.model, sampler=fresh.sampler)
    ckpt = torch.load(path, weights_only=True)
    ckpt["version"] = 0
    torch.save(ckpt, tmp_path / "old.pt")
    with pytest.raises(ValueError, match="has checkpoint version 0, expected 1"):
        load_checkpoint(tmp_path / "old.pt", model=fresh.model)


def test_sampler_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="num_samples must be positive, got 0"):
        ResumableRandomSampler(0)
    s = ResumableRandomSampler(5)
    with pytest.raises(ValueError, match=r"need epoch >= 0 and 0 <= start <= 5, got 1, 6"):
        s.set_epoch(1, start=6)
    with pytest.raises(ValueError, match="got -1, 0"):
        s.set_epoch(-1)
    with pytest.raises(ValueError, match="sampler was saved for 9 samples, this one has 5"):
        s.load_state_dict({"seed": 0, "num_samples": 9})


def test_gradscaler_cpu_exists_and_is_enabled() -> None:
    scaler = torch.amp.GradScaler("cpu", init_scale=8.0)
    assert scaler.is_enabled() and scaler.get_scale() == 8.0


def test_module_demo_runs(capsys) -> None:
    import runpy
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # runpy: module already imported
        runpy.run_module("snippets.pytorch.checkpoint", run_name="__main__")
    out = capsys.readouterr().out
    assert "bit-identical losses: True" in out and "(1, 1)" in out
