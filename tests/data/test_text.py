"""Tokenisation, Vocab, the shipped Time Machine text and the generated toy corpus."""

from __future__ import annotations

import collections
import math
import string

import pytest
import torch

from snippets.data.text import (
    TOY_WORDS,
    Vocab,
    clean_text,
    is_toy_sentence,
    load_timemachine,
    make_toy_corpus,
    read_timemachine,
    tokenize,
)


def test_clean_text_keeps_lowercase_letters_and_single_spaces() -> None:
    assert clean_text("Hello, World!\n\n  It's 1895 — “Time”.") == "hello world it s time"
    assert clean_text("...") == ""


def test_tokenize_char_and_word() -> None:
    assert tokenize("ab c") == ["a", "b", " ", "c"]
    assert tokenize("the  time\nmachine", "word") == ["the", "time", "machine"]
    with pytest.raises(ValueError, match="level must be 'char' or 'word'"):
        tokenize("x", "byte")  # type: ignore[arg-type]


def test_vocab_orders_by_frequency_then_alphabet_and_round_trips() -> None:
    tokens = list("banana bread")  # a:4, b:2, n:2, ' ':1, d:1, e:1, r:1
    vocab = Vocab(tokens)
    assert vocab.idx_to_token == ["<unk>", "a", "b", "n", " ", "d", "e", "r"]
    ids = vocab.encode(tokens)
    assert ids.dtype == torch.long and ids.tolist()[:3] == [2, 1, 3]
    assert vocab.decode(ids) == "banana bread"
    assert vocab.encode("z").tolist() == [0]  # unknown -> <unk>
    rare = Vocab(tokens, min_freq=2, reserved=["<pad>"])
    assert rare.idx_to_token == ["<unk>", "<pad>", "a", "b", "n"]
    assert rare.decode(rare.encode("bread")) == "b<unk><unk>a<unk>"
    words = Vocab(["the", "cat", "the"])
    assert words.decode(torch.tensor([1, 2]), sep=" ") == "the cat"


def test_vocab_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="min_freq must be >= 1"):
        Vocab("abc", min_freq=0)
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 3\)"):
        Vocab("ab").decode([0, 3])


def test_timemachine_is_read_relative_to_the_repository(monkeypatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)  # the path comes from the module's __file__, not the working dir
    text = read_timemachine()
    assert text.startswith("the time machine an invention by h g wells")
    assert set(text) == set(string.ascii_lowercase + " ")
    assert "  " not in text and len(text) == 174213
    ids, vocab = load_timemachine()
    assert len(vocab) == 28 and vocab.idx_to_token[:3] == ["<unk>", " ", "e"]  # space, then 'e'
    assert vocab.decode(ids) == text
    short, _ = load_timemachine(max_tokens=100)
    assert torch.equal(short, ids[:100])
    with pytest.raises(ValueError, match="max_tokens must be positive"):
        load_timemachine(max_tokens=0)


def test_toy_corpus_is_deterministic_and_grammatical() -> None:
    a = make_toy_corpus(200, torch.Generator().manual_seed(0))
    b = make_toy_corpus(200, torch.Generator().manual_seed(0))
    c = make_toy_corpus(200, torch.Generator().manual_seed(1))
    assert a == b and a != c and len(a) == 200
    for sentence in a:
        words = sentence.split()
        assert " ".join(words) == sentence
        assert is_toy_sentence(sentence), sentence


def test_recogniser_accepts_the_grammar_and_rejects_word_swaps() -> None:
    assert is_toy_sentence("the man saw a light")
    assert is_toy_sentence("every machine near the old river vanished")  # NP -> DET N PP, VP -> VI
    assert not is_toy_sentence("every old machine near the river vanished")  # no rule DET ADJ N PP
    assert not is_toy_sentence("the man a saw light")  # two adjacent words swapped
    assert not is_toy_sentence("man the saw a light")
    assert not is_toy_sentence("the man saw")  # a transitive verb without its object
    assert not is_toy_sentence("the cat saw a light")  # unknown word
    assert not is_toy_sentence("")
    assert make_toy_corpus(0) == []
    with pytest.raises(ValueError, match="n_sentences must be >= 0"):
        make_toy_corpus(-1)


def test_toy_corpus_words_are_zipf_distributed() -> None:
    corpus = make_toy_corpus(3000, torch.Generator().manual_seed(2))
    counts = collections.Counter(w for s in corpus for w in s.split())
    nouns = TOY_WORDS["N"]
    n = sum(counts[w] for w in nouns)
    harmonic = sum(1 / r for r in range(1, len(nouns) + 1))
    for rank, word in enumerate(nouns, start=1):
        p = 1 / rank / harmonic
        sigma = math.sqrt(n * p * (1 - p))
        assert abs(counts[word] - n * p) < 4 * sigma, (word, counts[word], n * p)
