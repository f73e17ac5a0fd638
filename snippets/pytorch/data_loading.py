"""Dataset, Sampler and DataLoader from scratch: batching, shuffling with a generator, drop_last,
collate_fn and worker processes — yielding exactly the batches of ``torch.utils.data.DataLoader``.

Reference: PyTorch docs "torch.utils.data"; d2l.ai §3.3 (reading a dataset in minibatches).
"""

from __future__ import annotations

import os
import queue
import random
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "SequentialSampler",
    "RandomSampler",
    "BatchSampler",
    "default_collate_scratch",
    "ScratchDataLoader",
    "CountingDataset",
    "RecordFileDataset",
    "write_records",
]


# --8<-- [start:samplers]
class SequentialSampler:
    """Indices ``0, 1, ..., n - 1``."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.n))

    def __len__(self) -> int:
        return self.n


class RandomSampler:
    """``num_samples`` indices (default ``n``: one permutation of ``range(n)``) per epoch, from ``generator``.

    Consumes random numbers exactly like ``torch.utils.data.RandomSampler`` (one ``randperm`` per
    full pass plus one for the remainder), so the same generator gives the same order.
    """

    def __init__(self, n: int, num_samples: int | None = None, generator: torch.Generator | None = None) -> None:
        self.n, self.generator = n, generator
        self.num_samples = n if num_samples is None else num_samples
        if not isinstance(self.num_samples, int) or self.num_samples <= 0:
            raise ValueError(f"num_samples should be a positive integer, got num_samples={self.num_samples!r}")

    def __iter__(self) -> Iterator[int]:
        generator = self.generator
        if generator is None:  # like torch: a fresh generator seeded from the global RNG
            seed = int(torch.empty((), dtype=torch.int64).random_().item())
            generator = torch.Generator().manual_seed(seed)
        for _ in range(self.num_samples // self.n):
            yield from torch.randperm(self.n, generator=generator).tolist()
        yield from torch.randperm(self.n, generator=generator).tolist()[: self.num_samples % self.n]

    def __len__(self) -> int:
        return self.num_samples


class BatchSampler:
    """Groups the indices of ``sampler`` into lists of ``batch_size`` (the last one shorter unless ``drop_last``)."""

    def __init__(self, sampler: Sequence[int] | SequentialSampler | RandomSampler, batch_size: int, drop_last: bool):
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive int, got batch_size={batch_size!r}")
        self.sampler, self.batch_size, self.drop_last = sampler, batch_size, drop_last

    def __iter__(self) -> Iterator[list[int]]:
        batch: list[int] = []
        for idx in self.sampler:
            batch.append(idx)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch and not self.drop_last:
            yield batch

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)  # floor / ceil
# --8<-- [end:samplers]


# --8<-- [start:collate]
def default_collate_scratch(batch: Sequence[Any]) -> Any:
    """Stack a list of samples into a batch, recursively, like ``torch.utils.data.default_collate``.

    Tensors are stacked along a new dim 0; ints become an int64 tensor, floats a float64 tensor;
    strings stay a list; dicts collate per key; tuples/lists collate per position (``zip(*batch)``,
    returned as a list, namedtuples keep their type).
    """
    if len(batch) == 0:
        raise ValueError("cannot collate an empty batch")
    elem = batch[0]
    if isinstance(elem, Tensor):
        shapes = {tuple(t.shape) for t in batch}
        if len(shapes) > 1:
            raise ValueError(f"cannot stack tensors of different shapes {sorted(shapes)}: pass a collate_fn that pads")
        return torch.stack(list(batch))
    if isinstance(elem, bool | int):
        return torch.tensor(batch)
    if isinstance(elem, float):
        return torch.tensor(batch, dtype=torch.float64)
    if isinstance(elem, str | bytes):
        return list(batch)
    if isinstance(elem, Mapping):
        return {key: default_collate_scratch([d[key] for d in batch]) for key in elem}
    if isinstance(elem, tuple) and hasattr(elem, "_fields"):  # namedtuple
        return type(elem)(*(default_collate_scratch(list(s)) for s in zip(*batch)))
    if isinstance(elem, Sequence):
        if len({len(s) for s in batch}) > 1:
            raise ValueError("each element in the batch should be of equal size")
        return [default_collate_scratch(list(samples)) for samples in zip(*batch)]  # transpose
    raise TypeError(f"batch must contain tensors, numbers, str, dicts or lists; found {type(elem)}")
# --8<-- [end:collate]


# --8<-- [start:loader]
class ScratchDataLoader:
    """Iterable over batches of ``dataset``: sampler → batch sampler → ``dataset[i]`` → ``collate_fn``.

    With ``num_workers > 0`` worker *processes* fetch and collate batches (batch ``i`` goes to worker
    ``i % num_workers``, each seeded with ``base_seed + worker_id`` like PyTorch's) and the main process
    yields them in order.
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int = 1,
        shuffle: bool = False,
        sampler: Any = None,
        drop_last: bool = False,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        generator: torch.Generator | None = None,
        num_workers: int = 0,
    ) -> None:
        if sampler is not None and shuffle:
            raise ValueError("sampler option is mutually exclusive with shuffle")
        if not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers must be an int >= 0, got num_workers={num_workers!r}")
        self.dataset, self.generator, self.num_workers = dataset, generator, num_workers
        if sampler is None:
            sampler = RandomSampler(len(dataset), generator=generator) if shuffle else SequentialSampler(len(dataset))
        self.batch_sampler = BatchSampler(sampler, batch_size, drop_last)
        self.collate_fn = collate_fn or default_collate_scratch

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self) -> Iterator[Any]:  # a NEW iterator, i.e. a new epoch, on every call
        batches = iter(self.batch_sampler)  # lazy: draws nothing yet
        base_seed = int(torch.empty((), dtype=torch.int64).random_(generator=self.generator).item())
        if self.num_workers == 0:
            return (self.collate_fn([self.dataset[i] for i in indices]) for indices in batches)
        return _WorkerIterator(self, batches, base_seed)
