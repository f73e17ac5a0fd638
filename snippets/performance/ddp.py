"""Distributed data parallel (DDP) on the CPU: a ``torchrun`` script and its single-process reference.

Every process (rank) holds a full replica of the model, takes its own shard of each global batch,
and ``torch.nn.parallel.DistributedDataParallel`` all-reduces (averages) the gradients during
``backward`` — bucket by bucket — so every replica applies the same update. With a mean loss over
``world_size x B`` samples split into equal shards, the result equals one process over the whole batch.

Launch two CPU processes (gloo) from the repository root; rank 0 writes what it measured::

    torchrun --standalone --nproc_per_node=2 -m snippets.performance.ddp --out /tmp/ddp.pt

Run without ``torchrun`` it forms a one-process group (a small demo of the same code path).
Reference: PyTorch docs, "DistributedDataParallel" and "torchrun (Elastic Launch)"; Li et al. 2020,
"PyTorch Distributed: Experiences on Accelerating Data Parallel Training" (VLDB).
"""

from __future__ import annotations

import argparse
import os
from contextlib import nullcontext

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from torch.nn.parallel import DistributedDataParallel as DDP

__all__ = [
    "ddp_train",
    "main",
    "make_batches",
    "make_model",
    "recording_allreduce_hook",
    "shard",
    "train",
]

IN_FEATURES, HIDDEN = 4, 16


