"""``@property``: a computed, read-only attribute, and a property whose setter validates.

Reference: Python documentation, "Descriptor HowTo Guide" (``property``) and ``functools.cached_property``;
d2l.ai §9.2 ``Vocab.token_freqs``. ``FreqVocab`` adds d2l's ``token_freqs`` to the project's
:class:`snippets.data.text.Vocab`, returning an immutable tuple instead of the internal list.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from snippets.data.text import Vocab

__all__ = ["D2LStyleVocab", "FreqVocab", "TemperatureSoftmax"]


# --8<-- [start:d2l]
class D2LStyleVocab:
    """d2l's pattern: a "private" list behind a getter-only property (the getter returns the list itself)."""

    def __init__(self, tokens: Iterable[str]) -> None:
        counts: dict[str, int] = {}
        for t in tokens:
            counts[t] = counts.get(t, 0) + 1
        self._token_freqs = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))

    @property
    def token_freqs(self) -> list[tuple[str, int]]:
        return self._token_freqs  # the caller gets the internal list: it can mutate our state


# --8<-- [end:d2l]


# --8<-- [start:freq_vocab]
class FreqVocab(Vocab):
    """:class:`~snippets.data.text.Vocab` plus a read-only ``token_freqs``: ``(token, count)`` pairs,
    most frequent first (ties alphabetical, the order of ``idx_to_token``), as a fresh tuple."""

    @property
    def token_freqs(self) -> tuple[tuple[str, int], ...]:
        return tuple(sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0])))


# --8<-- [end:freq_vocab]


# --8<-- [start:setter]
class TemperatureSoftmax:
    """``softmax(logits / temperature)`` over the last dim, ``(..., V) -> (..., V)``, as used for sampling.

    ``temperature`` is a property with a validating setter: every assignment, including the one in
    ``__init__``, goes through the check, so the object can never hold a non-positive temperature.
    """

    def __init__(self, temperature: float = 1.0) -> None:
        self.temperature = temperature  # runs the setter below

    @property
    def temperature(self) -> float:
        return self._temperature

    @temperature.setter
    def temperature(self, value: float) -> None:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise TypeError(f"temperature must be a real number, got {type(value).__name__}")
        if not value > 0:  # also rejects NaN
            raise ValueError(f"temperature must be > 0, got temperature={value}")
        self._temperature = float(value)

    def __call__(self, logits: Tensor) -> Tensor:
        return torch.softmax(logits / self._temperature, dim=-1)


# --8<-- [end:setter]


if __name__ == "__main__":
    vocab = FreqVocab("the time machine by h g wells the time traveller".split())
    print("token_freqs:", vocab.token_freqs[:3])
    soft = TemperatureSoftmax(0.5)
    print("T=0.5:", [round(p, 3) for p in soft(torch.tensor([1.0, 2.0, 3.0])).tolist()])
    try:
        soft.temperature = 0
    except ValueError as err:
        print("rejected:", err)
