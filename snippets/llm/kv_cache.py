"""The KV cache: keep every layer's keys and values so each decoding step computes only the new token.

Reference: Pope et al. 2022, "Efficiently Scaling Transformer Inference", §2–3 (the KV cache and its
memory); Ainslie et al. 2023, "GQA", §1 (decoding is memory-bandwidth bound). At step t a layer
appends one key and one value, ``K_{1:t} = [K_{1:t-1}; k_t]``, and attends with the new query to
the whole prefix: ``o_t = softmax(q_t K_{1:t}^T / sqrt(d)) V_{1:t}``.

Layout: ``(B, kv_heads, max_len, d_head)`` — the same ``(B, h, L, d)`` as the heads after
``split_heads``. The buffers are allocated once; :meth:`KVCache.append` writes the new slice in place
and returns *views* of the filled prefix (no copy of the history at any step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from snippets.attention.masking import causal_mask
from snippets.attention.sdpa import scaled_dot_product_attention

__all__ = [
    "KVCache",
    "kv_cache_bytes",
    "cached_causal_mask",
    "CachedLM",
    "decode_step",
    "generate",
    "StepTraffic",
    "trace_decode_step",
    "layer_reads",
]


# --8<-- [start:cache]
class KVCache:
    """Preallocated key/value buffers ``(batch_size, num_kv_heads, max_len, head_dim)`` of one layer.

    ``append(k, v)`` takes ``k, v: (batch_size, num_kv_heads, n_new, head_dim)``, copies them into
    positions ``length .. length + n_new - 1`` and returns ``(K, V)``, views ``(B, kv_heads, length,
    head_dim)`` of the buffers. Raises ``ValueError`` when the cache would overflow ``max_len``.
    """

    def __init__(
        self,
        batch_size: int,
        num_kv_heads: int,
        max_len: int,
        head_dim: int,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        sizes = {
            "batch_size": batch_size,
            "num_kv_heads": num_kv_heads,
            "max_len": max_len,
            "head_dim": head_dim,
        }
        for name, value in sizes.items():
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {name}={value}")
        shape = (batch_size, num_kv_heads, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)  # allocated once, written in place
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.length = 0  # number of positions filled so far

    @property
    def max_len(self) -> int:
        return self.k.size(2)

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write ``k, v`` after the cached prefix; return views of all ``length`` cached positions."""
        self._check(k, v)
        start, end = self.length, self.length + k.size(2)
        if end > self.max_len:
            raise ValueError(
                f"KV cache overflow: {self.length} cached + {k.size(2)} new positions "
                f"> max_len={self.max_len}"
            )
        self.k[:, :, start:end] = k  # write: only the new positions
        self.v[:, :, start:end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]  # read: views of the whole prefix, no copy

    def reset(self) -> None:
        """Forget the cached positions (the memory is kept and simply overwritten later)."""
        self.length = 0
    # --8<-- [end:cache]

    def _check(self, k: Tensor, v: Tensor) -> None:
        """Raise ``ValueError`` unless ``k`` and ``v`` fit the buffers (all dims but the length)."""
        want = (self.k.size(0), self.k.size(1), self.k.size(3))
        for name, t in (("k", k), ("v", v)):
            if t.dim() != 4 or (t.size(0), t.size(1), t.size(3)) != want:
                raise ValueError(
                    f"{name} must be (batch_size, num_kv_heads, n_new, head_dim) with "
                    f"(batch_size, num_kv_heads, head_dim)={want}, got {tuple(t.shape)}"
                )
            if t.dtype != self.k.dtype or t.device != self.k.device:
                raise ValueError(
                    f"{name} is ({t.dtype}, {t.device}) but the cache is ({self.k.dtype}, {self.k.device})"
                )
        if k.size(2) != v.size(2) or k.size(2) == 0:
            raise ValueError(f"k and v need the same positive n_new, got {k.size(2)} and {v.size(2)}")

    @property
    def nbytes(self) -> int:
        """Bytes held by the two buffers (the full ``max_len``, whether filled or not)."""
        return self.k.nbytes + self.v.nbytes


# --8<-- [start:bytes]
def kv_cache_bytes(
    num_layers: int,
    batch_size: int,
    num_kv_heads: int,
    seq_len: int,
    head_dim: int,
    dtype: torch.dtype = torch.float16,
) -> int:
    """Memory of a full KV cache: ``layers × 2 (K and V) × B × kv_heads × L × d_head × bytes``."""
    bytes_per_element = torch.empty((), dtype=dtype).element_size()
    return num_layers * 2 * batch_size * num_kv_heads * seq_len * head_dim * bytes_per_element
