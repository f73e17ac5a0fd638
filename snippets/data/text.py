"""Text data for the language-model chapters: tokenisation, a vocabulary and two corpora.

Reference: d2l.ai §9.2 (text preprocessing: ``read_time_machine``, ``tokenize``, ``Vocab``).
The shipped corpus is H. G. Wells, *The Time Machine* (1895, public domain) in
``data/timemachine.txt``; :func:`make_toy_corpus` generates a small deterministic corpus from a
probabilistic grammar (Zipf-distributed words) so tests never depend on the file.
"""

from __future__ import annotations

import bisect
import collections
import itertools
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "Vocab",
    "tokenize",
    "clean_text",
    "read_timemachine",
    "load_timemachine",
    "TOY_GRAMMAR",
    "TOY_WORDS",
    "make_toy_corpus",
    "is_toy_sentence",
]

TIMEMACHINE = Path(__file__).resolve().parents[2] / "data" / "timemachine.txt"


# --8<-- [start:tokenize]
def clean_text(text: str) -> str:
    """Lower-case, and turn every run of non-letters (digits, punctuation, newlines) into one space."""
    return re.sub(r"[^a-z]+", " ", text.lower()).strip()


def tokenize(text: str, level: Literal["char", "word"] = "char") -> list[str]:
    """Split ``text`` into characters (``"char"``) or whitespace-separated words (``"word"``)."""
    if level == "char":
        return list(text)
    if level == "word":
        return text.split()
    raise ValueError(f"level must be 'char' or 'word', got {level!r}")
# --8<-- [end:tokenize]


# --8<-- [start:vocab]
class Vocab:
    """Token <-> index table, most frequent token first (ties broken alphabetically).

    Index 0 is ``"<unk>"``; then ``reserved`` tokens in the given order; then every token seen at
    least ``min_freq`` times. Unknown tokens map to 0.
    """

    def __init__(self, tokens: Iterable[str], min_freq: int = 1, reserved: Sequence[str] = ()) -> None:
        if min_freq < 1:
            raise ValueError(f"min_freq must be >= 1, got min_freq={min_freq}")
        self.counts = collections.Counter(tokens)
        ranked = sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))
        self.idx_to_token = ["<unk>", *(t for t in reserved if t != "<unk>")]
        taken = set(self.idx_to_token)
        self.idx_to_token += [t for t, c in ranked if c >= min_freq and t not in taken]
        self.token_to_idx = {t: i for i, t in enumerate(self.idx_to_token)}

    def __len__(self) -> int:
        return len(self.idx_to_token)

    def encode(self, tokens: Iterable[str], *, device: torch.device | None = None) -> Tensor:
        """Token ids ``(n,)`` (int64); unknown tokens become ``0`` (``<unk>``)."""
        ids = [self.token_to_idx.get(t, 0) for t in tokens]
        return torch.tensor(ids, dtype=torch.long, device=device)

    def decode(self, ids: Tensor | Sequence[int], sep: str = "") -> str:
        """Join the tokens of ``ids`` with ``sep`` (``""`` for characters, ``" "`` for words)."""
        ids = ids.tolist() if isinstance(ids, Tensor) else list(ids)
        bad = [i for i in ids if not 0 <= i < len(self)]
        if bad:
            raise ValueError(f"ids must lie in [0, {len(self)}), got {bad[:5]}")
        return sep.join(self.idx_to_token[i] for i in ids)
# --8<-- [end:vocab]


# --8<-- [start:timemachine]
def read_timemachine(path: str | Path | None = None) -> str:
    """The Time Machine as one cleaned string: lower-case letters and single spaces (27 symbols)."""
    path = TIMEMACHINE if path is None else Path(path)
    return clean_text(path.read_text(encoding="utf-8"))


def load_timemachine(max_tokens: int | None = None, path: str | Path | None = None) -> tuple[Tensor, Vocab]:
    """Character ids ``(n,)`` of the cleaned text and its :class:`Vocab` (28 tokens with ``<unk>``)."""
    if max_tokens is not None and max_tokens <= 0:
        raise ValueError(f"max_tokens must be positive or None, got max_tokens={max_tokens}")
    chars = tokenize(read_timemachine(path), "char")
    vocab = Vocab(chars)
    ids = vocab.encode(chars)
    return (ids if max_tokens is None else ids[:max_tokens]), vocab
