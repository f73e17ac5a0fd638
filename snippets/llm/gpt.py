"""A GPT-style decoder-only causal language model with KV-cached generation.

Reference: Radford et al. 2018, "Improving Language Understanding by Generative Pre-Training" (GPT),
§3.1; Radford et al. 2019 (GPT-2: pre-LN blocks, final LayerNorm); d2l.ai §11.9.
Training minimises ``L = -Σ_t log P(x_t | x_<t)``: inputs ``x[:-1]``, targets ``x[1:]``.
Blocks are pre-LN ``x + Attn(LN(x))``, ``x + FFN(LN(x))`` with causal grouped-query attention; position
embeddings are learned; the output projection is tied to the token embedding by default.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from snippets.llm.gqa import GroupedQueryAttention
from snippets.llm.kv_cache import KVCache, generate
from snippets.transformer.ffn import PositionwiseFFN

__all__ = ["DecoderBlock", "TinyGPT", "lm_loss", "random_windows", "train_lm", "benchmark_generation"]


# --8<-- [start:block]
class DecoderBlock(nn.Module):
    """Pre-LN decoder block without cross-attention: ``x + Attn(LN(x))`` then ``x + FFN(LN(x))``."""

    def __init__(self, d_model: int, num_heads: int, num_kv_heads: int, d_ff: int, **kw) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model, **kw)
        self.attn = GroupedQueryAttention(d_model, num_heads, num_kv_heads, **kw)
        self.ln2 = nn.LayerNorm(d_model, **kw)
        self.ffn = PositionwiseFFN(d_model, d_ff, activation="gelu", **kw)

    def forward(self, x: Tensor, cache: KVCache | None = None) -> Tensor:
        """``x: (B, n, d_model)``; causal self-attention over the cache (if any) plus ``x``."""
        x = x + self.attn(self.ln1(x), cache=cache, is_causal=True)
        return x + self.ffn(self.ln2(x))
# --8<-- [end:block]


class TinyGPT(nn.Module):
    """Token + learned position embedding → ``num_layers`` × :class:`DecoderBlock` → LN → logits.

    ``forward(ids: (B, n), caches=None) -> logits (B, n, vocab_size)``. With ``caches`` (one
    :class:`KVCache` per layer, from :meth:`new_caches`) the ids are the *next* positions after
    the cached ones. ``num_kv_heads=None`` means multi-head attention (``= num_heads``).
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        num_layers: int,
        num_heads: int,
        num_kv_heads: int | None = None,
        max_len: int = 256,
        d_ff: int | None = None,
        *,
        tie_weights: bool = True,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("num_layers", num_layers), ("max_len", max_len)):
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {name}={value}")
        kw = {"device": device, "dtype": dtype}
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        self.max_len = max_len
        self.tok_emb = nn.Embedding(vocab_size, d_model, **kw)
        self.pos_emb = nn.Embedding(max_len, d_model, **kw)
        self.blocks = nn.ModuleList(
            DecoderBlock(d_model, num_heads, num_kv_heads, d_ff or 4 * d_model, **kw)
            for _ in range(num_layers)
        )
        self.ln_f = nn.LayerNorm(d_model, **kw)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False, **kw)
        self.apply(self._init_weights)
        if tie_weights:
            self.lm_head.weight = self.tok_emb.weight  # one (vocab, d_model) matrix, used twice

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        """GPT-2 initialisation: N(0, 0.02) weights, zero biases — the first loss is ≈ log(vocab)."""
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    # --8<-- [start:forward]
    def forward(self, ids: Tensor, caches: list[KVCache] | None = None) -> Tensor:
        """``ids: (B, n)`` int64 → logits ``(B, n, vocab_size)``; position ``start + i`` for token
        ``i``, where ``start`` is the number of positions already in ``caches`` (0 without)."""
        return self.lm_head(self.features(ids, caches))

    def features(self, ids: Tensor, caches: list[KVCache] | None = None) -> Tensor:
        """The final hidden states ``(B, n, d_model)`` (after the last LayerNorm), before ``lm_head``."""
        start = caches[0].length if caches else 0
        if ids.dim() != 2 or start + ids.size(1) > self.max_len:
            raise ValueError(
                f"ids must be (B, n) with {start} cached + n <= max_len={self.max_len}, "
                f"got {tuple(ids.shape)}"
            )
        if caches is not None and len(caches) != len(self.blocks):
            raise ValueError(f"need one cache per layer: {len(self.blocks)} layers, got {len(caches)} caches")
        pos = torch.arange(start, start + ids.size(1), device=ids.device)
        x = self.tok_emb(ids) + self.pos_emb(pos)  # (B, n, d_model)
        for i, block in enumerate(self.blocks):
            x = block(x, caches[i] if caches else None)
        return self.ln_f(x)
    # --8<-- [end:forward]

    def new_caches(self, batch_size: int, max_len: int | None = None) -> list[KVCache]:
        """One empty :class:`KVCache` per layer (default length: the model's ``max_len``)."""
        return [b.attn.new_cache(batch_size, max_len or self.max_len) for b in self.blocks]

    # --8<-- [start:generate]
    @torch.no_grad()
    def generate(
        self,
        prompt: Tensor,
        max_new_tokens: int,
        use_cache: bool = True,
        *,
        temperature: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Append ``max_new_tokens`` tokens to ``prompt: (B, n0)``; returns ``(B, n0 + max_new_tokens)``.

        ``temperature=0`` is greedy (argmax); otherwise sample from ``softmax(logits / temperature)``.
        Without the cache every step re-runs the whole sequence (O(t) tokens per step); with it a
        step runs one token and reads the cached K/V of the prefix.
        """
        return generate(self, prompt, max_new_tokens, use_cache, temperature=temperature, generator=generator)
    # --8<-- [end:generate]


# --8<-- [start:loss]
def lm_loss(logits: Tensor, ids: Tensor) -> Tensor:
    """Mean next-token cross-entropy: position ``t`` predicts ``ids[:, t + 1]``.

    ``logits: (B, n, V)`` from ``model(ids)``, ``ids: (B, n)``; the last position has no target.
    """
    if logits.shape[:2] != ids.shape or ids.size(1) < 2:
        raise ValueError(
            f"logits {tuple(logits.shape)} must be (B, n, V) for ids (B, n), n >= 2; ids {tuple(ids.shape)}"
        )
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), ids[:, 1:].reshape(-1))
# --8<-- [end:loss]


# --8<-- [start:train]
def random_windows(data: Tensor, batch_size: int, length: int, generator: torch.Generator) -> Tensor:
    """``batch_size`` random contiguous windows ``(batch_size, length)`` of the 1-D token stream."""
    if data.dim() != 1 or data.numel() < length:
        raise ValueError(f"data must be 1-D with at least length={length} tokens, got {tuple(data.shape)}")
    starts = torch.randint(0, data.numel() - length + 1, (batch_size,), generator=generator)
    return data[starts.to(data.device)[:, None] + torch.arange(length, device=data.device)]


def train_lm(
    model: TinyGPT,
    data: Tensor,
    steps: int,
    *,
    batch_size: int = 32,
    seq_len: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
) -> list[float]:
    """Train ``model`` with AdamW on random windows of ``data: (N,)``; returns the loss per step."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    losses = []
    model.train()
    for _ in range(steps):
        ids = random_windows(data, batch_size, seq_len, gen)
        loss = lm_loss(model(ids), ids)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    return losses
# --8<-- [end:train]


def benchmark_generation(
    model: TinyGPT, new_tokens: int = 512, prompt_len: int = 16, batch_size: int = 1, seed: int = 0
) -> dict[str, float]:
    """Time greedy generation of ``new_tokens`` tokens with and without the KV cache (seconds).

    Not a test: the numbers depend on the machine. Also checks that both produce the same tokens.
    """
    dev = model.tok_emb.weight.device
    prompt = torch.randint(
        0,
        model.tok_emb.num_embeddings,
        (batch_size, prompt_len),
        generator=torch.Generator().manual_seed(seed),
    ).to(dev)
    model.eval()
    model.generate(prompt, 8, use_cache=True)  # warm-up (allocator, kernels)
    model.generate(prompt, 8, use_cache=False)
    result: dict[str, float] = {}
    outs = {}
    for use_cache in (True, False):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        outs[use_cache] = model.generate(prompt, new_tokens, use_cache=use_cache)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        result["cached_s" if use_cache else "uncached_s"] = time.perf_counter() - t0
    result["speedup"] = result["uncached_s"] / result["cached_s"]
    result["same_tokens"] = float(torch.equal(outs[True], outs[False]))
    return result


if __name__ == "__main__":
    from snippets.data.text import load_timemachine

    torch.manual_seed(0)
    ids, vocab = load_timemachine()
    model = TinyGPT(len(vocab), d_model=32, num_layers=1, num_heads=4, num_kv_heads=2, max_len=64)
    losses = train_lm(model, ids, steps=40, batch_size=16, seq_len=32, lr=1e-2)
    print(f"char LM loss {losses[0]:.2f} (log|V| = {math.log(len(vocab)):.2f}) -> {losses[-1]:.2f}, 40 steps")
    prompt = vocab.encode("the time ")[None]
    cached, uncached = model.generate(prompt, 30), model.generate(prompt, 30, use_cache=False)
    print("cached == uncached greedy tokens:", torch.equal(cached, uncached))
    print("sample:", repr(vocab.decode(cached[0])))
