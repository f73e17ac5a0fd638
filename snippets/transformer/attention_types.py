"""The three attentions of a Transformer — one multi-head attention module, used three ways.

Reference: Vaswani et al. 2017, §3.2.3 ("Applications of Attention in our Model"); d2l.ai §11.7.
Which tensors are queries, keys and values (and which mask applies) is the whole difference:

* encoder **global self-attention**: ``Q = K = V = X`` (the source), padded keys hidden;
* decoder **causal (masked) self-attention**: ``Q = K = V = Y`` (the target), query ``i`` sees keys ``j <= i``;
* decoder **cross-attention** (encoder–decoder attention): ``Q = Y``, ``K = V = M`` (the encoder output,
  "memory"); ``n_q = T`` target positions, ``n_k = S`` source positions.

Masks follow ``nn.MultiheadAttention``: ``pad_mask`` / ``memory_pad_mask: (B, L)`` boolean, True = padding
(ignored). Every function returns ``(output, weights)`` like ``nn.MultiheadAttention``; ``weights`` is
``None`` unless ``need_weights=True``, then ``(B, h, n_q, n_k)`` per head.
"""

from __future__ import annotations

import torch
from torch import Tensor

from snippets.attention.multihead import MultiHeadAttention
from snippets.transformer.model import Transformer

__all__ = ["global_self_attention", "causal_self_attention", "cross_attention", "cross_attention_weights"]


# --8<-- [start:self_attention]
def global_self_attention(
    mha: MultiHeadAttention, x: Tensor, pad_mask: Tensor | None = None, *, need_weights: bool = False
) -> tuple[Tensor, Tensor | None]:
    """Encoder self-attention: ``x: (B, S, d_model)`` attends to all of itself → ``(B, S, d_model)``."""
    return mha(x, x, x, key_padding_mask=pad_mask, need_weights=need_weights, average_attn_weights=False)


def causal_self_attention(
    mha: MultiHeadAttention, y: Tensor, pad_mask: Tensor | None = None, *, need_weights: bool = False
) -> tuple[Tensor, Tensor | None]:
    """Decoder self-attention: position ``i`` of ``y: (B, T, d_model)`` sees positions ``0..i`` only."""
    return mha(
        y, y, y, key_padding_mask=pad_mask, is_causal=True, need_weights=need_weights, average_attn_weights=False
    )


# --8<-- [end:self_attention]


# --8<-- [start:cross_attention]
def cross_attention(
    mha: MultiHeadAttention,
    y: Tensor,
    memory: Tensor,
    memory_pad_mask: Tensor | None = None,
    *,
    need_weights: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Encoder–decoder attention: queries from the decoder ``y: (B, T, d_model)``, keys and values from
    the encoder output ``memory: (B, S, d_model)`` → ``(B, T, d_model)``; no causal mask (the source is
    known in full), only the source padding ``memory_pad_mask: (B, S)``."""
    if y.dim() == 3 and memory.dim() == 3 and y.size(0) != memory.size(0):
        raise ValueError(f"y has batch {y.size(0)} but memory has batch {memory.size(0)}")
    return mha(
        y, memory, memory, key_padding_mask=memory_pad_mask, need_weights=need_weights, average_attn_weights=False
    )


# --8<-- [end:cross_attention]


# --8<-- [start:alignment]
@torch.no_grad()
def cross_attention_weights(
    model: Transformer,
    src: Tensor,
    tgt_in: Tensor,
    src_key_padding_mask: Tensor | None = None,
    *,
    layer: int = -1,
) -> Tensor:
    """Cross-attention weights ``(B, h, T, S)`` of one decoder layer of ``model`` (the "alignment"):
    row ``t`` says how much target position ``t`` reads from each source position.

    Runs the teacher-forced pass once and recomputes the chosen layer's cross-attention from its own
    inputs with ``need_weights=True``. Call ``model.eval()`` first if the model has dropout.
    """
    layers = model.decoder.layers
    if not -len(layers) <= layer < len(layers):
        raise ValueError(f"layer={layer} is out of range for a decoder with {len(layers)} layers")
    attn = layers[layer].cross_attn
    captured: list[Tensor] = []

    def hook(module, args, kwargs, output):  # recompute with weights; .forward bypasses this hook
        kwargs = {**kwargs, "need_weights": True, "average_attn_weights": False}
        captured.append(module.forward(*args, **kwargs)[1])

    handle = attn.register_forward_hook(hook, with_kwargs=True)
    try:
        model(src, tgt_in, src_key_padding_mask=src_key_padding_mask)
    finally:
        handle.remove()
    return captured[0]


# --8<-- [end:alignment]


if __name__ == "__main__":
    torch.manual_seed(0)
    mha = MultiHeadAttention(8, 2, dtype=torch.float64)
    x, y = torch.randn(1, 5, 8, dtype=torch.float64), torch.randn(1, 3, 8, dtype=torch.float64)
    pad = torch.tensor([[False, False, False, False, True]])  # the last source position is padding
    for name, (out, w) in {
        "global self-attention": global_self_attention(mha, x, pad, need_weights=True),
        "causal self-attention": causal_self_attention(mha, y, need_weights=True),
        "cross-attention": cross_attention(mha, y, x, pad, need_weights=True),
    }.items():
        print(f"{name:22s} output {tuple(out.shape)}  weights (B, h, n_q, n_k) = {tuple(w.shape)}")
    print("cross-attention weights of head 0 (padded source column = 0):\n", w[0, 0].detach().round(decimals=3))
