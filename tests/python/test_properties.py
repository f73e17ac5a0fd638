"""@property: read-only without a setter, validated with one, a convention (not a lock) on `_name`."""

from __future__ import annotations

import functools

import pytest
import torch

from snippets.data.text import Vocab
from snippets.llm.kv_cache import KVCache
from snippets.python.properties import D2LStyleVocab, FreqVocab, TemperatureSoftmax
from tests.conftest import assert_close

TOKENS = "the time machine by h g wells the time traveller for so it will be convenient to speak of him".split()


def test_token_freqs_matches_vocab_order_and_counts() -> None:
    vocab = FreqVocab(TOKENS)
    freqs = vocab.token_freqs
    assert [t for t, _ in freqs] == vocab.idx_to_token[1:]  # same ranking as the project's Vocab
    assert dict(freqs) == dict(vocab.counts)
    assert freqs == tuple(D2LStyleVocab(TOKENS).token_freqs)
    assert isinstance(vocab, Vocab) and len(vocab) == len(Vocab(TOKENS))


def test_getter_only_property_rejects_assignment_and_deletion() -> None:
    vocab = FreqVocab(TOKENS)
    with pytest.raises(AttributeError, match="property 'token_freqs' of 'FreqVocab' object has no setter"):
        vocab.token_freqs = ()
    with pytest.raises(AttributeError, match="has no deleter"):
        del vocab.token_freqs
    with pytest.raises(TypeError, match="'tuple' object is not callable"):
        vocab.token_freqs()  # accessed like an attribute, no parentheses


def test_project_kv_cache_max_len_is_read_only() -> None:
    cache = KVCache(batch_size=1, num_kv_heads=2, max_len=8, head_dim=4)
    assert cache.max_len == 8 and cache.nbytes == 2 * 1 * 2 * 8 * 4 * 4
    with pytest.raises(AttributeError, match="property 'max_len' of 'KVCache' object has no setter"):
        cache.max_len = 16
    assert isinstance(KVCache.__dict__["max_len"], property)


def test_property_is_a_class_attribute_instance_dict_cannot_shadow_it() -> None:
    vocab = FreqVocab(TOKENS)
    assert "token_freqs" not in vars(vocab)
    vars(vocab)["token_freqs"] = "shadow?"  # a data descriptor wins over the instance __dict__
    assert vocab.token_freqs != "shadow?" and isinstance(vocab.token_freqs, tuple)


def test_private_attribute_is_a_convention_and_the_list_leaks() -> None:
    d2l = D2LStyleVocab(TOKENS)
    d2l.token_freqs.append(("<oops>", 99))  # mutates the internal list through the "read-only" property
    assert d2l._token_freqs[-1] == ("<oops>", 99)
    d2l._token_freqs = []  # the underscore does not stop anyone
    assert d2l.token_freqs == []
    ours = FreqVocab(TOKENS)
    with pytest.raises(AttributeError, match="'tuple' object has no attribute 'append'"):
        ours.token_freqs.append(("<oops>", 99))
    assert ours.token_freqs == FreqVocab(TOKENS).token_freqs


def test_property_recomputes_cached_property_can_go_stale() -> None:
    class Cached(Vocab):
        @functools.cached_property
        def token_freqs(self) -> tuple:
            return tuple(sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0])))

    live, cached = FreqVocab(TOKENS), Cached(TOKENS)
    assert live.token_freqs == cached.token_freqs
    assert live.token_freqs is not live.token_freqs  # computed at every access
    assert cached.token_freqs is cached.token_freqs  # computed once, stored in the instance __dict__
    assert "token_freqs" in vars(cached)
    live.counts["zebra"] += 5
    cached.counts["zebra"] += 5
    assert live.token_freqs[0] == ("zebra", 5)
    assert cached.token_freqs[0] != ("zebra", 5)  # stale
    cached.token_freqs = ()  # and writable: cached_property is not read-only
    assert cached.token_freqs == ()


def test_validating_setter(device: torch.device) -> None:
    soft = TemperatureSoftmax(2.0)
    logits = torch.randn(3, 5, dtype=torch.float64, device=device)
    assert_close(soft(logits), torch.softmax(logits / 2.0, dim=-1))
    soft.temperature = 0.5
    assert soft.temperature == 0.5
    assert_close(soft(logits), torch.softmax(2 * logits, dim=-1))
    assert soft(logits).shape == (3, 5)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan")])
def test_setter_rejects_non_positive_temperature(bad: float) -> None:
    soft = TemperatureSoftmax()
    with pytest.raises(ValueError, match="temperature must be > 0"):
        soft.temperature = bad
    assert soft.temperature == 1.0  # unchanged
    with pytest.raises(ValueError, match="temperature must be > 0"):
        TemperatureSoftmax(bad)  # __init__ goes through the setter too


def test_setter_rejects_non_numbers() -> None:
    with pytest.raises(TypeError, match="temperature must be a real number, got str"):
        TemperatureSoftmax("1.0")
    with pytest.raises(TypeError, match="got bool"):
        TemperatureSoftmax(True)
