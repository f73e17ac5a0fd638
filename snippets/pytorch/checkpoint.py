"""Training checkpoints that lose nothing, written atomically, and a resume that is bit-identical.

A checkpoint holds the model, optimizer, LR scheduler and GradScaler state dicts, every RNG state
(torch CPU, CUDA, Python ``random``, NumPy's legacy global RNG when NumPy is loaded) and the data
position (sampler seed, epoch, step within the epoch). Reference: PyTorch docs, "Saving and
loading a general checkpoint"; ``torch.utils.data.distributed.DistributedSampler.set_epoch``.
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Sampler, TensorDataset

from snippets.pytorch.persistence import compare_state_dict

__all__ = [
    "CHECKPOINT_VERSION",
    "atomic_write",
    "atomic_save",
    "list_checkpoints",
    "capture_rng_states",
    "restore_rng_states",
    "ResumableRandomSampler",
    "Progress",
    "save_checkpoint",
    "load_checkpoint",
    "DemoRun",
    "make_demo_run",
    "train_steps",
    "save_run",
    "load_run",
]

CHECKPOINT_VERSION = 1
PathLike = str | os.PathLike
TMP_SUFFIX = ".tmp"


def _existing_dir(path: PathLike, argname: str = "path") -> Path:
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"{argname}={str(path)!r}: checkpoint directory {str(path.parent)!r} does not exist")
    return path


# --8<-- [start:atomic]
def atomic_write(path: PathLike, write: Any) -> Path:
    """Call ``write(file)`` on a temporary file next to ``path``, fsync it, then rename it over ``path``.

    ``os.replace`` within one directory is atomic: a reader sees the old file or the new one,
    never half of each. A crash before the rename leaves the old file intact and a stray
    ``.<name>.*.tmp`` that :func:`list_checkpoints` ignores.
    """
    path = _existing_dir(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if hasattr(os, "O_DIRECTORY"):  # POSIX: make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path


def atomic_save(obj: Any, path: PathLike) -> Path:
    """``torch.save(obj, path)``, atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda f: torch.save(obj, f))


# --8<-- [end:atomic]


