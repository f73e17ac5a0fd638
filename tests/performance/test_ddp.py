"""DDP over 2 ranks x B samples (torchrun, gloo, CPU) ends where one process over 2B samples ends."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DistributedSampler

from snippets.performance.ddp import main, make_batches, make_model, shard, train
from tests.conftest import assert_close

ROOT = Path(__file__).resolve().parents[2]
STEPS, B = 8, 8  # the script's defaults: 8 steps, 8 samples per rank


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One torchrun launch of the snippet (2 CPU processes, gloo); rank 0's report."""
    out = tmp_path_factory.mktemp("ddp") / "rank0.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    if sys.platform.startswith("linux") and Path("/sys/class/net/lo").exists():
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # keep gloo on the loopback interface
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["-m", "snippets.performance.ddp", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return torch.load(out)


def _reference(batches) -> dict[str, torch.Tensor]:
    model = make_model(seed=0)
    train(model, batches)
    return model.state_dict()


def test_two_ranks_times_b_equal_one_process_times_2b(report: dict) -> None:
    assert report["world_size"] == 2 and report["steps"] == STEPS and report["batch_per_rank"] == B
    ref = _reference(make_batches(STEPS, 2 * B))  # one process, the whole 2B batch every step
    for name, p in report["params"].items():
        assert p.dtype == torch.float64
        assert_close(p, ref[name])
        # equal up to float64 rounding only: all-reduce averages per-rank means in another order
        assert (p - ref[name]).abs().max().item() < 1e-14
    moved = max((report["params"][k] - report["initial"][k]).abs().max().item() for k in ref)
    assert moved > 1e-2  # training really changed the parameters


def test_not_the_same_as_one_process_over_one_shard(report: dict) -> None:
    """The comparison can fail: training on rank 0's B samples alone ends elsewhere."""
    alone = _reference([(shard(x, 0, 2), shard(y, 0, 2)) for x, y in make_batches(STEPS, 2 * B)])
    gap = max((report["params"][k] - alone[k]).abs().max().item() for k in alone)
    assert gap > 1e-3


def test_constructor_broadcasts_rank0_parameters_and_replicas_stay_identical(report: dict) -> None:
    rank0, rank1 = make_model(seed=0).state_dict(), make_model(seed=1).state_dict()
    for name, p in report["initial"].items():
        assert torch.equal(p, rank0[name]) and not torch.equal(p, rank1[name])
    assert report["max_replica_difference"] == 0.0  # bit-for-bit identical replicas after 8 steps


def test_recording_hook_changes_nothing_and_default_cap_gives_one_bucket(report: dict) -> None:
    for name, p in report["params"].items():
        assert torch.equal(report["params_hooked"][name], p)
    n_params = sum(p.numel() for p in make_model().parameters())
    assert n_params == 97
    assert report["buckets_default"] == [(0, 97)] * STEPS  # 776 bytes << 25 MiB: one all-reduce per step


def test_small_bucket_cap_splits_gradients_after_the_first_step(report: dict) -> None:
    calls = report["buckets_tiny"]
    assert calls[0] == (0, 97)  # step 1: all parameters in one bucket (no gradient order known yet)
    # rebuilt in the order gradients become ready in backward: the last layer first
    # bucket 0 = 2.bias (1) + 2.weight (16) + 0.bias (16) = 33 elements; bucket 1 = 0.weight (64)
    assert calls[1:] == [(0, 33), (1, 64)] * (STEPS - 1)


def test_no_sync_skips_the_all_reduce_and_accumulation_matches(report: dict) -> None:
    counts = report["hook_calls_after_each_backward"]  # 2 micro-batches per step
    assert counts[:4] == [0, 1, 1, 3]  # inside no_sync(): no bucket all-reduced; the last backward syncs
    assert counts[0::2] == [0] + counts[1:-1:2]  # every no_sync backward adds nothing
    ref = _reference(make_batches(STEPS, 2 * B))
    for name, p in report["params_accumulated"].items():
        assert_close(p, ref[name])


def test_shard_is_what_distributed_sampler_hands_out() -> None:
    x = torch.arange(12.0)[:, None]
    for rank in range(3):
        indices = list(DistributedSampler(range(12), num_replicas=3, rank=rank, shuffle=False))
        assert torch.equal(shard(x, rank, 3), x[indices])


def test_one_process_group_without_torchrun() -> None:
    """Plain ``python -m snippets.performance.ddp``: a 1-process group, DDP == the plain module."""
    assert "LOCAL_RANK" not in os.environ
    report = main(["--steps", "3", "--batch-per-rank", "4"])
    assert report["world_size"] == 1
    ref = _reference(make_batches(3, 4))
    for name, p in report["params"].items():
        assert_close(p, ref[name])
    assert not torch.distributed.is_initialized()  # the group was destroyed


@pytest.mark.parametrize(
    ("rank", "world", "rows", "match"),
    [
        (2, 2, 4, r"rank=2 must be in \[0, world_size=2\)"),
        (-1, 2, 4, r"rank=-1 must be in"),
        (0, 0, 4, r"world_size=0"),
        (0, 3, 4, "batch of 4 rows is not divisible by world_size=3"),
    ],
)
def test_shard_rejects_bad_input(rank: int, world: int, rows: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        shard(torch.zeros(rows, 2), rank, world)


def test_train_and_batches_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="accumulate=0 must be >= 1"):
        train(make_model(), make_batches(1, 4), accumulate=0)
    with pytest.raises(ValueError, match="batch of 4 rows is not divisible by accumulate=3"):
        train(make_model(), make_batches(1, 4), accumulate=3)
    with pytest.raises(ValueError, match="steps=0 and global_batch=4 must both be positive"):
        make_batches(0, 4)


def test_logged_loss_is_the_rank_local_loss_not_the_global_one(report: dict) -> None:
    """DDP synchronises gradients, never the loss: rank 0 logs the loss of its own shard."""
    x, y = make_batches(STEPS, 2 * B)[0]
    model = make_model(seed=0)
    with torch.no_grad():
        local = torch.nn.functional.mse_loss(model(shard(x, 0, 2)), shard(y, 0, 2)).item()
        full = torch.nn.functional.mse_loss(model(x), y).item()
    assert abs(report["losses"][0] - local) < 1e-12
    assert abs(report["losses"][0] - full) > 0.1
