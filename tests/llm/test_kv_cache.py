"""KVCache: preallocated buffers, views not copies, the memory formula and the offset causal mask."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention.bias import causal_lower_right

from snippets.attention.masking import causal_mask
from snippets.attention.sdpa import scaled_dot_product_attention
from snippets.llm.gpt import TinyGPT
from snippets.llm.kv_cache import (
    KVCache,
    cached_causal_mask,
    decode_step,
    generate,
    kv_cache_bytes,
    layer_reads,
    trace_decode_step,
)
from tests.conftest import assert_close

F64 = torch.float64


def _chunks(seed: int, b: int, g: int, d: int, sizes: list[int], device: torch.device):
    gen = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(b, g, n, d, generator=gen, dtype=F64).to(device),
            torch.randn(b, g, n, d, generator=gen, dtype=F64).to(device),
        )
        for n in sizes
    ]


@pytest.mark.parametrize("seed", range(3))
def test_matches_torch_cat_reference(seed: int, device: torch.device) -> None:
    """The views equal the naive cache ``K = torch.cat([K, k], dim=2)`` after every append."""
    sizes = [5, 1, 1, 3, 1]
    cache = KVCache(2, 3, sum(sizes) + 2, 4, dtype=F64, device=device)
    ref_k = ref_v = None
    for k, v in _chunks(seed, 2, 3, 4, sizes, device):
        keys, values = cache.append(k, v)
        ref_k = k if ref_k is None else torch.cat([ref_k, k], dim=2)
        ref_v = v if ref_v is None else torch.cat([ref_v, v], dim=2)
        assert_close(keys, ref_k)
        assert_close(values, ref_v)
    assert cache.length == sum(sizes)


def test_append_returns_views_of_one_preallocated_buffer(device: torch.device) -> None:
    cache = KVCache(1, 2, 6, 4, dtype=F64, device=device)
    k_ptr, v_ptr = cache.k.data_ptr(), cache.v.data_ptr()
    for t, (k, v) in enumerate(_chunks(0, 1, 2, 4, [1] * 6, device), start=1):
        keys, values = cache.append(k, v)
        assert keys._base is cache.k and values._base is cache.v  # views, not copies
        assert keys.data_ptr() == k_ptr and values.data_ptr() == v_ptr  # same memory every step
        assert keys.shape == (1, 2, t, 4)
    assert cache.k.data_ptr() == k_ptr  # the buffer itself was never reallocated
    cache.k[0, 0, 0, 0] = 123.0  # a write to the buffer is visible through the view: shared memory
    assert keys[0, 0, 0, 0] == 123.0
    # the naive cache allocates a new tensor (and copies the whole prefix) at every step
    grown = torch.cat([keys, k], dim=2)
    assert grown.data_ptr() != k_ptr and grown._base is None


def test_reset_reuses_the_memory(device: torch.device) -> None:
    cache = KVCache(1, 1, 4, 2, dtype=F64, device=device)
    (k1, v1), (k2, v2) = _chunks(1, 1, 1, 2, [3, 2], device)
    cache.append(k1, v1)
    ptr = cache.k.data_ptr()
    cache.reset()
    keys, _ = cache.append(k2, v2)
    assert cache.length == 2 and keys.data_ptr() == ptr
    assert_close(keys, k2)


def test_overflow_and_bad_inputs_raise(device: torch.device) -> None:
    cache = KVCache(2, 2, 4, 3, dtype=F64, device=device)
    k = torch.zeros(2, 2, 3, 3, dtype=F64, device=device)
    cache.append(k, k)
    with pytest.raises(ValueError, match=r"overflow: 3 cached \+ 2 new positions > max_len=4"):
        cache.append(k[:, :, :2], k[:, :, :2])
    assert cache.length == 3  # a failed append leaves the cache unchanged
    with pytest.raises(ValueError, match=r"k must be \(batch_size, num_kv_heads, n_new, head_dim\)"):
        cache.append(torch.zeros(2, 3, 1, 3, dtype=F64, device=device), k[:, :, :1])
    with pytest.raises(ValueError, match="v is"):
        cache.append(k[:, :, :1], k[:, :, :1].float())
    with pytest.raises(ValueError, match="same positive n_new"):
        cache.append(k[:, :, :1], k[:, :, :0])
    with pytest.raises(ValueError, match="max_len must be positive, got max_len=0"):
        KVCache(1, 1, 0, 4)


def test_formula_matches_tensor_bytes() -> None:
    """``layers × 2 × B × kv_heads × L × d_head × bytes`` equals the bytes of the real buffers."""
    for layers, b, g, length, d, dtype in [
        (3, 2, 4, 16, 8, torch.float16),
        (2, 1, 1, 7, 5, F64),
        (4, 3, 2, 9, 16, torch.bfloat16),
    ]:
        caches = [KVCache(b, g, length, d, dtype=dtype) for _ in range(layers)]
        assert sum(c.nbytes for c in caches) == kv_cache_bytes(layers, b, g, length, d, dtype)


def test_seven_b_like_numbers() -> None:
    """32 layers, d_head 128, 4096 tokens, fp16: GQA with 8 KV heads is 1/4 of MHA's 32 heads."""
    gqa = kv_cache_bytes(32, 1, 8, 4096, 128, torch.float16)
    mha = kv_cache_bytes(32, 1, 32, 4096, 128, torch.float16)
    assert gqa == 512 * 2**20  # 0.5 GiB per sequence
    assert mha == 2 * 2**30  # 2 GiB per sequence
    assert kv_cache_bytes(1, 1, 8, 1, 128, torch.float16) * 32 == 128 * 2**10  # 128 KiB per token


