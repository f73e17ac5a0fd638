"""ScratchDataLoader vs torch.utils.data.DataLoader: the same batches for the same seed, with workers too."""

from __future__ import annotations

import collections
import gc

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset, default_collate

from snippets.pytorch.data_loading import (
    BatchSampler,
    CountingDataset,
    RandomSampler,
    RecordFileDataset,
    ScratchDataLoader,
    default_collate_scratch,
    write_records,
)

Point = collections.namedtuple("Point", ["x", "label"])


class Nested:
    """A map-style dataset whose samples are nested dicts/tuples/strings/numbers."""

    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(n)
        self.x = torch.randn(n, 3, generator=g, dtype=torch.float64)
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return {
            "x": self.x[i],
            "y": i % 3,
            "name": f"s{i}",
            "pair": (float(i) / 2, self.x[i, :2]),
            "pt": Point(i, True),
        }


class Noisy(Nested):
    """Random augmentation inside __getitem__: the result depends on the process's RNG state."""

    def __getitem__(self, i: int):
        return self.x[i] + torch.rand(3, dtype=torch.float64)


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize(
    "n, batch_size, shuffle, drop_last, seed",
    [
        (10, 4, True, False, 0),
        (10, 4, True, True, 1),
        (12, 3, False, False, 2),
        (7, 7, True, False, 3),
        (5, 8, True, False, 4),
    ],
)
def test_matches_dataloader(n: int, batch_size: int, shuffle: bool, drop_last: bool, seed: int) -> None:
    data = Nested(n)
    kw = dict(batch_size=batch_size, shuffle=shuffle, drop_last=drop_last)
    ours = ScratchDataLoader(data, generator=torch.Generator().manual_seed(seed), **kw)
    ref = DataLoader(data, generator=torch.Generator().manual_seed(seed), **kw)
    assert len(ours) == len(ref)
    for _ in range(3):  # three epochs: the generator state carries over identically
        a, b = list(ours), list(ref)
        assert len(a) == len(b) == len(ref)
        assert all(_equal(x, y) for x, y in zip(a, b))


def test_matches_dataloader_with_the_global_rng() -> None:
    data = Nested(9)
    torch.manual_seed(5)
    a = [list(ScratchDataLoader(data, batch_size=2, shuffle=True)) for _ in range(2)]
    torch.manual_seed(5)
    b = [list(DataLoader(data, batch_size=2, shuffle=True)) for _ in range(2)]
    assert _equal(a, b)


def test_explicit_sampler_matches() -> None:
    data = Nested(8)
    order = [5, 1, 7, 2, 2, 0]  # any iterable of indices, repeats allowed
    assert _equal(
        list(ScratchDataLoader(data, batch_size=4, sampler=order)), list(DataLoader(data, batch_size=4, sampler=order))
    )


def test_random_sampler_with_num_samples_matches() -> None:
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    ours = RandomSampler(4, num_samples=10, generator=g1)
    ref = torch.utils.data.RandomSampler(range(4), num_samples=10, generator=g2)
    assert list(ours) == list(ref) and len(ours) == len(ref) == 10


def test_collate_matches_default_collate() -> None:
    data = Nested(4)
    batch = [data[i] for i in range(4)]
    assert _equal(default_collate_scratch(batch), default_collate(batch))
    ints, floats, bools = [1, 2], [0.5, 1.5], [True, False]
    for b in (ints, floats, bools, ["a", "b"], [[1, 2], [3, 4]], [(torch.ones(2), 1), (torch.zeros(2), 2)]):
        assert _equal(default_collate_scratch(b), default_collate(b))
    assert default_collate_scratch(floats).dtype == torch.float64 and default_collate_scratch(ints).dtype == torch.int64


def test_getitem_once_per_index_per_epoch_and_lazily() -> None:
    data = CountingDataset(Nested(10))
    loader = ScratchDataLoader(data, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(0))
    it = iter(loader)
    next(it)
    assert len(data.calls) == 4  # only the first batch has been read: nothing is loaded up front
    list(it)
    assert sorted(data.calls) == list(range(10))
    list(loader)
    assert sorted(data.calls) == sorted(list(range(10)) * 2)