# --8<-- [end:timemachine]


# --8<-- [start:toy_corpus]
# A tiny probabilistic grammar. Words inside a list are drawn with Zipf probabilities 1/rank.
TOY_GRAMMAR: dict[str, list[list[str]]] = {
    "S": [["NP", "VP"]],
    "NP": [["DET", "N"], ["DET", "ADJ", "N"], ["DET", "N", "PP"]],
    "VP": [["V", "NP"], ["V", "NP"], ["VI"], ["V", "NP", "PP"]],
    "PP": [["P", "NP"]],
}
TOY_WORDS: dict[str, list[str]] = {
    "DET": ["the", "a", "every", "some"],
    "N": ["machine", "traveller", "time", "man", "world", "light", "door", "river", "hill", "lamp"],
    "ADJ": ["old", "strange", "green", "small", "dark", "white"],
    "V": ["saw", "found", "built", "made", "left", "took", "watched", "moved"],
    "VI": ["slept", "laughed", "vanished", "waited", "spoke"],
    "P": ["in", "near", "under", "beyond", "with"],
}


def make_toy_corpus(n_sentences: int, generator: torch.Generator | None = None) -> list[str]:
    """``n_sentences`` sentences (lower-case words, single spaces, no final period) from
    :data:`TOY_GRAMMAR`; deterministic for a seeded ``generator``. A rule's right-hand sides are
    equally likely; words are Zipf-distributed (``P(rank r) ∝ 1/r``) within their class."""
    if n_sentences < 0:
        raise ValueError(f"n_sentences must be >= 0, got n_sentences={n_sentences}")

    uniforms: list[float] = []

    def pick(n: int, zipf: bool) -> int:  # inverse-CDF sampling from pre-drawn uniforms (fast)
        if not uniforms:
            uniforms.extend(torch.rand(4096, generator=generator, dtype=torch.float64).tolist())
        weights = [1.0 / r if zipf else 1.0 for r in range(1, n + 1)]
        cdf = list(itertools.accumulate(weights))
        return min(bisect.bisect_right(cdf, uniforms.pop() * cdf[-1]), n - 1)

    def expand(symbol: str, depth: int) -> list[str]:
        if symbol in TOY_WORDS:
            words = TOY_WORDS[symbol]
            return [words[pick(len(words), zipf=True)]]
        rules = TOY_GRAMMAR[symbol]
        if depth >= 3:  # keep sentences short: past depth 3 take the first (non-recursive) rule
            rules = rules[:1]
        rule = rules[pick(len(rules), zipf=False)]
        return [w for s in rule for w in expand(s, depth + 1)]

    return [" ".join(expand("S", 0)) for _ in range(n_sentences)]
# --8<-- [end:toy_corpus]


def is_toy_sentence(sentence: str) -> bool:
    """Whether :data:`TOY_GRAMMAR` derives ``sentence`` (a recogniser, independent of the sampler)."""
    words = sentence.split()

    def ends(symbol: str, i: int) -> set[int]:  # every j such that symbol derives words[i:j]
        if symbol in TOY_WORDS:
            return {i + 1} if i < len(words) and words[i] in TOY_WORDS[symbol] else set()
        out: set[int] = set()
        for rule in TOY_GRAMMAR[symbol]:
            frontier = {i}
            for part in rule:
                frontier = {j for k in frontier for j in ends(part, k)}
            out |= frontier
        return out

    return len(words) in ends("S", 0)


if __name__ == "__main__":
    ids, vocab = load_timemachine()
    print(f"The Time Machine: {len(ids)} characters, vocabulary of {len(vocab)}: {vocab.idx_to_token}")
    print("first 60 characters:", repr(vocab.decode(ids[:60])))
    for s in make_toy_corpus(3, torch.Generator().manual_seed(0)):
        print("toy:", s)