# --8<-- [end:bytes]


# --8<-- [start:mask]
def cached_causal_mask(n_q: int, n_k: int, *, device: torch.device | None = None) -> Tensor:
    """Causal mask ``(n_q, n_k)`` for ``n_q`` new queries after ``n_k - n_q`` cached positions.

    The queries are the *last* ``n_q`` positions, so the mask is the last ``n_q`` rows of the full
    ``(n_k, n_k)`` causal mask (aligned bottom-right): query ``i`` sees keys ``j <= i + (n_k - n_q)``.
    ``F.scaled_dot_product_attention(is_causal=True)`` aligns top-left, which is wrong when n_q < n_k.
    """
    if n_q <= 0 or n_q > n_k:
        raise ValueError(f"need 0 < n_q <= n_k: n_q={n_q} new queries, n_k={n_k} keys (cache + new)")
    return causal_mask(n_q, n_k, offset=n_k - n_q, device=device)  # offset = cached positions
# --8<-- [end:mask]


class CachedLM(Protocol):
    """What :func:`decode_step` and :func:`generate` need from a model (e.g. ``TinyGPT``)."""

    max_len: int

    def __call__(self, ids: Tensor, caches: list[KVCache] | None = None) -> Tensor:
        """``ids: (B, n)`` at positions ``caches[0].length ..`` → logits ``(B, n, vocab)``."""
        ...

    def new_caches(self, batch_size: int, max_len: int | None = None) -> list[KVCache]:
        """One empty :class:`KVCache` per layer."""
        ...


# --8<-- [start:decode]
@torch.no_grad()
def decode_step(model: CachedLM, tokens: Tensor, caches: list[KVCache]) -> Tensor:
    """Run ``tokens: (B, n)`` at positions ``length .. length + n - 1`` of ``caches`` (one per layer).

    Every layer appends the new positions' k, v to its cache and attends to the whole cached
    prefix; returns the logits ``(B, vocab)`` of the last new position. ``n > 1`` is a prefill.
    """
    lengths = {c.length for c in caches}
    if len(lengths) != 1:
        raise ValueError(f"all layers' caches must hold the same number of positions, got {sorted(lengths)}")
    return model(tokens, caches)[:, -1]