@pytest.mark.parametrize("n_q,n_k", [(1, 1), (1, 7), (3, 7), (5, 5)])
def test_cached_causal_mask_is_bottom_right(n_q: int, n_k: int, device: torch.device) -> None:
    mask = cached_causal_mask(n_q, n_k, device=device)
    brute = torch.tensor([[j <= i + n_k - n_q for j in range(n_k)] for i in range(n_q)], device=device)
    assert torch.equal(mask, brute)
    if n_q == n_k:  # without cached positions it is the ordinary causal mask
        assert torch.equal(mask, causal_mask(n_q, device=device))
    gen = torch.Generator().manual_seed(n_q * 10 + n_k)
    q, k, v = (torch.randn(2, 3, n, 4, generator=gen, dtype=F64).to(device) for n in (n_q, n_k, n_k))
    ours = scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert_close(ours, F.scaled_dot_product_attention(q, k, v, attn_mask=causal_lower_right(n_q, n_k)))
    with pytest.raises(ValueError, match="need 0 < n_q <= n_k: n_q=2 new queries, n_k=1 keys"):
        cached_causal_mask(2, 1)


def test_prefill_chunk_needs_the_offset_mask_not_is_causal(device: torch.device) -> None:
    """A chunk of n_q < n_k queries: the offset mask reproduces the full causal rows,
    ``is_causal=True`` (top-left aligned) does not."""
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 8, 4, generator=gen, dtype=F64).to(device) for _ in range(3))
    full = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (1, 2, 8, 4)
    chunk = q[:, :, 5:]  # the last 3 queries, after 5 cached positions
    right = scaled_dot_product_attention(chunk, k, v, attn_mask=cached_causal_mask(3, 8, device=device))
    wrong = F.scaled_dot_product_attention(chunk, k, v, is_causal=True)
    assert_close(right, full[:, :, 5:])
    assert (wrong - full[:, :, 5:]).abs().max() > 0.1


def test_incremental_attention_equals_full_causal_attention(device: torch.device) -> None:
    """o_t = softmax(q_t K_{1:t}^T / sqrt(d)) V_{1:t} with the cache, at every step t."""
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 3, 6, 4, generator=gen, dtype=F64).to(device) for _ in range(3))
    full = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    cache = KVCache(2, 3, 6, 4, dtype=F64, device=device)
    for t in range(6):
        keys, values = cache.append(k[:, :, t : t + 1], v[:, :, t : t + 1])
        step = scaled_dot_product_attention(q[:, :, t : t + 1], keys, values)  # one query: no mask needed
        assert_close(step, full[:, :, t : t + 1])


def test_every_step_writes_one_position_and_reads_the_whole_prefix(device: torch.device) -> None:
    """Open question 001 L220–221: at every step both K and V of the whole prefix are read,
    the new k, v are written once, and nothing beyond the prefix is touched."""
    cache = KVCache(1, 2, 8, 4, dtype=F64, device=device)
    cache.k[:, :, 5:] = float("nan")  # poison the unused tail: it must never be read
    cache.v[:, :, 5:] = float("nan")
    gen = torch.Generator().manual_seed(0)
    for t in range(5):
        q, k, v = (torch.randn(1, 2, 1, 4, generator=gen, dtype=F64).to(device) for _ in range(3))
        out, traffic = trace_decode_step(cache, q, k, v)
        assert traffic.written == [t]
        assert traffic.read_k == traffic.read_v == list(range(t + 1))
        assert traffic.bytes_written == 2 * 2 * 4 * 8  # k and v: 2 heads × 4 dims × 8 bytes each
        assert traffic.bytes_read == 2 * 2 * (t + 1) * 4 * 8
        assert torch.isfinite(out).all()