def make_model(seed: int = 0, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu") -> nn.Module:
    """A small MLP ``(N, 4) -> (N, 1)`` whose initial weights depend only on ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(IN_FEATURES, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, 1))
    return model.to(device=device, dtype=dtype)


def make_batches(steps: int, global_batch: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> list[tuple]:
    """``steps`` regression batches ``x: (global_batch, 4)``, ``y: (global_batch, 1)``, identical on every rank."""
    if steps < 1 or global_batch < 1:
        raise ValueError(f"steps={steps} and global_batch={global_batch} must both be positive")
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(IN_FEATURES, 1, generator=g, dtype=dtype) / IN_FEATURES**0.5
    batches = []
    for _ in range(steps):
        x = torch.randn(global_batch, IN_FEATURES, generator=g, dtype=dtype)
        batches.append((x, torch.tanh(x @ w) + 0.05 * torch.randn(global_batch, 1, generator=g, dtype=dtype)))
    return batches


# --8<-- [start:shard]
def shard(batch: Tensor, rank: int, world_size: int) -> Tensor:
    """Rows ``rank, rank + world_size, ...`` of ``batch: (N, ...)`` — what ``DistributedSampler``
    (``shuffle=False``) hands to ``rank``. ``N`` must be divisible by ``world_size`` (equal shards)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank={rank} must be in [0, world_size={world_size})")
    if batch.shape[0] % world_size:
        raise ValueError(f"batch of {batch.shape[0]} rows is not divisible by world_size={world_size}")
    return batch[rank::world_size]


# --8<-- [end:shard]


# --8<-- [start:train]
def train(
    model: nn.Module, batches: list[tuple[Tensor, Tensor]], lr: float = 0.05, accumulate: int = 1, after_backward=None
) -> list[float]:
    """SGD (momentum 0.9) on mean-squared error, one optimizer step per batch; the same code for a
    plain module and a DDP-wrapped one. ``accumulate`` splits each batch into that many micro-batches;
    under DDP all but the last ``backward`` run inside ``no_sync()`` (no all-reduce)."""
    if accumulate < 1:
        raise ValueError(f"accumulate={accumulate} must be >= 1")
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    losses = []
    for x, y in batches:
        if x.shape[0] % accumulate:
            raise ValueError(f"batch of {x.shape[0]} rows is not divisible by accumulate={accumulate}")
        opt.zero_grad()
        for i, (xm, ym) in enumerate(zip(x.chunk(accumulate), y.chunk(accumulate))):
            last = i == accumulate - 1
            skip_sync = isinstance(model, DDP) and not last
            with model.no_sync() if skip_sync else nullcontext():
                loss = F.mse_loss(model(xm), ym) / accumulate  # mean over the whole local batch
                loss.backward()  # DDP: the all-reduce of each bucket starts here
            if after_backward is not None:
                after_backward()
        opt.step()  # every rank holds the same averaged gradient -> the same update
        losses.append(loss.item() * accumulate)
    return losses


# --8<-- [end:train]


# --8<-- [start:recorder]
def recording_allreduce_hook(state, bucket):  # no annotations: DDP checks them (strings here)
    """A DDP communication hook: append ``(bucket index, number of elements)`` to the list ``state``,
    then average the bucket exactly like DDP's built-in all-reduce. ``bucket: dist.GradBucket``;
    returns a ``torch.futures.Future`` of the averaged flat gradient buffer."""
    state.append((bucket.index(), bucket.buffer().numel()))
    return allreduce_hook(None, bucket)  # divide by world_size, all-reduce (sum) asynchronously


# --8<-- [end:recorder]


# --8<-- [start:ddp_train]
def ddp_train(
    steps: int = 8, batch_per_rank: int = 8, bucket_cap_mb: float = 0.0002, device: torch.device | None = None
) -> dict:
    """Inside an initialised process group: train three DDP replicas of ``make_model`` on this rank's
    shards and return what rank 0 reports (final parameters, buckets, hook calls, replica agreement).

    1. plain DDP (default buckets, no hook);
    2. the same with ``recording_allreduce_hook`` (default ``bucket_cap_mb=25``: one bucket here);
    3. tiny buckets (``bucket_cap_mb``) and gradient accumulation over 2 micro-batches with ``no_sync``.
    """
    rank, world = dist.get_rank(), dist.get_world_size()
    device = device or torch.device("cpu")
    ids = [device.index] if device.type == "cuda" else None
    batches = make_batches(steps, world * batch_per_rank)  # the same global batches on every rank
    local = [(shard(x, rank, world).to(device), shard(y, rank, world).to(device)) for x, y in batches]
    out: dict = {"world_size": world, "steps": steps, "batch_per_rank": batch_per_rank}

    # A different initialisation on every rank, on purpose: DDP's constructor broadcasts rank 0's.
    plain = DDP(make_model(seed=rank, device=device), device_ids=ids)
    out["initial"] = _snapshot(plain.module)
    out["losses"] = train(plain, local)
    out["params"] = _snapshot(plain.module)

    default = DDP(make_model(seed=rank, device=device), device_ids=ids)
    calls_default: list[tuple[int, int]] = []
    default.register_comm_hook(calls_default, recording_allreduce_hook)
    train(default, local)
    out["params_hooked"] = _snapshot(default.module)
    out["buckets_default"] = calls_default

    tiny = DDP(make_model(seed=rank, device=device), device_ids=ids, bucket_cap_mb=bucket_cap_mb)
    calls_tiny: list[tuple[int, int]] = []
    tiny.register_comm_hook(calls_tiny, recording_allreduce_hook)
    counts: list[int] = []
    train(tiny, local, accumulate=2, after_backward=lambda: counts.append(len(calls_tiny)))
    out["params_accumulated"] = _snapshot(tiny.module)
    out["buckets_tiny"] = calls_tiny
    out["hook_calls_after_each_backward"] = counts

    # Are the replicas identical? Gather every rank's flattened parameters.
    flat = torch.cat([p.detach().flatten() for p in plain.parameters()])
    gathered = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(gathered, flat)
    out["max_replica_difference"] = max((g - gathered[0]).abs().max().item() for g in gathered)
    return out


# --8<-- [end:ddp_train]


def _snapshot(module: nn.Module) -> dict[str, Tensor]:
    """A CPU copy of the state dict (``state_dict()`` itself returns the live tensors)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def main(argv: list[str] | None = None) -> dict:
    """Command line of the ``torchrun`` script; returns rank 0's report (also saved with ``--out``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="file where rank 0 saves its report (torch.save)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-per-rank", type=int, default=8)
    parser.add_argument("--bucket-cap-mb", type=float, default=0.0002)
    parser.add_argument("--backend", choices=["gloo", "nccl"], default="gloo")
    args = parser.parse_args(argv)
    # --8<-- [start:setup]
    if "LOCAL_RANK" in os.environ:  # started by torchrun: RANK, WORLD_SIZE, MASTER_ADDR/PORT are set
        dist.init_process_group(args.backend)  # env:// rendezvous
        local_rank = int(os.environ["LOCAL_RANK"])
    else:  # plain `python`: a one-process group, same code path
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        local_rank = 0
    device = torch.device("cpu")
    if args.backend == "nccl":  # one GPU per process
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    try:
        report = ddp_train(args.steps, args.batch_per_rank, args.bucket_cap_mb, device)
    finally:
        dist.destroy_process_group()
    # --8<-- [end:setup]
    if args.out and int(os.environ.get("RANK", 0)) == 0:
        torch.save(report, args.out)
    return report


if __name__ == "__main__":
    import sys

    # Outside torchrun the demo uses its defaults, whatever the command line of the process holds.
    report = main(sys.argv[1:] if "LOCAL_RANK" in os.environ else [])
    if int(os.environ.get("RANK", 0)) == 0:
        print(f"world_size={report['world_size']}, loss {report['losses'][0]:.4f} -> {report['losses'][-1]:.4f}")
        print("buckets per step (index, numel), default cap:", report["buckets_default"][:1])
        print("tiny buckets, first step:", report["buckets_tiny"][: len(report["buckets_tiny"]) // report["steps"]])
        print("hook calls after each backward (no_sync, then sync):", report["hook_calls_after_each_backward"][:2])
        print("max difference between replicas:", report["max_replica_difference"])
