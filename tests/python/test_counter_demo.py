"""collections.Counter vs manual counting, ranking ties, missing keys, arithmetic, BLEU with `&`."""

from __future__ import annotations

import random
from collections import Counter, defaultdict

import pytest
import torch

from snippets.attention.bahdanau import bleu
from snippets.data.text import Vocab, make_toy_corpus, tokenize
from snippets.python.counter_demo import (
    bleu_counter,
    clipped_matches,
    count_manually,
    count_tokens,
    ngrams,
    rank_tokens,
)


@pytest.mark.parametrize("seed", range(3))
def test_matches_manual_dict_counting(seed: int) -> None:
    lines = make_toy_corpus(40, torch.Generator().manual_seed(seed))
    words = [w for line in lines for w in line.split()]
    assert count_tokens(lines) == count_manually(words)
    chars = [c for line in lines for c in tokenize(line, "char")]
    assert count_tokens(lines, "char") == count_manually(chars)
    assert sum(count_tokens(lines).values()) == len(words)


def test_vocab_counts_are_a_counter_and_rank_like_rank_tokens() -> None:
    lines = make_toy_corpus(30, torch.Generator().manual_seed(0))
    vocab = Vocab(w for line in lines for w in line.split())
    assert isinstance(vocab.counts, Counter) and vocab.counts == count_tokens(lines)
    assert [t for t, _ in rank_tokens(vocab.counts)] == vocab.idx_to_token[1:]
    rare = Vocab("the time machine the time traveller a machine".split(), min_freq=2)
    assert rare.idx_to_token == ["<unk>", "machine", "the", "time"]  # counts >= min_freq, ranked
    assert rare.counts["a"] == 1 and rare.encode(["a"]).tolist() == [0]


def test_most_common_breaks_ties_by_first_occurrence() -> None:
    a, b = Counter("xyyzz"), Counter("zzyyx")
    assert a.most_common() == [("y", 2), ("z", 2), ("x", 1)]
    assert b.most_common() == [("z", 2), ("y", 2), ("x", 1)]  # same counts, other order
    assert rank_tokens(a) == rank_tokens(b) == [("y", 2), ("z", 2), ("x", 1)]
    assert a.most_common(1) == [("y", 2)]


def test_most_common_order_is_descending_count() -> None:
    rng = random.Random(0)
    c = Counter(rng.choice("abcdefgh") for _ in range(500))
    counts = [n for _, n in c.most_common()]
    assert counts == sorted(counts, reverse=True)


def test_missing_key_is_zero_and_is_not_inserted() -> None:
    c = Counter(["red", "red", "blue"])
    assert c["green"] == 0 and "green" not in c and len(c) == 2
    c["green"] += 1
    assert c["green"] == 1 and len(c) == 3
    with pytest.raises(KeyError):
        {"red": 2}["green"]
    d = defaultdict(int, red=2)
    assert d["green"] == 0 and "green" in d  # defaultdict inserts the default on a mere read


def test_arithmetic() -> None:
    a, b = Counter(a=3, b=1, c=2), Counter(a=1, b=2, d=4)
    assert a + b == Counter(a=4, b=3, c=2, d=4)
    assert a - b == Counter(a=2, c=2)  # non-positive counts are dropped
    assert a & b == Counter(a=1, b=1)  # minimum
    assert a | b == Counter(a=3, b=2, c=2, d=4)  # maximum
    s = a.copy()
    s.subtract(b)  # keeps zero and negative counts
    assert s == Counter(a=2, b=-1, c=2, d=-4)
    assert +s == Counter(a=2, c=2) and -s == Counter(b=1, d=4)
    u = a.copy()
    u.update(["a", "e"])
    assert u == Counter(a=4, b=1, c=2, e=1)
    assert a.total() == 6
    assert Counter(a=1) + Counter(a=-1, b=2) == Counter(b=2)  # `+` drops non-positive results too
    assert Counter(a=-2) | Counter() == Counter()  # and so do `|` and `&`


def test_constructors_of_the_notes() -> None:
    assert Counter(["red", "red", "blue", "blue"]) == {"red": 2, "blue": 2}  # an iterable of elements
    assert Counter({"red": 4, "blue": 2}) == {"red": 4, "blue": 2}  # a mapping of counts
    assert Counter(cats=4, dogs=8) == {"cats": 4, "dogs": 8}  # keyword arguments
    assert Counter(("cats", 4)) == {"cats": 1, 4: 1}  # a tuple is just an iterable of elements
    assert Counter("aab") == {"a": 2, "b": 1}  # a string: its characters
    assert Counter([("cats", 4)]) == {("cats", 4): 1}  # pairs are not (key, count) either
    assert Counter(dict([("cats", 4)])) == {"cats": 4}  # ... unless made into a dict first


def test_a_mapping_gives_counts_an_iterator_over_it_gives_keys() -> None:
    counts = {"red": 4, "blue": 2}
    assert Counter(counts) == {"red": 4, "blue": 2}  # a mapping: values are the counts
    assert Counter(iter(counts)) == {"red": 1, "blue": 1}  # iterating a dict yields its keys
    assert Counter(counts.items()) == {("red", 4): 1, ("blue", 2): 1}
    assert Counter("red") == {"r": 1, "e": 1, "d": 1}


def test_counter_is_a_dict_subclass() -> None:
    c = Counter("hello")
    assert isinstance(c, dict) and issubclass(Counter, dict)
    assert list(c) == ["h", "e", "l", "o"]  # insertion order, like dict
    assert list(c.elements()) == ["h", "e", "l", "l", "o"]


def test_clipped_matches_equal_the_loop_in_bahdanau_bleu() -> None:
    assert clipped_matches("the the the the".split(), "the cat".split(), 1) == 1  # clipped at 1
    assert ngrams("abcab", 2) == Counter({("a", "b"): 2, ("b", "c"): 1, ("c", "a"): 1})
    rng = random.Random(0)
    for _ in range(200):
        pred = [rng.choice("abcd") for _ in range(rng.randint(0, 9))]
        label = [rng.choice("abcd") for _ in range(rng.randint(1, 9))]
        for k in (1, 2, 3, 4):
            assert bleu_counter(pred, label, k) == pytest.approx(bleu(pred, label, k), rel=1e-12, abs=1e-15)


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="n must be >= 1, got n=0"):
        ngrams("abc", 0)
    with pytest.raises(ValueError, match="k must be >= 1, got k=0"):
        bleu_counter("a", "a", 0)
    with pytest.raises(ValueError, match="label is empty"):
        bleu_counter("a", "", 2)
    with pytest.raises(ValueError, match="level must be 'char' or 'word'"):
        count_tokens(["a b"], "sentence")
    with pytest.raises(TypeError, match="lines must be an iterable of strings"):
        count_tokens("the time machine")
