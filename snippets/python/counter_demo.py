"""``collections.Counter`` for token counting: the counts behind :class:`snippets.data.text.Vocab`,
ranking ties, missing keys, multiset arithmetic, and BLEU's clipped n-gram matches.

Reference: Python documentation, ``collections.Counter``; d2l.ai §9.2 (``count_corpus``) and §10.7 (BLEU).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from typing import Literal

from snippets.data.text import tokenize

__all__ = ["count_tokens", "count_manually", "rank_tokens", "ngrams", "clipped_matches", "bleu_counter"]


# --8<-- [start:count]
def count_tokens(lines: Iterable[str], level: Literal["char", "word"] = "word") -> Counter[str]:
    """How often each token occurs over all ``lines`` (what ``Vocab`` ranks its tokens by)."""
    if isinstance(lines, str):  # a str is an iterable of 1-character "lines": almost always a mistake
        raise TypeError("lines must be an iterable of strings (e.g. a list of lines), got a single str")
    return Counter(t for line in lines for t in tokenize(line, level))


def count_manually(tokens: Iterable[Hashable]) -> dict[Hashable, int]:
    """The same counts with a plain dict — the loop ``Counter`` saves you."""
    counts: dict[Hashable, int] = {}
    for t in tokens:
        counts[t] = counts.get(t, 0) + 1
    return counts


def rank_tokens(counts: Counter[str]) -> list[tuple[str, int]]:
    """Most frequent first, ties **alphabetical** (``Vocab``'s order). ``most_common()`` breaks ties by
    first occurrence instead, so it depends on the order of the corpus."""
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


# --8<-- [end:count]


# --8<-- [start:bleu]
def ngrams(tokens: Sequence[Hashable], n: int) -> Counter[tuple]:
    """Counts of the ``n``-grams (tuples of ``n`` consecutive tokens) of ``tokens``."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got n={n}")
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def clipped_matches(pred: Sequence[Hashable], label: Sequence[Hashable], n: int) -> int:
    """n-grams of ``pred`` that also occur in ``label``, each counted at most as often as in ``label``:
    the multiset intersection ``&`` (element-wise minimum of the counts)."""
    return sum((ngrams(pred, n) & ngrams(label, n)).values())


def bleu_counter(pred: Sequence[Hashable], label: Sequence[Hashable], k: int = 2) -> float:
    """d2l's BLEU written with ``Counter`` arithmetic (same value as :func:`snippets.attention.bahdanau.bleu`)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got k={k}")
    if len(label) == 0:
        raise ValueError("label is empty: BLEU needs at least one reference token")
    if len(pred) == 0:
        return 0.0
    score = math.exp(min(0.0, 1.0 - len(label) / len(pred)))
    for n in range(1, min(k, len(pred)) + 1):
        score *= (clipped_matches(pred, label, n) / (len(pred) - n + 1)) ** (0.5**n)
    return score


# --8<-- [end:bleu]


if __name__ == "__main__":
    counts = count_tokens(["the time machine", "the time traveller", "a machine"])
    print("most_common:", counts.most_common(3))
    print("rank_tokens:", rank_tokens(counts)[:3])
    print("missing key:", counts["zebra"], "| still absent:", "zebra" not in counts)
    print("BLEU:", round(bleu_counter("the cat sat".split(), "the cat sat down".split()), 4))
