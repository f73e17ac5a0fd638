"""Masked softmax and the masks attention uses: padding masks and causal masks.

Reference: d2l.ai §11.3 (masked softmax); Vaswani et al. 2017, §3.2.3 (masking in the decoder).

Convention (the same as ``torch.nn.functional.scaled_dot_product_attention``): in a boolean
mask ``True`` means *keep* (the key takes part in attention) and ``False`` means *masked out*.
A floating-point mask is *added* to the scores (``0`` keeps, ``-inf`` masks out).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

__all__ = ["causal_mask", "padding_mask", "masked_softmax"]

FullyMasked = Literal["raise", "zero"]


# --8<-- [start:masks]
def causal_mask(n_q: int, n_k: int | None = None, *, offset: int = 0, device: torch.device | None = None) -> Tensor:
    """Boolean causal mask ``(n_q, n_k)``: query ``i`` may see keys ``j <= i + offset`` (True = keep).

    ``offset=0`` aligns it to the top-left corner like ``F.scaled_dot_product_attention(is_causal=True)``.
    With ``offset = n_k - n_q`` (``n_q`` new queries after ``offset`` cached positions) it is aligned
    bottom-right, like ``torch.nn.attention.bias.causal_lower_right``.
    """
    n_k = n_q if n_k is None else n_k
    if n_q <= 0 or n_k <= 0:
        raise ValueError(f"causal_mask needs positive lengths, got n_q={n_q}, n_k={n_k}")
    if offset < 0:
        raise ValueError(f"offset must be >= 0 (cached positions before query 0), got offset={offset}")
    return torch.ones(n_q, n_k, dtype=torch.bool, device=device).tril(diagonal=offset)


def padding_mask(valid_lens: Tensor, n_k: int) -> Tensor:
    """Boolean key-padding mask ``(B, n_k)`` from ``valid_lens: (B,)`` (True = real token).

    Row ``b`` keeps keys ``0 .. valid_lens[b] - 1``. Unsqueeze it to ``(B, 1, 1, n_k)`` to
    broadcast over heads and queries.
    """
    if valid_lens.dim() != 1:
        raise ValueError(f"valid_lens must be 1-D (B,), got shape {tuple(valid_lens.shape)}")
    if valid_lens.dtype.is_floating_point or valid_lens.dtype == torch.bool:
        raise ValueError(f"valid_lens must be an integer tensor, got dtype {valid_lens.dtype}")
    if n_k <= 0:
        raise ValueError(f"n_k must be positive, got n_k={n_k}")
    if bool(((valid_lens < 0) | (valid_lens > n_k)).any()):
        raise ValueError(f"valid_lens must lie in [0, n_k={n_k}], got {valid_lens.tolist()}")
    positions = torch.arange(n_k, device=valid_lens.device)
    return positions < valid_lens[:, None]
# --8<-- [end:masks]


# --8<-- [start:masked_softmax]
def masked_softmax(
    scores: Tensor,
    mask: Tensor | None = None,
    *,
    fully_masked: FullyMasked = "raise",
) -> Tensor:
    """Softmax over the last dim of ``scores: (..., n_q, n_k)`` that ignores masked keys.

    ``mask`` broadcasts to ``scores``: boolean (True = keep) or floating (added to the scores,
    ``-inf`` = masked out). Masked keys get weight exactly 0 and the remaining weights of each
    row sum to 1. A row whose keys are *all* masked has no valid softmax: with
    ``fully_masked="raise"`` (default) it raises ``ValueError``; with ``"zero"`` its weights
    are all zeros (what ``F.scaled_dot_product_attention`` returns for such rows).
    """
    if fully_masked not in ("raise", "zero"):
        raise ValueError(f"fully_masked must be 'raise' or 'zero', got {fully_masked!r}")
    if mask is not None:
        _check_mask(mask, scores)
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))  # masked scores -> -inf
        else:
            scores = scores + mask.to(scores.dtype)  # additive mask: 0 keeps, -inf masks
    dead = torch.isneginf(scores).all(dim=-1, keepdim=True)  # rows with no valid key
    if bool(dead.any()):  # one device sync: the price of never returning NaN
        if fully_masked == "raise":
            first = tuple(torch.nonzero(dead.squeeze(-1))[0].tolist())
            raise ValueError(
                f"masked_softmax: {int(dead.sum())} row(s) have every key masked "
                f"(first at index {first}); softmax over no keys is undefined. "
                "Fix the mask, or pass fully_masked='zero' to get all-zero weights."
            )
        scores = scores.masked_fill(dead, 0.0)  # any finite row; zeroed below
        return torch.softmax(scores, dim=-1).masked_fill(dead, 0.0)
    return torch.softmax(scores, dim=-1)
# --8<-- [end:masked_softmax]


def _check_mask(mask: Tensor, scores: Tensor) -> None:
    """Raise ``ValueError`` unless ``mask`` is a bool/float tensor broadcastable to ``scores``."""
    if mask.dtype != torch.bool and not mask.dtype.is_floating_point:
        raise ValueError(f"mask must be bool (True = keep) or floating (additive), got {mask.dtype}")
    if mask.device != scores.device:
        raise ValueError(f"mask is on {mask.device} but scores are on {scores.device}")
    try:
        shape = torch.broadcast_shapes(mask.shape, scores.shape)
    except RuntimeError:
        shape = None
    if shape != scores.shape:
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} is not broadcastable to scores of shape "
            f"{tuple(scores.shape)} (mask dims must be 1 or equal, aligned from the right)"
        )


if __name__ == "__main__":
    scores = torch.tensor([[2.0, 1.0, 0.5, -1.0]])
    keep = padding_mask(torch.tensor([2]), n_k=4)
    print("scores        ", scores.tolist())
    print("keep          ", keep.tolist())
    print("masked_softmax", masked_softmax(scores, keep).tolist())
    print("causal (3x3)\n", causal_mask(3).int())
