"""Token embeddings: a lookup is a one-hot matrix product; the Transformer scales it by sqrt(d_model).

Reference: Vaswani et al. 2017, §3.4 ("we multiply those weights by sqrt(d_model)"; the two
embedding layers and the pre-softmax projection share one matrix); Press & Wolf 2017 (weight
tying); d2l.ai §11.7.4. ``Emb(i) = e_i^T W = W[i, :]``, model input ``sqrt(d) * Emb(x) + PE``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from snippets.attention.positional import sinusoidal_positional_encoding

__all__ = ["embedding_lookup", "one_hot_matmul", "TokenEmbedding", "embedding_vs_pe_rms"]


def _check_ids(ids: Tensor, weight: Tensor) -> None:
    if ids.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"ids must be an integer tensor (int32/int64), got dtype {ids.dtype}")
    if weight.dim() != 2:
        raise ValueError(f"weight must be (vocab_size, d), got shape {tuple(weight.shape)}")
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= weight.size(0)):
        raise ValueError(
            f"ids must lie in [0, vocab_size={weight.size(0)}), got min {int(ids.min())}, max {int(ids.max())}"
        )


# --8<-- [start:lookup]
def embedding_lookup(ids: Tensor, weight: Tensor, padding_idx: int | None = None) -> Tensor:
    """Row lookup ``weight[ids]``: ``ids: (*)`` integers, ``weight: (V, d)`` → ``(*, d)``.

    Like ``F.embedding``: a repeated id accumulates the gradients of all its occurrences in its
    row; the row ``padding_idx`` is returned as stored but receives no gradient.
    """
    _check_ids(ids, weight)
    if padding_idx is not None:
        if not -weight.size(0) <= padding_idx < weight.size(0):
            raise ValueError(f"padding_idx={padding_idx} must lie in [-{weight.size(0)}, {weight.size(0)})")
        padding_idx %= weight.size(0)  # negative counts from the end, like F.embedding
    out = weight[ids]  # gather rows; backward scatter-adds into the same rows
    if padding_idx is not None:
        is_pad = (ids == padding_idx).unsqueeze(-1)
        out = torch.where(is_pad, out.detach(), out)  # same value, gradient path cut
    return out


def one_hot_matmul(ids: Tensor, weight: Tensor) -> Tensor:
    """The same lookup as a matrix product ``one_hot(ids) @ W`` — an embedding is a linear layer
    without bias applied to one-hot vectors (wasteful: ``V`` multiply-adds per output element)."""
    _check_ids(ids, weight)
    return nn.functional.one_hot(ids.long(), weight.size(0)).to(weight.dtype) @ weight
# --8<-- [end:lookup]


# --8<-- [start:token_embedding]
class TokenEmbedding(nn.Module):
    """``ids: (B, L)`` → ``sqrt(d_model) * W[ids]: (B, L, d_model)`` (``scale=False`` drops the factor).

    ``init_std`` defaults to ``d_model ** -0.5`` — the scale the paper's sqrt(d_model) only makes sense
    with (and the order of an output projection ``nn.Linear(d, V)``'s ``U(±1/sqrt(d))`` init, which a
    tied matrix shares), so ``sqrt(d) * W`` has entries of std 1, comparable to the positional encoding.
    ``init_std=1.0`` reproduces ``nn.Embedding``'s default ``N(0, 1)``.
    ``padding_idx`` (in ``[0, vocab_size)``): that row starts at zero and never gets a gradient.
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        *,
        scale: bool = True,
        padding_idx: int | None = None,
        init_std: float | None = None,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if vocab_size <= 0 or d_model <= 0:
            raise ValueError(f"vocab_size and d_model must be positive, got {vocab_size}, {d_model}")
        if init_std is not None and not init_std > 0:
            raise ValueError(f"init_std must be positive, got {init_std}")
        if padding_idx is not None and not 0 <= padding_idx < vocab_size:
            raise ValueError(f"padding_idx={padding_idx} must lie in [0, vocab_size={vocab_size})")
        self.d_model, self.padding_idx = d_model, padding_idx
        self.scale = math.sqrt(d_model) if scale else 1.0
        std = d_model**-0.5 if init_std is None else init_std
        self.weight = nn.Parameter(torch.randn(vocab_size, d_model, device=device, dtype=dtype) * std)
        if padding_idx is not None:
            with torch.no_grad():
                self.weight[padding_idx].zero_()  # like nn.Embedding: the pad row starts at 0

    def forward(self, ids: Tensor) -> Tensor:
        return embedding_lookup(ids, self.weight, self.padding_idx) * self.scale
# --8<-- [end:token_embedding]


# --8<-- [start:scale_demo]
def embedding_vs_pe_rms(
    d_model: int, vocab_size: int = 1000, max_len: int = 100, init_std: float | None = None, seed: int = 0
) -> tuple[float, float]:
    """Root-mean-square entry of ``sqrt(d_model) * W`` (``W ~ N(0, init_std^2)``) and of the PE table.

    Every sin/cos pair of the PE has ``sin^2 + cos^2 = 1``, so its RMS is ``sqrt(1/2) ≈ 0.71`` for
    any ``d_model``. With ``init_std = d^-0.5`` the scaled embedding has RMS ≈ 1 (same order as PE);
    with ``nn.Embedding``'s default ``N(0, 1)`` it has RMS ≈ ``sqrt(d)`` and drowns the positions.
    """
    if init_std is not None and not init_std > 0:
        raise ValueError(f"init_std must be positive, got {init_std}")
    g = torch.Generator().manual_seed(seed)
    std = d_model**-0.5 if init_std is None else init_std
    w = torch.randn(vocab_size, d_model, generator=g, dtype=torch.float64) * std
    pe = sinusoidal_positional_encoding(max_len, d_model, dtype=torch.float64)
    return (math.sqrt(d_model) * w).pow(2).mean().sqrt().item(), pe.pow(2).mean().sqrt().item()
# --8<-- [end:scale_demo]


if __name__ == "__main__":
    for std, name in ((None, "N(0, 1/d)"), (1.0, "N(0, 1) = nn.Embedding default")):
        emb, pe = embedding_vs_pe_rms(512, init_std=std)
        print(f"d=512, W ~ {name:31s}: RMS of sqrt(d)*W = {emb:6.2f}, RMS of PE = {pe:.2f}")
    ids, w = torch.tensor([[3, 1, 3]]), torch.randn(5, 4)
    print("one_hot(ids) @ W == W[ids]:", torch.allclose(one_hot_matmul(ids, w), embedding_lookup(ids, w)))