def test_file_backed_dataset_reads_only_what_a_batch_needs(tmp_path) -> None:
    x = torch.randn(1000, 16)
    path = write_records(tmp_path / "records.bin", x)
    data = RecordFileDataset(path, dim=16)
    assert len(data) == 1000 and data.bytes_read == 0
    batch = next(iter(ScratchDataLoader(data, batch_size=8)))
    assert torch.equal(batch, x[:8])
    assert data.bytes_read == 8 * 16 * 4  # 512 bytes of a 64,000-byte file
    assert torch.equal(data[-1], x[-1])
    with pytest.raises(IndexError):
        data[1000]
    with pytest.raises(ValueError, match="does not exist"):
        write_records(tmp_path / "missing" / "r.bin", x)
    with pytest.raises(ValueError, match="2-D"):
        write_records(tmp_path / "r.bin", x[0])
    (tmp_path / "odd.bin").write_bytes(b"123")
    with pytest.raises(ValueError, match="whole number"):
        RecordFileDataset(tmp_path / "odd.bin", dim=16)


def test_workers_match_dataloader_workers_even_with_random_transforms() -> None:
    """Batch i goes to worker i % W, seeded base_seed + worker_id: the random augmentations agree too."""
    data = Noisy(10)
    kw = dict(batch_size=2, shuffle=True, num_workers=2)
    a = list(ScratchDataLoader(data, generator=torch.Generator().manual_seed(0), **kw))
    b = list(DataLoader(data, generator=torch.Generator().manual_seed(0), **kw))
    assert _equal(a, b)
    plain = Nested(10)  # and without randomness, workers change nothing
    no_workers = list(ScratchDataLoader(plain, batch_size=3, generator=torch.Generator().manual_seed(1), shuffle=True))
    workers = list(
        ScratchDataLoader(plain, batch_size=3, generator=torch.Generator().manual_seed(1), shuffle=True, num_workers=2)
    )
    assert _equal(no_workers, workers)


class Broken(Nested):
    def __getitem__(self, i: int):
        if i == 3:
            raise KeyError("sample 3 is corrupt")
        return self.x[i]


def test_worker_errors_are_reraised_and_workers_stop() -> None:
    with pytest.raises(RuntimeError, match="sample 3 is corrupt"):
        list(ScratchDataLoader(Broken(6), batch_size=2, num_workers=2))
    it = iter(ScratchDataLoader(Nested(20), batch_size=2, num_workers=2))
    next(it)
    workers = list(it._workers)
    assert all(w.is_alive() for w in workers)
    del it  # an epoch abandoned after one batch
    gc.collect()
    for w in workers:
        w.join(timeout=5)
    assert not any(w.is_alive() for w in workers)


@pytest.mark.parametrize("bad", [0, -1, 2.0, True, "4"])
def test_rejects_bad_batch_size(bad) -> None:
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        ScratchDataLoader(Nested(4), batch_size=bad)


def test_rejected_inputs() -> None:
    data = Nested(4)
    with pytest.raises(ValueError, match="mutually exclusive"):
        ScratchDataLoader(data, shuffle=True, sampler=[0, 1])
    with pytest.raises(ValueError, match="num_workers"):
        ScratchDataLoader(data, num_workers=-1)
    with pytest.raises(ValueError, match="num_samples should be a positive integer"):
        ScratchDataLoader(TensorDataset(torch.zeros(0)), shuffle=True)
    with pytest.raises(ValueError, match="different shapes"):
        default_collate_scratch([torch.zeros(2), torch.zeros(3)])
    with pytest.raises(ValueError, match="empty batch"):
        default_collate_scratch([])
    with pytest.raises(ValueError, match="equal size"):
        default_collate_scratch([[1, 2], [3]])
    with pytest.raises(TypeError, match="found <class 'object'>"):
        default_collate_scratch([object()])
    assert len(BatchSampler(range(10), 4, drop_last=True)) == 2 and len(BatchSampler(range(10), 4, False)) == 3


def test_empty_dataset_without_shuffle_yields_nothing() -> None:
    data = TensorDataset(torch.zeros(0))
    assert list(ScratchDataLoader(data, batch_size=2)) == list(DataLoader(data, batch_size=2)) == []
