"""In-place operations and the version counter: what autograd forbids, what it allows, and how it checks.

Every tensor carries a version counter (``t._version``) that each in-place op bumps. When autograd
saves a tensor for the backward pass it remembers the version; at backward time a different
version means the saved value was overwritten, and PyTorch raises instead of computing a wrong
gradient. :class:`SavedTensorAudit` re-implements that check with ``saved_tensors_hooks`` (and
counts the bytes saved); :func:`sgd_update_` is the allowed in-place update of leaves.
Reference: PyTorch docs, "Autograd mechanics" — In-place operations with autograd, saved tensors hooks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["SavedRecord", "SavedTensorAudit", "sgd_update_"]


@dataclass
class SavedRecord:
    """One tensor saved for backward: the tensor and its version when it was saved."""

    tensor: Tensor
    version: int

    @property
    def stale(self) -> bool:
        """True when an in-place op changed the tensor after it was saved."""
        return self.tensor._version != self.version


# --8<-- [start:audit]
class SavedTensorAudit(torch.autograd.graph.saved_tensors_hooks):
    """Record every tensor autograd saves inside the ``with`` block, and check it when backward uses it.

    With hooks installed, PyTorch skips its own version check (the hooks decide what is unpacked),
    so ``unpack`` performs it: a saved tensor whose version changed raises ``RuntimeError``.
    ``records``: the :class:`SavedRecord` of each save; ``stale()``: the overwritten ones;
    ``nbytes``: bytes held for backward (the same storage saved twice counts twice).
    """

    def __init__(self) -> None:
        self.records: list[SavedRecord] = []

        def pack(t: Tensor) -> int:
            self.records.append(SavedRecord(t, t._version))
            return len(self.records) - 1

        def unpack(i: int) -> Tensor:
            rec = self.records[i]
            if rec.stale:
                raise RuntimeError(
                    f"saved tensor {i} of shape {tuple(rec.tensor.shape)} was modified in place: "
                    f"it is at version {rec.tensor._version}; expected version {rec.version}"
                )
            return rec.tensor

        super().__init__(pack, unpack)

    def __enter__(self) -> SavedTensorAudit:
        super().__enter__()
        return self

    def stale(self) -> list[SavedRecord]:
        return [r for r in self.records if r.stale]

    @property
    def nbytes(self) -> int:
        return sum(r.tensor.nbytes for r in self.records)


# --8<-- [end:audit]


# --8<-- [start:update]
def sgd_update_(params: Iterable[Tensor], lr: float) -> None:
    """``p -= lr * p.grad`` in place for every leaf with a gradient — what optimizers do.

    Allowed on leaves that require grad because it runs under ``torch.no_grad()``: the update is
    not part of any graph. Parameters whose ``.grad`` is None are skipped.
    """
    if not lr > 0:
        raise ValueError(f"lr must be positive, got lr={lr}")
    with torch.no_grad():
        for p in params:
            if p.grad is not None:
                p.sub_(lr * p.grad)  # bumps p._version, records nothing


# --8<-- [end:update]


if __name__ == "__main__":
    x = torch.randn(3, requires_grad=True)
    with SavedTensorAudit() as audit:
        y = x.sigmoid()  # sigmoid saves its output y for backward
    print("saved:", [(tuple(r.tensor.shape), r.version) for r in audit.records], f"{audit.nbytes} bytes")
    y.mul_(2)  # overwrites the saved output
    print("stale after y.mul_(2):", len(audit.stale()))
    try:
        y.sum().backward()
    except RuntimeError as err:
        print("backward:", err)
