"""Positional encodings: the Transformer's fixed sinusoids and BERT-style learned embeddings.

Reference: Vaswani et al. 2017, §3.5; d2l.ai §11.6.3; Devlin et al. 2019 (BERT, learned
position embeddings); Su et al. 2021 (RoFormer, rotary position embedding). Self-attention is
permutation-equivariant, so word order reaches the model only through a position signal *added*
to the token embeddings (or, with RoPE, a position-dependent rotation of queries and keys):
``PE[pos, 2i] = sin(pos / base^(2i/d))``, ``PE[pos, 2i+1] = cos(pos / base^(2i/d))``, base 10000.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = [
    "sinusoidal_positional_encoding",
    "relative_shift_matrix",
    "rotary_embedding",
    "PositionalEncoding",
    "LearnedPositionalEmbedding",
]


# --8<-- [start:sinusoidal]
def sinusoidal_positional_encoding(
    max_len: int,
    d_model: int,
    *,
    base: float = 10000.0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | None = None,
) -> Tensor:
    """The table ``PE: (max_len, d_model)``; row ``pos`` encodes position ``pos``.

    Column pair ``(2i, 2i+1)`` is ``(sin, cos)`` of ``pos * w_i`` with frequency
    ``w_i = base^(-2i/d_model)``: from period ``2*pi`` (i = 0) to ``2*pi*base`` (slowest).
    """
    if max_len <= 0 or d_model <= 0:
        raise ValueError(f"max_len and d_model must be positive, got max_len={max_len}, d_model={d_model}")
    if d_model % 2:
        raise ValueError(f"d_model={d_model} must be even: each frequency fills a (sin, cos) pair")
    work = dtype if dtype in (torch.float32, torch.float64) else torch.float32  # fp16 can't count to 5000
    pos = torch.arange(max_len, dtype=work, device=device)[:, None]  # (max_len, 1)
    two_i = torch.arange(0, d_model, 2, dtype=work, device=device)  # 0, 2, 4, ...
    angle = pos * base ** (-two_i / d_model)  # (max_len, d_model / 2)
    pe = torch.empty(max_len, d_model, dtype=work, device=device)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle)
    return pe.to(dtype)


# --8<-- [end:sinusoidal]


# --8<-- [start:shift]
def relative_shift_matrix(
    delta: float,
    d_model: int,
    *,
    base: float = 10000.0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | None = None,
) -> Tensor:
    """Block-diagonal ``M_delta: (d_model, d_model)`` with ``PE[pos + delta] = M_delta @ PE[pos]``.

    Block i is the rotation ``[[cos(delta*w_i), sin(delta*w_i)], [-sin(delta*w_i), cos(delta*w_i)]]``:
    it depends on the offset ``delta`` only, never on ``pos`` — a shift is a linear map.
    """
    if d_model <= 0 or d_model % 2:
        raise ValueError(f"d_model={d_model} must be positive and even")
    two_i = torch.arange(0, d_model, 2, dtype=dtype, device=device)
    c, s = torch.cos(delta * base ** (-two_i / d_model)), torch.sin(delta * base ** (-two_i / d_model))
    blocks = torch.stack([torch.stack([c, s], -1), torch.stack([-s, c], -1)], -2)  # (d/2, 2, 2)
    return torch.block_diag(*blocks)


# --8<-- [end:shift]


# --8<-- [start:rope]
def rotary_embedding(x: Tensor, positions: Tensor | None = None, *, base: float = 10000.0) -> Tensor:
    """RoPE: rotate feature pair ``(2i, 2i+1)`` of the token at position m by the angle ``m * w_i``.

    ``x: (..., L, d)`` with even d (queries or keys, per head), ``positions: (L,)`` (default
    ``0 .. L-1``) → ``(..., L, d)``. Applied to queries and keys (not values) instead of adding PE:
    ``rope(q)_m . rope(k)_n`` depends on the offset ``n - m`` only.
    """
    if x.dim() < 2 or x.size(-1) % 2:
        raise ValueError(f"x must be (..., L, d) with even d, got shape {tuple(x.shape)}")
    L, d = x.shape[-2:]
    if positions is None:
        positions = torch.arange(L, device=x.device)
    if positions.shape != (L,):
        raise ValueError(f"positions must have shape (L={L},), got {tuple(positions.shape)}")
    w = base ** (-torch.arange(0, d, 2, device=x.device, dtype=x.dtype) / d)  # (d/2,)
    angle = positions.to(x.dtype)[:, None] * w  # (L, d/2)
    cos, sin = torch.cos(angle), torch.sin(angle)
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2)


# --8<-- [end:rope]


# --8<-- [start:modules]
class PositionalEncoding(nn.Module):
    """``x + PE[:L]`` then dropout, for ``x: (B, L, d_model)`` (batch first), as in the paper.

    The table is a non-trainable buffer of ``max_len`` rows; a longer input raises ``ValueError``.
    """

    def __init__(
        self,
        d_model: int,
        max_len: int = 5000,
        dropout: float = 0.0,
        *,
        base: float = 10000.0,
        dtype: torch.dtype = torch.float32,
        device: torch.device | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        pe = sinusoidal_positional_encoding(max_len, d_model, base=base, dtype=dtype, device=device)
        self.register_buffer("pe", pe, persistent=False)  # moves with .to(), not saved
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        _check_positions(x, self.pe.shape)
        return self.dropout(x + self.pe[: x.size(1)].to(x.dtype))


class LearnedPositionalEmbedding(nn.Module):
    """``x + P[:L]`` with a trainable table ``P: (max_len, d_model)`` (BERT, GPT-2).

    No table entry exists beyond ``max_len``: a longer input raises ``ValueError``.
    """

    def __init__(
        self,
        max_len: int,
        d_model: int,
        dropout: float = 0.0,
        *,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if max_len <= 0 or d_model <= 0:
            raise ValueError(f"max_len and d_model must be positive, got {max_len=}, {d_model=}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.embedding = nn.Embedding(max_len, d_model, device=device, dtype=dtype)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        _check_positions(x, self.embedding.weight.shape)
        positions = torch.arange(x.size(1), device=x.device)  # 0 .. L-1
        return self.dropout(x + self.embedding(positions))


# --8<-- [end:modules]


def _check_positions(x: Tensor, table: torch.Size) -> None:
    """``x`` must be ``(B, L, d_model)`` with ``L`` no longer than the table."""
    max_len, d_model = table
    if x.dim() != 3 or x.size(-1) != d_model:
        raise ValueError(f"x must be (B, L, d_model={d_model}), got shape {tuple(x.shape)}")
    if x.size(1) > max_len:
        raise ValueError(f"sequence length {x.size(1)} exceeds max_len={max_len} of the position table")


if __name__ == "__main__":
    pe = sinusoidal_positional_encoding(50, 8, dtype=torch.float64)
    print("PE[1] =", [round(v, 3) for v in pe[1].tolist()])
    m = relative_shift_matrix(5, 8, dtype=torch.float64)
    print("max |M_5 PE[10] - PE[15]| =", (m @ pe[10] - pe[15]).abs().max().item())
    print("min distance between two rows:", torch.pdist(pe).min().item())
    q, k = torch.randn(2, 1, 8, dtype=torch.float64).unbind(0)
    scores = [
        (rotary_embedding(q, torch.tensor([m])) @ rotary_embedding(k, torch.tensor([m + 3])).T).item()
        for m in (0, 7, 40)
    ]
    print("RoPE score at offset 3 from positions 0, 7, 40:", [round(v, 6) for v in scores])