@torch.no_grad()
def generate(
    model: CachedLM,
    prompt: Tensor,
    max_new_tokens: int,
    use_cache: bool = True,
    *,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Append ``max_new_tokens`` tokens to ``prompt: (B, n0)``; returns ``(B, n0 + max_new_tokens)``.

    With the cache: one prefill of the prompt, then one token per step. Without it every step
    re-runs the whole sequence so far (``n0 + t`` tokens at step ``t``). ``temperature=0`` is
    greedy; otherwise tokens are sampled from ``softmax(logits / temperature)``.
    """
    if max_new_tokens < 0 or prompt.size(1) + max_new_tokens > model.max_len:
        raise ValueError(
            f"prompt length {prompt.size(1)} + max_new_tokens={max_new_tokens} must be <= max_len={model.max_len}"
        )
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    caches = model.new_caches(prompt.size(0), prompt.size(1) + max_new_tokens) if use_cache else None
    seq, step_input = prompt, prompt  # with a cache the first step (prefill) runs the whole prompt
    for _ in range(max_new_tokens):
        logits = decode_step(model, step_input, caches) if caches is not None else model(seq)[:, -1]  # (B, V)
        nxt = _pick(logits, temperature, generator)  # (B, 1)
        seq = torch.cat([seq, nxt], dim=1)
        step_input = nxt  # the cache holds everything before it
    return seq
# --8<-- [end:decode]


def _pick(logits: Tensor, temperature: float, generator: torch.Generator | None) -> Tensor:
    """Greedy (``temperature == 0``) or sampled next token ``(B, 1)`` from logits ``(B, V)``."""
    if temperature == 0.0:
        return logits.argmax(dim=-1, keepdim=True)
    probs = torch.softmax(logits.double() / temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)


@dataclass(frozen=True)
class StepTraffic:
    """What one attention step touched in a layer's cache: positions and bytes."""

    written: list[int]  # cache positions whose K or V changed
    read_k: list[int]  # positions whose key the output reads (poisoning it poisons the output)
    read_v: list[int]  # positions whose value the output reads
    bytes_written: int
    bytes_read: int


# --8<-- [start:traffic]
def trace_decode_step(cache: KVCache, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, StepTraffic]:
    """Run one cached attention step and report what it wrote to and read from ``cache``.

    ``q: (B, kv_heads, n_new, d)`` (one query head per KV head), ``k, v`` as in
    :meth:`KVCache.append`. Writes are found by comparing the buffers before and after; reads by
    poisoning: a cached key (value) is read if writing NaN there turns the output into NaN.
    """
    k_before, v_before = cache.k.clone(), cache.v.clone()
    keys, values = cache.append(k, v)  # views of positions 0 .. length-1
    mask = cached_causal_mask(q.size(2), keys.size(2), device=q.device)
    out = scaled_dot_product_attention(q, keys, values, attn_mask=mask)
    changed = (_differs(cache.k, k_before) | _differs(cache.v, v_before)).any(dim=(0, 1, 3))
    read: dict[str, list[int]] = {"k": [], "v": []}
    for j in range(keys.size(2)):  # probe one cached position at a time (the loop is the lesson)
        for name in read:
            poisoned = {"k": keys.clone(), "v": values.clone()}
            poisoned[name][:, :, j] = float("nan")
            if scaled_dot_product_attention(q, poisoned["k"], poisoned["v"], attn_mask=mask).isnan().any():
                read[name].append(j)
    size = k.element_size()
    return out, StepTraffic(
        written=torch.nonzero(changed).flatten().tolist(),
        read_k=read["k"],
        read_v=read["v"],
        bytes_written=(k.numel() + v.numel()) * size,
        bytes_read=(keys.numel() + values.numel()) * size,
    )
# --8<-- [end:traffic]


# --8<-- [start:layer_reads]
@torch.no_grad()
def layer_reads(model: CachedLM, caches: list[KVCache], tokens: Tensor) -> list[dict[str, list[int]]]:
    """Which cached positions the next :func:`decode_step` reads, per layer, for K and for V.

    Probes one cached entry at a time: write NaN into layer ``l``'s K (or V) at position ``j``,
    run the step, and call the entry *read* if the logits turn NaN. The caches are left as found.
    Returns ``[{"k": [...], "v": [...]} for each layer]``.
    """
    length = caches[0].length
    reads: list[dict[str, list[int]]] = []
    for cache in caches:  # the loops are the lesson: every layer, both buffers, every position
        found: dict[str, list[int]] = {"k": [], "v": []}
        for name in found:
            buffer = getattr(cache, name)
            for j in range(length):
                saved = {id(c): (c.k.clone(), c.v.clone()) for c in caches}
                buffer[:, :, j] = float("nan")
                logits = decode_step(model, tokens, caches)  # also appends the new k, v ...
                for c in caches:  # ... so put every cache back as it was
                    c.k.copy_(saved[id(c)][0])
                    c.v.copy_(saved[id(c)][1])
                    c.length = length
                if logits.isnan().any():
                    found[name].append(j)
        reads.append(found)
    return reads
# --8<-- [end:layer_reads]


def _differs(a: Tensor, b: Tensor) -> Tensor:
    """Elementwise ``a != b``, where NaN equals NaN (so a poisoned, untouched slot is unchanged)."""
    return (a != b) & ~(a.isnan() & b.isnan())


if __name__ == "__main__":
    torch.manual_seed(0)
    cache = KVCache(batch_size=1, num_kv_heads=2, max_len=8, head_dim=4)
    for t in range(4):
        q, k, v = (torch.randn(1, 2, 1, 4) for _ in range(3))
        _, traffic = trace_decode_step(cache, q, k, v)
        print(
            f"step {t}: wrote position {traffic.written}, read K{traffic.read_k} V{traffic.read_v}, "
            f"{traffic.bytes_written} B written, {traffic.bytes_read} B read"
        )
    keys, _ = cache.append(torch.randn(1, 2, 1, 4), torch.randn(1, 2, 1, 4))
    print("returned K is a view of the buffer:", keys._base is cache.k, keys.data_ptr() == cache.k.data_ptr())
    from snippets.llm.gpt import TinyGPT  # imported here: gpt.py itself imports this module

    model = TinyGPT(vocab_size=10, d_model=16, num_layers=2, num_heads=4, num_kv_heads=2, max_len=16).eval()
    caches = model.new_caches(1)
    decode_step(model, torch.tensor([[1, 2, 3, 4]]), caches)  # prefill 4 positions
    for layer, found in enumerate(layer_reads(model, caches, torch.tensor([[5]]))):
        print(f"next step, layer {layer}: reads K at {found['k']}, V at {found['v']}")
    gib = kv_cache_bytes(32, 1, 8, 4096, 128, torch.float16) / 2**30
    print(f"7B-like model (32 layers, 8 KV heads, d_head 128, 4096 tokens, fp16): {gib:.2f} GiB per sequence")
