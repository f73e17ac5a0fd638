"""Layer normalization from scratch, next to batch normalization on ``(B, L, d)`` sequence batches.

Reference: Ba, Kiros & Hinton 2016, "Layer Normalization"; Ioffe & Szegedy 2015 (BatchNorm);
Vaswani et al. 2017, §3.1 (``LayerNorm(x + Sublayer(x))``); d2l.ai §11.7.2. A Transformer uses
``nn.LayerNorm(d_model)``: every token is normalized over its own ``d`` features, so its output does
not depend on the other tokens, the other sentences of the batch or the padding appended to them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["layer_norm", "batch_norm", "norm_stats", "stats_shapes_demo", "padded_batch_demo"]


def _shape(normalized_shape: int | Sequence[int]) -> tuple[int, ...]:
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if not shape or any(s <= 0 for s in shape):
        raise ValueError(f"normalized_shape must be a non-empty tuple of positive sizes, got {normalized_shape}")
    return shape


def _check_affine(name: str, p: Tensor | None, shape: tuple[int, ...]) -> None:
    if p is not None and tuple(p.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(p.shape)}")


# --8<-- [start:layer_norm]
def layer_norm(
    x: Tensor,
    normalized_shape: int | Sequence[int],
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """``y = (x - mean) / sqrt(var + eps) * weight + bias`` over the trailing ``normalized_shape`` dims.

    Shapes: ``x: (*, *normalized_shape)``, ``weight``/``bias``: ``normalized_shape`` (``γ``, ``β``;
    ``None`` = 1 and 0) → ``(*, *normalized_shape)``. Drop-in for ``F.layer_norm``: the variance is the
    biased one (divide by the number of elements), the same in training and evaluation.
    ``normalized_shape=d`` on ``(B, L, d)`` gives one mean per token, ``(B, L, 1)``.
    """
    shape = _shape(normalized_shape)
    if x.dim() < len(shape) or tuple(x.shape[x.dim() - len(shape) :]) != shape:
        raise ValueError(f"x of shape {tuple(x.shape)} does not end with normalized_shape={shape}")
    _check_affine("weight", weight, shape)
    _check_affine("bias", bias, shape)
    if not eps > 0:
        raise ValueError(f"eps must be positive (it keeps constant inputs from dividing by 0), got {eps}")
    dims = tuple(range(-len(shape), 0))  # the normalized (trailing) dims
    mean = x.mean(dim=dims, keepdim=True)  # (*, 1, ..., 1)
    var = (x - mean).pow(2).mean(dim=dims, keepdim=True)  # biased: / N, like PyTorch
    y = (x - mean) * torch.rsqrt(var + eps)
    if weight is not None:
        y = y * weight  # γ: learned, one per normalized element
    if bias is not None:
        y = y + bias  # β
    return y
# --8<-- [end:layer_norm]


# --8<-- [start:batch_norm]
def batch_norm(x: Tensor, weight: Tensor | None = None, bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Training-mode BatchNorm of a sequence batch ``x: (B, L, d)``: one mean/var per feature, over B and L.

    ``weight``/``bias``: ``(d,)``. Equals ``nn.BatchNorm1d(d)`` in training mode applied to
    ``x.transpose(1, 2)`` — with no mask, so padded positions count in the statistics like real tokens.
    """
    if x.dim() != 3:
        raise ValueError(f"x must be (B, L, d), got shape {tuple(x.shape)}")
    if x.size(0) * x.size(1) < 2:
        raise ValueError(f"batch statistics need at least 2 values per feature, got B*L={x.size(0) * x.size(1)}")
    _check_affine("weight", weight, (x.size(-1),))
    _check_affine("bias", bias, (x.size(-1),))
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps}")
    mean = x.mean(dim=(0, 1), keepdim=True)  # (1, 1, d)
    var = (x - mean).pow(2).mean(dim=(0, 1), keepdim=True)  # biased, as used for normalizing
    y = (x - mean) * torch.rsqrt(var + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y
# --8<-- [end:batch_norm]


# --8<-- [start:stats]
def norm_stats(x: Tensor, dims: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Mean and biased variance of ``x`` over ``dims``, kept as size-1 dims (the shapes that broadcast)."""
    mean = x.mean(dim=tuple(dims), keepdim=True)
    return mean, (x - mean).pow(2).mean(dim=tuple(dims), keepdim=True)


def stats_shapes_demo(bs: int = 4, seq: int = 5, f: int = 8) -> dict[str, tuple[int, ...]]:
    """Shape of the mean (= of the std) each normalization computes, for ``(bs, f)`` and ``(bs, seq, f)``."""
    x2, x3 = torch.randn(bs, f), torch.randn(bs, seq, f)
    return {
        "BatchNorm1d(f) on (bs, f)": tuple(norm_stats(x2, (0,))[0].shape),  # (1, f)
        "LayerNorm(f) on (bs, f)": tuple(norm_stats(x2, (-1,))[0].shape),  # (bs, 1)
        "BatchNorm over (bs, seq) on (bs, seq, f)": tuple(norm_stats(x3, (0, 1))[0].shape),  # (1, 1, f)
        "LayerNorm(f) on (bs, seq, f)": tuple(norm_stats(x3, (-1,))[0].shape),  # (bs, seq, 1)
        "LayerNorm((seq, f)) on (bs, seq, f)": tuple(norm_stats(x3, (-2, -1))[0].shape),  # (bs, 1, 1)
    }
# --8<-- [end:stats]


# --8<-- [start:padded_batch_demo]
def padded_batch_demo(
    lengths: Sequence[int] = (6, 4, 2), d: int = 8, extra_pad: int = 3, seed: int = 0
) -> dict[str, float]:
    """How much appending ``extra_pad`` more zero pad tokens changes each norm's outputs at the real tokens.

    Sentences of ``lengths`` tokens (``d`` features, mean 1, std 2) are zero-padded to ``max(lengths)``
    and, again, to ``max(lengths) + extra_pad``. Returns the largest absolute change over the real
    tokens for ``LayerNorm(d)`` (0: per-token statistics), the mask-free BatchNorm over batch and time,
    and ``LayerNorm((seq, d))`` (both > 0: their statistics count the padding).
    """
    if not lengths or min(lengths) <= 0:
        raise ValueError(f"lengths must be positive, got {tuple(lengths)}")
    if extra_pad < 0:
        raise ValueError(f"extra_pad must be >= 0, got {extra_pad}")
    g = torch.Generator().manual_seed(seed)
    b, n = len(lengths), max(lengths)
    x = torch.zeros(b, n + extra_pad, d, dtype=torch.float64)
    real = torch.arange(n + extra_pad) < torch.tensor(lengths)[:, None]  # (B, L'): True = real token
    x[real] = 1.0 + 2.0 * torch.randn(int(real.sum()), d, generator=g, dtype=torch.float64)
    short, long_ = x[:, :n], x  # the same sentences, padded to n and to n + extra_pad
    norms = {
        "LayerNorm(d)": lambda t: layer_norm(t, d),
        "BatchNorm(batch+time)": batch_norm,
        "LayerNorm((seq, d))": lambda t: layer_norm(t, t.shape[-2:]),
    }
    mask = real[:, :n]
    return {name: (fn(short)[mask] - fn(long_)[:, :n][mask]).abs().max().item() for name, fn in norms.items()}
# --8<-- [end:padded_batch_demo]


if __name__ == "__main__":
    for name, shape in stats_shapes_demo().items():
        print(f"{name:40s} mean/std shape {shape}")
    for name, change in padded_batch_demo().items():
        print(f"appending 3 pad tokens changes {name:22s} at real tokens by up to {change:.3g}")
