"""The masks a Transformer uses — padding and causal (sequence) masks — their two boolean conventions,
how they combine, and the offset that cached decoding needs.

Reference: Vaswani et al. 2017, §3.2.3 (masking illegal connections with −∞ inside the softmax);
d2l.ai §11.3, §11.7. Two boolean conventions exist in PyTorch for the *same* tensor:

* **keep** (this site's :mod:`snippets.attention.masking`, ``F.scaled_dot_product_attention``'s
  boolean ``attn_mask``): ``True`` = the key takes part in attention;
* **ignore** (``nn.MultiheadAttention``, ``nn.Transformer*``: ``key_padding_mask``, boolean
  ``attn_mask``/``tgt_mask``): ``True`` = the key is masked out.

A floating mask is *additive* in both APIs (``0`` keeps, ``-inf`` masks out) and has no convention.
:func:`causal_mask` and :func:`padding_mask` are re-exported from :mod:`snippets.attention.masking`
(keep convention); everything here builds on them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from snippets.attention.masking import causal_mask, padding_mask

__all__ = [
    "causal_mask",
    "padding_mask",
    "keep_to_ignore",
    "ignore_to_keep",
    "to_additive",
    "combine_masks",
]


# --8<-- [start:conventions]
def keep_to_ignore(keep: Tensor) -> Tensor:
    """``True = attend`` (SDPA, this site) → ``True = masked out`` (``nn.MultiheadAttention``)."""
    _check_bool("keep", keep)
    return ~keep


def ignore_to_keep(ignore: Tensor) -> Tensor:
    """``True = masked out`` (``nn.MultiheadAttention``'s ``key_padding_mask``) → ``True = attend``."""
    _check_bool("ignore", ignore)
    return ~ignore


def to_additive(keep: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """Boolean keep-mask → additive float mask of the same shape: ``0`` where kept, ``-inf`` elsewhere.

    ``to_additive(causal_mask(n))`` is ``nn.Transformer.generate_square_subsequent_mask(n)``.
    """
    _check_bool("keep", keep)
    if not dtype.is_floating_point:
        raise ValueError(f"an additive mask needs a floating dtype, got dtype={dtype}")
    return torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill(~keep, float("-inf"))


# --8<-- [end:conventions]


# --8<-- [start:combine]
def combine_masks(key_keep: Tensor | None = None, attn_keep: Tensor | None = None) -> Tensor | None:
    """One mask broadcastable to the scores ``(B, h, n_q, n_k)`` from a padding and an attention mask.

    ``key_keep: (B, n_k)`` — per sequence, which keys are real (:func:`padding_mask`); it becomes
    ``(B, 1, 1, n_k)`` so that it hides *columns* for every head and every query.
    ``attn_keep: (n_q, n_k)``, ``(B, n_q, n_k)`` or ``(B, h, n_q, n_k)`` — per query, which keys it may
    see (:func:`causal_mask`); it becomes 4-D by adding leading dims of size 1.
    Boolean masks (keep convention) combine by logical AND; if either is floating (additive), both are
    made additive and summed — the same thing in the other representation. ``None`` is skipped;
    returns ``None`` when both are ``None``.
    """
    parts = []
    if key_keep is not None:
        _check_mask("key_keep", key_keep)
        if key_keep.dim() != 2:
            raise ValueError(f"key_keep must be (B, n_k), got shape {tuple(key_keep.shape)}")
        parts.append(key_keep[:, None, None, :])  # (B, 1, 1, n_k): the same columns for every query
    if attn_keep is not None:
        _check_mask("attn_keep", attn_keep)
        if not 2 <= attn_keep.dim() <= 4:
            raise ValueError(
                f"attn_keep must be (n_q, n_k), (B, n_q, n_k) or (B, h, n_q, n_k), got {attn_keep.dim()}-D"
            )
        while attn_keep.dim() < 4:
            attn_keep = attn_keep[None] if attn_keep.dim() == 2 else attn_keep[:, None]  # (1|B, 1|h, n_q, n_k)
        parts.append(attn_keep)
    if not parts:
        return None
    if len(parts) == 2:
        (kp, am) = parts
        if kp.size(-1) != am.size(-1):
            raise ValueError(f"key_keep has n_k={kp.size(-1)} but attn_keep has n_k={am.size(-1)}")
        if am.size(0) not in (1, kp.size(0)):
            raise ValueError(f"key_keep has batch B={kp.size(0)} but attn_keep has batch {am.size(0)}")
        if kp.device != am.device:
            raise ValueError(f"key_keep is on {kp.device} but attn_keep is on {am.device}")
    if all(p.dtype == torch.bool for p in parts):
        return parts[0] if len(parts) == 1 else parts[0] & parts[1]  # keep only where both keep
    dtype = next(p.dtype for p in parts if p.dtype.is_floating_point)
    additive = [to_additive(p, dtype) if p.dtype == torch.bool else p for p in parts]
    return additive[0] if len(additive) == 1 else additive[0] + additive[1]  # -inf wins: masked by either


# --8<-- [end:combine]


def _check_bool(name: str, mask: Tensor) -> None:
    if mask.dtype != torch.bool:
        raise ValueError(
            f"{name} must be a boolean mask, got dtype={mask.dtype} (a floating mask is additive: "
            "0 keeps, -inf masks out, in every PyTorch API, so it has no True/False convention to convert)"
        )


def _check_mask(name: str, mask: Tensor) -> None:
    if mask.dtype != torch.bool and not mask.dtype.is_floating_point:
        raise ValueError(f"{name} must be bool (True = keep) or floating (additive), got dtype={mask.dtype}")


if __name__ == "__main__":
    keep = padding_mask(torch.tensor([3, 2]), 4)  # (B=2, n_k=4), True = real token
    print("padding (keep):\n", keep.int())
    print("the same mask for nn.MultiheadAttention (True = ignore):\n", keep_to_ignore(keep).int())
    print("causal, 2 new queries after 3 cached positions (offset=3):\n", causal_mask(2, 5, offset=3).int())
    both = combine_masks(keep, causal_mask(4))  # (2, 1, 4, 4)
    print("padding & causal, sequence 1:\n", both[1, 0].int())
    print("additive:\n", to_additive(causal_mask(3)))