# --8<-- [end:loader]


# --8<-- [start:workers]
def _worker_loop(dataset: Any, collate_fn: Callable, tasks: Any, results: Any, seed: int) -> None:
    """One worker process: seed like PyTorch, then fetch + collate every batch of indices it is sent."""
    random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    while (task := tasks.get()) is not None:
        i, indices = task
        try:
            results.put((i, collate_fn([dataset[j] for j in indices]), None))
        except Exception:  # report, don't die silently: the main process re-raises
            results.put((i, None, traceback.format_exc()))


class _WorkerIterator:
    def __init__(self, loader: ScratchDataLoader, batches: Iterator[list[int]], base_seed: int) -> None:
        ctx = torch.multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
        n = loader.num_workers
        self._batches, self._results = batches, ctx.Queue()
        self._tasks = [ctx.Queue() for _ in range(n)]
        self._workers = [
            ctx.Process(
                target=_worker_loop,
                args=(loader.dataset, loader.collate_fn, self._tasks[w], self._results, base_seed + w),
                daemon=True,
            )
            for w in range(n)
        ]
        for w in self._workers:
            w.start()
        self._sent = self._next_out = 0
        self._ready: dict[int, Any] = {}
        for _ in range(2 * n):  # keep 2 batches per worker in flight (prefetch_factor=2)
            self._send()

    def _send(self) -> None:
        indices = next(self._batches, None)
        if indices is not None:
            self._tasks[self._sent % len(self._tasks)].put((self._sent, indices))  # round-robin
            self._sent += 1

    def __iter__(self) -> _WorkerIterator:
        return self

    def __next__(self) -> Any:
        if self._next_out == self._sent:
            self._shutdown()
            raise StopIteration
        while self._next_out not in self._ready:  # results arrive out of order: buffer them
            try:
                i, batch, error = self._results.get(timeout=5.0)
            except queue.Empty:
                if dead := [w.pid for w in self._workers if not w.is_alive()]:
                    self._shutdown()
                    raise RuntimeError(f"DataLoader worker (pid {dead}) exited unexpectedly") from None
                continue
            if error is not None:
                self._shutdown()
                raise RuntimeError(f"a worker failed on batch {i}:\n{error}")
            self._ready[i] = batch
        self._send()
        self._next_out += 1
        return self._ready.pop(self._next_out - 1)

    def _shutdown(self) -> None:
        for q in self._tasks:
            q.put(None)
        for w in self._workers:
            w.join(timeout=5.0)
            if w.is_alive():
                w.terminate()
        self._workers = []
        self._tasks = []

    def __del__(self) -> None:  # an epoch abandoned early (break) still stops its workers
        if getattr(self, "_workers", None):
            self._shutdown()
# --8<-- [end:workers]


# --8<-- [start:datasets]
class CountingDataset:
    """Wraps a dataset and records every index ``__getitem__`` is called with."""

    def __init__(self, base: Any) -> None:
        self.base, self.calls = base, []

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> Any:
        self.calls.append(i)
        return self.base[i]


def write_records(path: str | Path, data: Tensor) -> Path:
    """Write ``data: (N, D)`` float32 to ``path`` as N fixed-size binary records."""
    path = Path(path)
    if data.dim() != 2:
        raise ValueError(f"data must be 2-D (N, D), got shape {tuple(data.shape)}")
    if not path.parent.is_dir():
        raise ValueError(f"directory {path.parent} does not exist")
    path.write_bytes(bytes(data.to(torch.float32).contiguous().view(torch.uint8).flatten().tolist()))
    return path


class RecordFileDataset:
    """A file-backed dataset: ``__getitem__`` seeks to record ``i`` and reads only its bytes.

    Nothing but the file name and the record size stays in memory; ``bytes_read`` counts the I/O.
    """

    def __init__(self, path: str | Path, dim: int) -> None:
        self.path, self.dim = Path(path), dim
        self.record_bytes = 4 * dim
        size = self.path.stat().st_size
        if dim <= 0 or size % self.record_bytes:
            raise ValueError(f"file of {size} bytes is not a whole number of {dim}-float records")
        self.n, self.bytes_read = size // self.record_bytes, 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Tensor:
        if not -self.n <= i < self.n:
            raise IndexError(f"index {i} out of range for {self.n} records")
        with open(self.path, "rb") as f:
            f.seek((i % self.n) * self.record_bytes)
            raw = f.read(self.record_bytes)
        self.bytes_read += len(raw)
        return torch.frombuffer(bytearray(raw), dtype=torch.float32)
# --8<-- [end:datasets]


if __name__ == "__main__":
    from torch.utils.data import DataLoader, TensorDataset

    data = TensorDataset(torch.arange(10), torch.arange(10) * 0.5)
    ours = ScratchDataLoader(data, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(0))
    ref = DataLoader(data, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(0))
    for (xa, ya), (xb, yb) in zip(ours, ref):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        print("batch", xa.tolist(), "== torch's DataLoader")
    print(f"len(loader) = {len(ours)} = ceil(10 / 4)")
