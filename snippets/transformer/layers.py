"""Transformer encoder and decoder layers from scratch: attention + FFN, each wrapped in Add & Norm.

Reference: Vaswani et al. 2017, §3.1 (post-LN, ``x <- LN(x + Sublayer(x))``); Xiong et al. 2020,
"On Layer Normalization in the Transformer Architecture" (pre-LN, ``x <- x + Sublayer(LN(x))``);
d2l.ai §11.7. Drop-ins for ``nn.TransformerEncoderLayer`` / ``nn.TransformerDecoderLayer`` with
``batch_first=True``: the same arguments, the same parameter layout and the same mask conventions
(``*_key_padding_mask: (B, L)`` True = padding, ignored; boolean ``*_mask: (L_q, L_k)`` True = not
allowed, or floating = added to the scores).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from snippets.attention.multihead import MultiHeadAttention
from snippets.transformer.ffn import PositionwiseFFN

__all__ = ["EncoderLayer", "DecoderLayer"]


# --8<-- [start:encoder_layer]
class EncoderLayer(nn.Module):
    """Self-attention → Add & Norm → FFN → Add & Norm, for ``src: (B, L, d_model)``.

    ``norm_first=False`` (paper, post-LN): ``x = LN(x + SA(x))``, ``x = LN(x + FFN(x))``.
    ``norm_first=True`` (pre-LN, GPT-2 and most modern models): ``x = x + SA(LN(x))``,
    ``x = x + FFN(LN(x))``. ``dropout`` acts on the attention weights, inside the FFN and on each
    sublayer's output before the residual addition, exactly like ``nn.TransformerEncoderLayer``.
    """

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str = "relu",
        layer_norm_eps: float = 1e-5,
        norm_first: bool = False,
        *,
        bias: bool = True,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, nhead, dropout=dropout, bias=bias, **kw)
        self.ffn = PositionwiseFFN(d_model, dim_feedforward, dropout, activation, bias=bias, **kw)
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **kw)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **kw)
        self.dropout1, self.dropout2 = nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(
        self,
        src: Tensor,
        src_mask: Tensor | None = None,
        src_key_padding_mask: Tensor | None = None,
        is_causal: bool = False,
    ) -> Tensor:
        """``src: (B, L, d_model)`` → ``(B, L, d_model)``; ``src_key_padding_mask: (B, L)``."""
        x = src
        if self.norm_first:  # pre-LN: normalise the sublayer's input, keep the residual path clean
            x = x + self._sa(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            x = x + self.dropout2(self.ffn(self.norm2(x)))
        else:  # post-LN (paper): normalise after adding the residual
            x = self.norm1(x + self._sa(x, src_mask, src_key_padding_mask, is_causal))
            x = self.norm2(x + self.dropout2(self.ffn(x)))
        return x

    def _sa(self, x: Tensor, mask: Tensor | None, pad: Tensor | None, is_causal: bool) -> Tensor:
        out, _ = self.self_attn(x, x, x, key_padding_mask=pad, attn_mask=mask, is_causal=is_causal)
        return self.dropout1(out)

    # --8<-- [end:encoder_layer]

    @torch.no_grad()
    def load_from_torch(self, ref: nn.TransformerEncoderLayer) -> EncoderLayer:
        """Copy the weights of a ``nn.TransformerEncoderLayer`` of the same sizes into this layer."""
        if ref.norm_first != self.norm_first:
            raise ValueError(f"norm_first differs: ours {self.norm_first}, theirs {ref.norm_first}")
        self.self_attn.load_from_torch(ref.self_attn)
        _copy_ffn(self.ffn, ref.linear1, ref.linear2)
        self.norm1.load_state_dict(ref.norm1.state_dict())
        self.norm2.load_state_dict(ref.norm2.state_dict())
        return self


# --8<-- [start:decoder_layer]
class DecoderLayer(nn.Module):
    """Masked self-attention → Add & Norm → cross-attention → Add & Norm → FFN → Add & Norm.

    ``tgt: (B, T, d_model)`` attends to itself (causally, via ``tgt_mask`` or ``tgt_is_causal``),
    then to ``memory: (B, S, d_model)`` (the encoder output: queries from the decoder, keys and
    values from the encoder), then goes through the FFN. ``norm_first`` as in :class:`EncoderLayer`.
    """

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str = "relu",
        layer_norm_eps: float = 1e-5,
        norm_first: bool = False,
        *,
        bias: bool = True,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, nhead, dropout=dropout, bias=bias, **kw)
        self.cross_attn = MultiHeadAttention(d_model, nhead, dropout=dropout, bias=bias, **kw)
        self.ffn = PositionwiseFFN(d_model, dim_feedforward, dropout, activation, bias=bias, **kw)
        self.norm1, self.norm2, self.norm3 = (
            nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **kw) for _ in range(3)
        )
        self.dropout1, self.dropout2, self.dropout3 = (nn.Dropout(dropout) for _ in range(3))

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        tgt_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        tgt_key_padding_mask: Tensor | None = None,
        memory_key_padding_mask: Tensor | None = None,
        tgt_is_causal: bool = False,
    ) -> Tensor:
        """``tgt: (B, T, d_model)``, ``memory: (B, S, d_model)`` → ``(B, T, d_model)``."""
        x, tgt_masks, mem_masks = tgt, (tgt_mask, tgt_key_padding_mask), (memory_mask, memory_key_padding_mask)
        if self.norm_first:
            x = x + self._sa(self.norm1(x), *tgt_masks, tgt_is_causal)
            x = x + self._ca(self.norm2(x), memory, *mem_masks)
            x = x + self.dropout3(self.ffn(self.norm3(x)))
        else:
            x = self.norm1(x + self._sa(x, *tgt_masks, tgt_is_causal))
            x = self.norm2(x + self._ca(x, memory, *mem_masks))
            x = self.norm3(x + self.dropout3(self.ffn(x)))
        return x

    def _sa(self, x: Tensor, mask: Tensor | None, pad: Tensor | None, is_causal: bool) -> Tensor:
        out, _ = self.self_attn(x, x, x, key_padding_mask=pad, attn_mask=mask, is_causal=is_causal)
        return self.dropout1(out)

    def _ca(self, x: Tensor, memory: Tensor, mask: Tensor | None, pad: Tensor | None) -> Tensor:
        out, _ = self.cross_attn(x, memory, memory, key_padding_mask=pad, attn_mask=mask)  # Q: decoder
        return self.dropout2(out)

    # --8<-- [end:decoder_layer]

    @torch.no_grad()
    def load_from_torch(self, ref: nn.TransformerDecoderLayer) -> DecoderLayer:
        """Copy the weights of a ``nn.TransformerDecoderLayer`` of the same sizes into this layer."""
        if ref.norm_first != self.norm_first:
            raise ValueError(f"norm_first differs: ours {self.norm_first}, theirs {ref.norm_first}")
        self.self_attn.load_from_torch(ref.self_attn)
        self.cross_attn.load_from_torch(ref.multihead_attn)
        _copy_ffn(self.ffn, ref.linear1, ref.linear2)
        for ours, theirs in zip((self.norm1, self.norm2, self.norm3), (ref.norm1, ref.norm2, ref.norm3)):
            ours.load_state_dict(theirs.state_dict())
        return self


def _copy_ffn(ffn: PositionwiseFFN, linear1: nn.Linear, linear2: nn.Linear) -> None:
    if (ffn.linear1.in_features, ffn.linear1.out_features) != (linear1.in_features, linear1.out_features):
        raise ValueError(
            f"FFN size mismatch: ours d_model={ffn.linear1.in_features}, d_ff={ffn.linear1.out_features}; "
            f"theirs d_model={linear1.in_features}, d_ff={linear1.out_features}"
        )
    ffn.linear1.load_state_dict(linear1.state_dict())
    ffn.linear2.load_state_dict(linear2.state_dict())


if __name__ == "__main__":
    torch.manual_seed(0)
    for norm_first in (False, True):
        ref = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True, norm_first=norm_first)
        ours = EncoderLayer(16, 4, 32, dropout=0.0, norm_first=norm_first).load_from_torch(ref)
        x, pad = torch.randn(2, 5, 16), torch.tensor([[False] * 5, [False] * 3 + [True] * 2])
        diff = (ours(x, src_key_padding_mask=pad) - ref(x, src_key_padding_mask=pad)).abs().max().item()
        print(f"norm_first={norm_first}: max |EncoderLayer - nn.TransformerEncoderLayer| = {diff:.1e}")