def list_checkpoints(directory: PathLike, suffix: str = ".pt") -> list[Path]:
    """The finished checkpoint files in ``directory``, oldest name first; temp files are skipped."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"directory {str(directory)!r} does not exist")
    return sorted(
        p
        for p in directory.iterdir()
        if p.is_file() and p.name.endswith(suffix) and not p.name.startswith(".") and TMP_SUFFIX not in p.suffixes
    )


# --8<-- [start:rng]
def capture_rng_states() -> dict[str, Any]:
    """Every global RNG a training step may draw from, as weights_only-loadable values."""
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),  # CPU generator: dropout, randperm, init, ...
        "python": random.getstate(),  # a tuple of ints
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    np = sys.modules.get("numpy")  # saved when the program uses NumPy; never imported here
    if np is not None:
        name, keys, pos, has_gauss, cached = np.random.get_state()
        states["numpy"] = {
            "name": name,
            "keys": torch.from_numpy(keys.astype("int64")),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        }
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_states`."""
    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    if states.get("cuda") and torch.cuda.is_available():
        for i, s in enumerate(states["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s, i)
    np = sys.modules.get("numpy")
    if np is not None and "numpy" in states:
        s = states["numpy"]
        keys = s["keys"].numpy().astype("uint32")
        np.random.set_state((s["name"], keys, s["pos"], s["has_gauss"], s["cached_gaussian"]))


# --8<-- [end:rng]


# --8<-- [start:sampler]
class ResumableRandomSampler(Sampler[int]):
    """A new random permutation of ``range(num_samples)`` every epoch, startable mid-epoch.

    The permutation of epoch ``e`` is ``randperm(n, generator=manual_seed(seed + e))`` (as in
    ``DistributedSampler``), so ``(seed, epoch)`` *is* the data order and ``start`` skips the
    samples already consumed — without reading them. Use with ``DataLoader(sampler=...)``.
    """

    def __init__(self, num_samples: int, seed: int = 0) -> None:
        if num_samples <= 0:
            raise ValueError(f"num_samples must be positive, got {num_samples}")
        self.num_samples, self.seed = num_samples, seed
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Position the next ``iter()`` at sample ``start`` of epoch ``epoch``."""
        if epoch < 0 or not 0 <= start <= self.num_samples:
            raise ValueError(f"need epoch >= 0 and 0 <= start <= {self.num_samples}, got {epoch}, {start}")
        self.epoch, self.start = epoch, start

    def permutation(self) -> Tensor:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return torch.randperm(self.num_samples, generator=g)

    def __iter__(self) -> Iterator[int]:
        return iter(self.permutation()[self.start :].tolist())

    def __len__(self) -> int:
        return self.num_samples - self.start

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "num_samples": self.num_samples}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["num_samples"] != self.num_samples:
            raise ValueError(f"sampler was saved for {state['num_samples']} samples, this one has {self.num_samples}")
        self.seed = state["seed"]


# --8<-- [end:sampler]


@dataclass
class Progress:
    """Where training stands: ``epoch``, global ``step`` and batches done in this epoch."""

    epoch: int = 0
    step: int = 0
    step_in_epoch: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


# --8<-- [start:save]
def save_checkpoint(
    path: PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    scaler: torch.amp.GradScaler | None = None,
    sampler: ResumableRandomSampler | None = None,
    progress: Progress,
) -> Path:
    """Write everything needed to continue training exactly, atomically, to ``path``."""
    path = _existing_dir(path)  # fail before anything is collected or written
    ckpt = {
        "version": CHECKPOINT_VERSION,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),  # momentum buffers, Adam moments, step counts, lr
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "scaler": None if scaler is None else scaler.state_dict(),  # loss scale, growth tracker
        "sampler": None if sampler is None else sampler.state_dict(),
        "progress": {"epoch": progress.epoch, "step": progress.step, "step_in_epoch": progress.step_in_epoch},
        "extra": dict(progress.extra),  # e.g. best validation metric
        "rng": capture_rng_states(),
    }
    return atomic_save(ckpt, path)


# --8<-- [end:save]


def _check_fits(ckpt: dict, path: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None, **parts) -> None:
    """Raise a ValueError that names what does not fit — before any object is modified."""
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{str(path)!r} has checkpoint version {ckpt.get('version')!r}, expected {CHECKPOINT_VERSION}")
    diff = compare_state_dict(model, ckpt["model"])
    if diff:
        raise ValueError(f"{str(path)!r} does not fit {type(model).__name__}: {diff.describe()}")
    if optimizer is not None:
        saved = [len(g["params"]) for g in ckpt["optimizer"]["param_groups"]]
        own = [len(g["params"]) for g in optimizer.param_groups]
        if saved != own:
            raise ValueError(f"{str(path)!r}: optimizer parameter groups of sizes {saved}, this optimizer has {own}")
    for name, obj in parts.items():
        if obj is not None and ckpt.get(name) is None:
            raise ValueError(f"{str(path)!r} has no {name} state, but a {name} was passed to load it into")


# --8<-- [start:load]
def load_checkpoint(
    path: PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    scaler: torch.amp.GradScaler | None = None,
    sampler: ResumableRandomSampler | None = None,
    map_location: str | torch.device = "cpu",
    restore_rng: bool = True,
) -> Progress:
    """Load a :func:`save_checkpoint` file into freshly built objects; return the saved :class:`Progress`.

    ``weights_only=True``: a checkpoint is tensors and plain values, nothing to execute. Keys,
    shapes, optimizer groups and the presence of each requested part are checked first, so a
    checkpoint that does not fit raises ``ValueError`` and leaves every object untouched.
    """
    path = _existing_dir(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {str(path)!r}")
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    _check_fits(ckpt, path, model, optimizer, scheduler=scheduler, scaler=scaler, sampler=sampler)
    model.load_state_dict(ckpt["model"])
    if optimizer is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(ckpt["scheduler"])
    if scaler is not None:
        scaler.load_state_dict(ckpt["scaler"])
    if sampler is not None:
        sampler.load_state_dict(ckpt["sampler"])
    if restore_rng:
        restore_rng_states(ckpt["rng"])
    return Progress(**ckpt["progress"], extra=ckpt["extra"])


# --8<-- [end:load]


@dataclass
class DemoRun:
    """Everything one small training run owns (see :func:`make_demo_run`)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    sampler: ResumableRandomSampler
    loader: DataLoader
    progress: Progress = field(default_factory=Progress)
    batches: Iterator | None = None


def make_demo_run(init_seed: int = 0, *, device: str | torch.device = "cpu", data_seed: int = 1234) -> DemoRun:
    """A regression run with every kind of training state: shuffled data, dropout, SGD with momentum,
    ``StepLR`` and a ``GradScaler`` under float16 autocast (it grows, overflows and skips steps).

    ``init_seed`` picks the initial weights without touching the global RNG, so a "fresh" run with
    another seed proves that resuming overwrites everything.
    """
    device = torch.device(device)
    g = torch.Generator().manual_seed(data_seed)
    x = torch.randn(24, 8, generator=g)
    y = x.sum(dim=1, keepdim=True) + 0.1 * torch.randn(24, 1, generator=g)
    dataset = TensorDataset(x.to(device), y.to(device))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 1)).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=4, gamma=0.7)
    scaler = torch.amp.GradScaler(device.type, init_scale=2.0**10, growth_interval=1)
    sampler = ResumableRandomSampler(len(dataset), seed=data_seed)
    # generator=: iter(DataLoader) draws a worker base seed; without it, from the *global* RNG
    loader = DataLoader(dataset, batch_size=4, sampler=sampler, generator=torch.Generator().manual_seed(0))
    return DemoRun(model, optimizer, scheduler, scaler, sampler, loader)


