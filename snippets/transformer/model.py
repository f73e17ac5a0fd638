"""The encoder–decoder Transformer from scratch: embeddings, positional encoding, N× layers, output layer.

Reference: Vaswani et al. 2017, "Attention Is All You Need", §3 (Figure 1) and Table 3 (base model:
N = 6, d_model = 512, h = 8, d_ff = 2048, P_drop = 0.1); d2l.ai §11.7. :class:`Encoder` and
:class:`Decoder` mirror ``nn.TransformerEncoder`` / ``nn.TransformerDecoder`` (including the final
LayerNorm that ``nn.Transformer`` puts on both stacks); :class:`Transformer` adds what
``nn.Transformer`` leaves out: token embeddings scaled by sqrt(d_model), the sinusoidal positional
encoding and the output projection to target-vocabulary logits.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from snippets.attention.positional import PositionalEncoding
from snippets.transformer.embedding import TokenEmbedding
from snippets.transformer.layers import DecoderLayer, EncoderLayer

__all__ = ["Encoder", "Decoder", "Transformer", "count_transformer_params", "ffn_grad_norms"]


# --8<-- [start:encoder]
class Encoder(nn.Module):
    """``num_layers`` × :class:`EncoderLayer`, then an optional final LayerNorm (``final_norm``).

    Used alone it is BERT's body; with ``is_causal=True`` it is a GPT-style "decoder-only" stack
    (causal self-attention, no cross-attention). Layer arguments are those of :class:`EncoderLayer`.
    """

    def __init__(self, num_layers: int, d_model: int, nhead: int, *, final_norm: bool = True, **layer_kw) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got num_layers={num_layers}")
        kw = {k: layer_kw[k] for k in ("device", "dtype", "bias") if k in layer_kw}
        eps = layer_kw.get("layer_norm_eps", 1e-5)
        self.layers = nn.ModuleList(EncoderLayer(d_model, nhead, **layer_kw) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model, eps=eps, **kw) if final_norm else None

    def forward(
        self,
        src: Tensor,
        mask: Tensor | None = None,
        src_key_padding_mask: Tensor | None = None,
        is_causal: bool = False,
    ) -> Tensor:
        """``src: (B, S, d_model)`` → ``memory: (B, S, d_model)``."""
        x = src
        for layer in self.layers:
            x = layer(x, mask, src_key_padding_mask, is_causal)
        return x if self.norm is None else self.norm(x)

    # --8<-- [end:encoder]

    @torch.no_grad()
    def load_from_torch(self, ref: nn.TransformerEncoder) -> Encoder:
        """Copy the weights of a ``nn.TransformerEncoder`` with as many layers into this stack."""
        _load_stack(self, ref)
        return self


# --8<-- [start:decoder]
class Decoder(nn.Module):
    """``num_layers`` × :class:`DecoderLayer`, then an optional final LayerNorm (``final_norm``)."""

    def __init__(self, num_layers: int, d_model: int, nhead: int, *, final_norm: bool = True, **layer_kw) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got num_layers={num_layers}")
        kw = {k: layer_kw[k] for k in ("device", "dtype", "bias") if k in layer_kw}
        eps = layer_kw.get("layer_norm_eps", 1e-5)
        self.layers = nn.ModuleList(DecoderLayer(d_model, nhead, **layer_kw) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model, eps=eps, **kw) if final_norm else None

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
        x = tgt
        for layer in self.layers:  # every layer attends to the same (final) encoder output
            x = layer(x, memory, tgt_mask, memory_mask, tgt_key_padding_mask, memory_key_padding_mask, tgt_is_causal)
        return x if self.norm is None else self.norm(x)

    # --8<-- [end:decoder]

    @torch.no_grad()
    def load_from_torch(self, ref: nn.TransformerDecoder) -> Decoder:
        """Copy the weights of a ``nn.TransformerDecoder`` with as many layers into this stack."""
        _load_stack(self, ref)
        return self


def _load_stack(ours: Encoder | Decoder, ref: nn.TransformerEncoder | nn.TransformerDecoder) -> None:
    if len(ours.layers) != len(ref.layers):
        raise ValueError(f"layer count differs: ours {len(ours.layers)}, theirs {len(ref.layers)}")
    if (ours.norm is None) != (ref.norm is None):
        raise ValueError(f"final norm differs: ours {ours.norm is not None}, theirs {ref.norm is not None}")
    for a, b in zip(ours.layers, ref.layers):
        a.load_from_torch(b)
    if ours.norm is not None:
        ours.norm.load_state_dict(ref.norm.state_dict())


class Transformer(nn.Module):
    """Encoder–decoder Transformer: ``logits = Linear(Decoder(Emb(tgt_in), Encoder(Emb(src))))``.

    ``forward(src: (B, S), tgt_in: (B, T))`` → ``logits: (B, T, tgt_vocab)``; ``tgt_in`` is the
    target shifted right (``<bos> y_1 … y_{T-1}``, teacher forcing). Embeddings are
    ``sqrt(d_model) * W[ids] + PE`` with the sinusoidal table of ``max_len`` rows. The decoder's
    causal mask is built here from the target length — callers only pass padding masks
    (``(B, L)`` boolean, True = padding, as in ``nn.Transformer``). ``tie_output`` shares the target
    embedding with the output projection; ``share_embeddings`` also shares it with the source
    embedding (one joint vocabulary, as in the paper).
    """

    def __init__(
        self,
        src_vocab: int,
        tgt_vocab: int,
        d_model: int = 512,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        *,
        activation: str = "relu",
        norm_first: bool = False,
        layer_norm_eps: float = 1e-5,
        final_norm: bool = True,
        max_len: int = 512,
        tie_output: bool = False,
        share_embeddings: bool = False,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if share_embeddings and src_vocab != tgt_vocab:
            raise ValueError(f"share_embeddings needs src_vocab == tgt_vocab, got {src_vocab} != {tgt_vocab}")
        kw = {"device": device, "dtype": dtype}
        layer_kw = {
            "dim_feedforward": dim_feedforward,
            "dropout": dropout,
            "activation": activation,
            "layer_norm_eps": layer_norm_eps,
            "norm_first": norm_first,
            "final_norm": final_norm,
            **kw,
        }
        self.d_model, self.max_len = d_model, max_len
        self.src_embed = TokenEmbedding(src_vocab, d_model, **kw)
        self.tgt_embed = self.src_embed if share_embeddings else TokenEmbedding(tgt_vocab, d_model, **kw)
        pe_dtype = dtype if dtype is not None else torch.get_default_dtype()
        self.pos = PositionalEncoding(d_model, max_len, dropout, dtype=pe_dtype, device=device)
        self.encoder = Encoder(num_encoder_layers, d_model, nhead, **layer_kw)
        self.decoder = Decoder(num_decoder_layers, d_model, nhead, **layer_kw)
        self.output = nn.Linear(d_model, tgt_vocab, **kw)
        if tie_output:
            self.output.weight = self.tgt_embed.weight  # one matrix: V x d used twice

    # --8<-- [start:forward]
    def encode(self, src: Tensor, src_key_padding_mask: Tensor | None = None) -> Tensor:
        """``src: (B, S)`` token ids → ``memory: (B, S, d_model)`` (all positions in parallel)."""
        self._check_ids("src", src, self.src_embed.weight.size(0), src_key_padding_mask)
        return self.encoder(self.pos(self.src_embed(src)), src_key_padding_mask=src_key_padding_mask)

    def decode(
        self,
        tgt_in: Tensor,
        memory: Tensor,
        memory_key_padding_mask: Tensor | None = None,
        tgt_key_padding_mask: Tensor | None = None,
        *,
        causal: bool = True,
    ) -> Tensor:
        """``tgt_in: (B, T)`` ids + ``memory: (B, S, d_model)`` → logits ``(B, T, tgt_vocab)``.

        Position ``t`` sees ``tgt_in[:, :t+1]`` only (causal mask) and every unpadded source position.
        ``causal=False`` exists only to show what goes wrong without the mask (positions see the future).
        """
        self._check_ids("tgt_in", tgt_in, self.tgt_embed.weight.size(0), tgt_key_padding_mask)
        if memory.dim() != 3 or memory.size(0) != tgt_in.size(0):
            raise ValueError(
                f"memory {tuple(memory.shape)} must be (B, S, d_model) with B = tgt_in batch {tgt_in.size(0)}"
            )
        if memory_key_padding_mask is not None and memory_key_padding_mask.shape != memory.shape[:2]:
            raise ValueError(
                f"memory_key_padding_mask must be (B, S) = {tuple(memory.shape[:2])}, "
                f"got {tuple(memory_key_padding_mask.shape)}"
            )
        y = self.pos(self.tgt_embed(tgt_in))
        h = self.decoder(
            y,
            memory,
            tgt_key_padding_mask=tgt_key_padding_mask,
            memory_key_padding_mask=memory_key_padding_mask,
            tgt_is_causal=causal,  # the causal mask depends only on T: built inside, every call
        )
        return self.output(h)

    def forward(
        self,
        src: Tensor,
        tgt_in: Tensor,
        src_key_padding_mask: Tensor | None = None,
        tgt_key_padding_mask: Tensor | None = None,
    ) -> Tensor:
        """Teacher-forced logits ``(B, T, tgt_vocab)`` for every target position in one pass."""
        if src.dim() == 2 and tgt_in.dim() == 2 and src.size(0) != tgt_in.size(0):
            raise ValueError(f"src batch {src.size(0)} != tgt_in batch {tgt_in.size(0)}")
        memory = self.encode(src, src_key_padding_mask)
        return self.decode(tgt_in, memory, src_key_padding_mask, tgt_key_padding_mask)

    # --8<-- [end:forward]

    def _check_ids(self, name: str, ids: Tensor, vocab: int, pad: Tensor | None) -> None:
        if ids.dim() != 2 or ids.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"{name} must be integer token ids (B, L), got {ids.dtype} {tuple(ids.shape)}")
        if not 0 < ids.size(1) <= self.max_len:
            raise ValueError(
                f"{name} length {ids.size(1)} must be in [1, max_len={self.max_len}] (rows of the positional table)"
            )
        if int(ids.min()) < 0 or int(ids.max()) >= vocab:
            raise ValueError(f"{name} ids must lie in [0, {vocab}), got [{int(ids.min())}, {int(ids.max())}]")
        if pad is not None and (pad.shape != ids.shape or pad.dtype != torch.bool):
            raise ValueError(
                f"{name} key padding mask must be bool (B, L) = {tuple(ids.shape)} (True = padding), "
                f"got {pad.dtype} {tuple(pad.shape)}"
            )


# --8<-- [start:count]
def count_transformer_params(
    num_encoder_layers: int,
    num_decoder_layers: int,
    d_model: int,
    dim_feedforward: int,
    src_vocab: int = 0,
    tgt_vocab: int = 0,
    *,
    final_norm: bool = True,
    tie_output: bool = False,
    share_embeddings: bool = False,
) -> int:
    """Closed-form parameter count (all biases on). ``src_vocab = tgt_vocab = 0``: the stacks only,
    i.e. ``nn.Transformer``. Positional encodings are sinusoidal: no parameters."""
    d, f = d_model, dim_feedforward
    mha = 4 * d * d + 4 * d  # W_Q, W_K, W_V, W_O and their biases
    ffn = 2 * d * f + f + d  # W_1 (d x f) + b_1, W_2 (f x d) + b_2
    ln = 2 * d  # gamma, beta
    enc_layer = mha + ffn + 2 * ln
    dec_layer = 2 * mha + ffn + 3 * ln  # + cross-attention and its LayerNorm
    total = num_encoder_layers * enc_layer + num_decoder_layers * dec_layer + (2 * ln if final_norm else 0)
    if src_vocab or tgt_vocab:
        embeddings = tgt_vocab * d if share_embeddings else (src_vocab + tgt_vocab) * d
        output = tgt_vocab + (0 if tie_output else tgt_vocab * d)  # the bias is never shared
        total += embeddings + output
    return total


# --8<-- [end:count]


# --8<-- [start:grad_norms]
def ffn_grad_norms(
    norm_first: bool,
    num_layers: int,
    d_model: int = 32,
    nhead: int = 4,
    *,
    batch: int = 8,
    length: int = 16,
    seed: int = 0,
) -> list[float]:
    """Frobenius norm of ``dLoss/dW_2`` (each layer's second FFN matrix) at initialisation, layer 1 first.

    A freshly initialised :class:`Encoder` (final LayerNorm on, ``d_ff = 4 d``) maps random inputs
    ``(batch, length, d_model)``; the loss is the mean squared error to a random target. Xiong et al.
    2020 (Theorem 1): for post-LN the gradient of the last layers does not shrink with depth, for
    pre-LN it does (their bound scales as ``1 / sqrt(num_layers)``) — why post-LN needs a warm-up.
    """
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    f64 = torch.float64
    enc = Encoder(
        num_layers, d_model, nhead, dim_feedforward=4 * d_model, dropout=0.0, norm_first=norm_first, dtype=f64
    )
    x = torch.randn(batch, length, d_model, generator=g, dtype=f64)
    target = torch.randn(batch, length, d_model, generator=g, dtype=f64)
    torch.nn.functional.mse_loss(enc(x), target).backward()
    return [layer.ffn.linear2.weight.grad.norm().item() for layer in enc.layers]


# --8<-- [end:grad_norms]


if __name__ == "__main__":
    torch.manual_seed(0)
    base = count_transformer_params(6, 6, 512, 2048)
    counted = sum(p.numel() for p in nn.Transformer(batch_first=True, device="meta").parameters())
    print(f"nn.Transformer() base: {base:,} parameters (closed form) vs {counted:,} (counted)")
    shared = count_transformer_params(6, 6, 512, 2048, 37000, 37000, share_embeddings=True, tie_output=True)
    print(f"+ one shared 37k-token embedding / output matrix: {shared / 1e6:.1f} M")
    model = Transformer(11, 13, d_model=16, nhead=2, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=32)
    logits = model(torch.randint(0, 11, (2, 5)), torch.randint(0, 13, (2, 4)))
    print("tiny model logits:", tuple(logits.shape), "=(B, T, tgt_vocab)")