def _gpt(h: int, g: int, device: torch.device, layers: int = 2) -> TinyGPT:
    torch.manual_seed(h * 10 + g)
    model = TinyGPT(13, 16, layers, h, g, max_len=16, dtype=F64, device=device)
    with torch.no_grad():  # larger than the N(0, 0.02) init so that logits depend strongly on the input
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)
    return model.eval()


@pytest.mark.parametrize("h,g", [(4, 4), (4, 2), (4, 1)])
def test_decode_steps_equal_the_full_causal_forward(h: int, g: int, device: torch.device) -> None:
    """MHA, GQA, MQA: after a prefill, each cached step's logits equal the full forward's row."""
    model = _gpt(h, g, device)
    ids = torch.randint(0, 13, (2, 12), generator=torch.Generator().manual_seed(h + g)).to(device)
    full = model(ids)  # (2, 12, 13): every position at once, causal mask
    caches = model.new_caches(2)
    assert_close(decode_step(model, ids[:, :5], caches), full[:, 4])  # prefill of 5 tokens
    for t in range(5, 12):
        assert_close(decode_step(model, ids[:, t : t + 1], caches), full[:, t])
    assert [c.length for c in caches] == [12, 12]


def test_generate_with_and_without_cache(device: torch.device) -> None:
    model = _gpt(4, 2, device)
    prompt = torch.tensor([[1, 2, 3]], device=device)
    out = generate(model, prompt, 10)
    assert torch.equal(out, generate(model, prompt, 10, use_cache=False))
    assert torch.equal(out, model.generate(prompt, 10))  # the method is this function
    with pytest.raises(ValueError, match=r"prompt length 3 \+ max_new_tokens=14 must be <= max_len=16"):
        generate(model, prompt, 14)
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        generate(model, prompt, 2, temperature=-0.5)
    caches = model.new_caches(1)
    decode_step(model, prompt, caches)
    caches[1].length = 2
    with pytest.raises(ValueError, match=r"same number of positions, got \[2, 3\]"):
        decode_step(model, prompt[:, :1], caches)


@pytest.mark.parametrize("h,g", [(4, 4), (4, 1)])
def test_every_layer_reads_all_cached_keys_and_values(h: int, g: int, device: torch.device) -> None:
    """Open question 001 L220: the next step reads K *and* V of every cached position in *every*
    layer (not only at the end, not only K); nothing is changed by the probe."""
    model = _gpt(h, g, device, layers=3)
    caches = model.new_caches(1)
    decode_step(model, torch.tensor([[3, 1, 4, 1, 5]], device=device), caches)
    before = [(c.k.clone(), c.v.clone()) for c in caches]
    reads = layer_reads(model, caches, torch.tensor([[9]], device=device))
    assert reads == [{"k": [0, 1, 2, 3, 4], "v": [0, 1, 2, 3, 4]}] * 3
    for c, (k, v) in zip(caches, before):
        assert c.length == 5 and torch.equal(c.k, k) and torch.equal(c.v, v)


def test_naive_concatenation_copies_the_whole_prefix_every_step(device: torch.device) -> None:
    """``torch.cat`` allocates a new tensor per step and copies t positions (O(T^2) in total);
    the preallocated cache writes one position per step and never moves the prefix."""
    cache = KVCache(1, 2, 64, 8, dtype=F64, device=device)
    grown = torch.zeros(1, 2, 0, 8, dtype=F64, device=device)
    copied, pointers = 0, set()
    for k, _ in _chunks(0, 1, 2, 8, [1] * 64, device):
        grown = torch.cat([grown, k], dim=2)
        copied += grown.numel() * grown.element_size()
        pointers.add(grown.data_ptr())
        keys, _ = cache.append(k, k)
        assert keys.data_ptr() == cache.k.data_ptr()
    assert_close(keys, grown)
    assert len(pointers) > 1  # new allocations (the allocator may reuse freed blocks)
    per_position = 2 * 8 * 8  # heads × head_dim × bytes
    assert copied == per_position * 64 * 65 // 2  # 1 + 2 + ... + 64 positions copied