# --8<-- [start:train]
def train_steps(run: DemoRun, num_steps: int) -> Tensor:
    """Run ``num_steps`` optimizer steps, continuing from ``run.progress``; return the losses ``(num_steps,)``."""
    p, losses = run.progress, []
    device_type = next(run.model.parameters()).device.type
    for _ in range(num_steps):
        if run.batches is None:  # (re)start the epoch at the recorded position
            run.sampler.set_epoch(p.epoch, start=p.step_in_epoch * run.loader.batch_size)
            run.batches = iter(run.loader)
        batch = next(run.batches, None)
        if batch is None:  # epoch finished: the next one has a new permutation
            p.epoch, p.step_in_epoch = p.epoch + 1, 0
            run.sampler.set_epoch(p.epoch)
            run.batches = iter(run.loader)
            batch = next(run.batches)
        x, y = batch
        run.model.train()
        with torch.autocast(device_type, dtype=torch.float16):
            loss = nn.functional.mse_loss(run.model(x), y)
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        run.scaler.step(run.optimizer)  # skipped when the scaled gradients overflowed
        run.scaler.update()
        run.scheduler.step()
        p.step, p.step_in_epoch = p.step + 1, p.step_in_epoch + 1
        losses.append(loss.detach().float())
    return torch.stack(losses)


def save_run(path: PathLike, run: DemoRun) -> Path:
    return save_checkpoint(
        path, model=run.model, optimizer=run.optimizer, scheduler=run.scheduler,
        scaler=run.scaler, sampler=run.sampler, progress=run.progress,
    )  # fmt: skip


def load_run(path: PathLike, run: DemoRun) -> DemoRun:
    run.progress = load_checkpoint(
        path, model=run.model, optimizer=run.optimizer, scheduler=run.scheduler,
        scaler=run.scaler, sampler=run.sampler, map_location=next(run.model.parameters()).device,
    )  # fmt: skip
    run.batches = None  # train_steps repositions the sampler from run.progress
    return run


# --8<-- [end:train]


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        straight = train_steps(make_demo_run(), 14)
        torch.manual_seed(0)
        first = make_demo_run()
        head = train_steps(first, 7)
        save_run(Path(tmp, "ckpt.pt"), first)
        second = load_run(Path(tmp, "ckpt.pt"), make_demo_run(init_seed=99))
        where = (second.progress.epoch, second.progress.step_in_epoch)
        tail = train_steps(second, 7)
        print("resumed at (epoch, step_in_epoch) =", where, "with 6 batches per epoch")
        print("bit-identical losses:", torch.equal(torch.cat([head, tail]), straight))
