"""Figures for chapter 4 (saving, checkpoints), drawn from snippets/pytorch/checkpoint.py."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import torch
from torch import nn

from kbsite.figures import figure
from snippets.pytorch.checkpoint import capture_rng_states, load_checkpoint, make_demo_run, save_run, train_steps


def _nbytes(obj) -> int:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return len(buf.getvalue())


def _parts(model, optimizer, scheduler=None, scaler=None) -> dict[str, int]:
    rng = capture_rng_states()
    parts = {"model": _nbytes(model.state_dict()), "optimizer": _nbytes(optimizer.state_dict())}
    if scheduler is not None:
        parts["scheduler"] = _nbytes(scheduler.state_dict())
    if scaler is not None:
        parts["GradScaler"] = _nbytes(scaler.state_dict())
    parts["progress + sampler"] = _nbytes({"epoch": 1, "step": 7, "step_in_epoch": 1, "seed": 0, "n": 24})
    parts["torch RNG"] = _nbytes(rng["torch"])
    parts["Python RNG"] = _nbytes(rng["python"])
    return parts


@figure("checkpoint-parts-bytes")
def checkpoint_parts_bytes():
    """Bytes per part of a checkpoint: the tiny demo run (SGD + momentum) and a 1M-parameter Adam run."""
    import matplotlib.pyplot as plt

    torch.manual_seed(0)
    run = make_demo_run()
    train_steps(run, 3)
    small = _parts(run.model, run.optimizer, run.scheduler, run.scaler)

    big = nn.Linear(1000, 1000)
    adam = torch.optim.Adam(big.parameters())
    big(torch.randn(2, 1000)).sum().backward()
    adam.step()
    large = _parts(big, adam)

    fig, axes = plt.subplots(1, 2, figsize=(12, 3.6), constrained_layout=True)
    for ax, parts, title, log in (
        (axes[0], small, "demo run: 321 parameters, SGD with momentum", False),
        (axes[1], large, "Linear(1000, 1000): 1.0 M parameters, Adam", True),
    ):
        names = list(parts)[::-1]
        values = [parts[n] for n in names]
        bars = ax.barh(names, values, color="tab:blue")
        if log:
            ax.set_xscale("log")
        ax.set_xlabel("bytes (torch.save of that part alone" + (", log scale)" if log else ")"))
        ax.set_title(title, fontsize=10)
        for bar, v in zip(bars, values):
            label = f"{v / 1e6:.1f} MB" if v > 1e6 else f"{v / 1e3:.1f} kB"
            ax.text(
                v * 1.1 if log else v + max(values) * 0.02,
                bar.get_y() + bar.get_height() / 2,
                label,
                va="center",
                fontsize=8,
            )
        ax.set_xlim(right=max(values) * (8 if log else 1.25))
    fig.suptitle("every torch.save file carries ~1.2 kB of zip/pickle overhead", fontsize=9)
    return fig


@figure("checkpoint-resume-losses")
def checkpoint_resume_losses():
    """Losses of a straight run vs a resumed one (identical) and resumes that forget a part."""
    import matplotlib.pyplot as plt

    n_total, n_save = 24, 9
    torch.manual_seed(0)
    straight = train_steps(make_demo_run(), n_total)
    curves = {}
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        first = make_demo_run()
        head = train_steps(first, n_save)
        save_run(Path(tmp, "ckpt.pt"), first)
        for label, drop in (
            ("resumed from the checkpoint", None),
            ("resumed without RNG state", "rng"),
            ("resumed without optimizer state", "optimizer"),
        ):
            torch.manual_seed(1)
            run = make_demo_run(init_seed=5)
            run.progress = load_checkpoint(
                Path(tmp, "ckpt.pt"),
                model=run.model,
                optimizer=None if drop == "optimizer" else run.optimizer,
                scheduler=run.scheduler,
                scaler=run.scaler,
                sampler=run.sampler,
                restore_rng=drop != "rng",
            )
            curves[label] = train_steps(run, n_total - n_save)

    steps = torch.arange(1, n_total + 1)
    fig, ax = plt.subplots(figsize=(9, 3.6), constrained_layout=True)
    ax.plot(steps, straight, color="black", lw=2.5, label=f"straight run, {n_total} steps")
    ax.plot(steps[:n_save], head, "o", color="tab:blue", ms=4, label=f"first {n_save} steps, then save")
    styles = {"resumed from the checkpoint": ("o", "tab:green"), "resumed without RNG state": ("--", "tab:orange"),
              "resumed without optimizer state": (":", "tab:red")}  # fmt: skip
    for label, losses in curves.items():
        marker, color = styles[label]
        same = torch.equal(torch.cat([head, losses]), straight)
        ax.plot(
            steps[n_save:], losses, marker, color=color, ms=4, label=f"{label} ({'identical' if same else 'differs'})"
        )
    ax.axvline(n_save + 0.5, color="gray", lw=1)
    ax.text(n_save + 0.7, ax.get_ylim()[1] * 0.95, "save → fresh objects → load", fontsize=8, va="top", color="gray")
    ax.set_xlabel("step (6 batches per epoch; the checkpoint is mid-epoch)")
    ax.set_ylabel("training loss (MSE)")
    ax.legend(fontsize=8, loc="upper right")
    return fig
