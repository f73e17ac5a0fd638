"""Position-wise feed-forward network: FFN(x) = max(0, x W_1 + b_1) W_2 + b_2.

Reference: Vaswani et al. 2017, §3.3; d2l.ai §11.7.2. The same two-layer MLP is applied to
every position independently (it is a 1x1 convolution over the sequence).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = ["PositionwiseFFN", "position_mixing"]


# --8<-- [start:ffn]
class PositionwiseFFN(nn.Module):
    """``(..., d_model) -> (..., d_model)`` through a hidden width ``d_ff`` (paper: 4 * d_model).

    ``activation`` is ``"relu"`` (paper) or ``"gelu"`` (BERT/GPT), matching the names accepted by
    ``nn.TransformerEncoderLayer``; ``dropout`` acts on the hidden layer like the built-in.
    """

    def __init__(
        self,
        d_model: int,
        d_ff: int,
        dropout: float = 0.0,
        activation: str = "relu",
        *,
        bias: bool = True,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if d_model <= 0 or d_ff <= 0:
            raise ValueError(f"d_model and d_ff must be positive, got d_model={d_model}, d_ff={d_ff}")
        if activation not in ("relu", "gelu"):
            raise ValueError(f"activation must be 'relu' or 'gelu', got {activation!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        kw = {"device": device, "dtype": dtype}
        self.linear1 = nn.Linear(d_model, d_ff, bias=bias, **kw)
        self.linear2 = nn.Linear(d_ff, d_model, bias=bias, **kw)
        self.dropout = nn.Dropout(dropout)
        self.activation = nn.ReLU() if activation == "relu" else nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        """Apply the same MLP at every position: ``x: (..., d_model)``."""
        if x.size(-1) != self.linear1.in_features:
            raise ValueError(f"x has last dim {x.size(-1)}, expected d_model={self.linear1.in_features}")
        return self.linear2(self.dropout(self.activation(self.linear1(x))))
# --8<-- [end:ffn]


# --8<-- [start:mixing]
def position_mixing(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """How much output position ``i`` depends on input position ``j``: ``M[i, j] = ||∂y_i / ∂x_j||_F``.

    ``fn`` maps ``(L, d) -> (L, d')``; ``x: (L, d)`` → ``M: (L, L)``. A position-wise FFN gives a
    diagonal ``M`` (it mixes the channels of one position only); self-attention gives a full one.
    """
    if x.dim() != 2:
        raise ValueError(f"x must be one sequence (L, d), got shape {tuple(x.shape)}")
    jac = torch.autograd.functional.jacobian(fn, x)  # (L, d', L, d)
    return jac.pow(2).sum(dim=(1, 3)).sqrt()
# --8<-- [end:mixing]


if __name__ == "__main__":
    torch.manual_seed(0)
    ffn = PositionwiseFFN(4, 16)
    x = torch.randn(2, 3, 4)
    y = ffn(x)
    same = torch.allclose(ffn(x[:, 1:2]), y[:, 1:2])
    print("output shape", tuple(y.shape), "| each position independent:", same)
