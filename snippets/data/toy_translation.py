"""A generated Chinese → English toy translation task (offline stand-in for d2l's fra-eng data).

Each pair comes from one small grammar rendered in two languages. Chinese puts time and place
*before* the verb (``我 昨天 在 公园 吃 了 一 个 苹果``), English puts them *after* the object
(``I ate an apple in the park yesterday``), so a translator must reorder, not copy left to right.
English also needs agreement the Chinese does not mark on the same words: tense from ``了`` /
``昨天`` / ``明天`` (``ate``, ``will eat``), third-person ``-s`` (``she eats``, ``does not``),
plurals (``three books``, ``two fish``), ``a``/``an`` from the next word, ``this``/``these``.
Measure words (``个``, ``本``, ``只`` …) exist only in Chinese. Deterministic for a seeded generator.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from snippets.data.text import Vocab

__all__ = [
    "SPECIALS",
    "SHOWCASE_PAIRS",
    "render_pair",
    "make_toy_pairs",
    "build_vocabs",
    "ToyData",
    "tensorize",
    "strip_special",
]

SPECIALS = ("<pad>", "<bos>", "<eos>")  # indices 1, 2, 3 in both vocabularies (0 is <unk>)

# --8<-- [start:lexicon]
# fmt: off
# (Chinese tokens, English tokens, agreement): "3sg" takes "-s" / "does" in the present tense.
SUBJECTS = [
    ("我", "I", "1"), ("你", "you", "2"), ("他", "he", "3sg"), ("她", "she", "3sg"),
    ("我们", "we", "pl"), ("他们", "they", "pl"), ("老师", "the teacher", "3sg"), ("我 的 朋友", "my friend", "3sg"),
]
# Chinese verb: (base, third-person singular, past).
VERBS = {
    "吃": ("eat", "eats", "ate"), "买": ("buy", "buys", "bought"), "看": ("see", "sees", "saw"),
    "洗": ("wash", "washes", "washed"), "卖": ("sell", "sells", "sold"), "画": ("draw", "draws", "drew"),
}
# Chinese noun: (measure word, singular, plural).
NOUNS = {
    "苹果": ("个", "apple", "apples"), "橘子": ("个", "orange", "oranges"), "书": ("本", "book", "books"),
    "猫": ("只", "cat", "cats"), "狗": ("只", "dog", "dogs"), "鱼": ("条", "fish", "fish"),
    "车": ("辆", "car", "cars"), "杯子": ("个", "cup", "cups"), "蛋糕": ("块", "cake", "cakes"),
}
OBJECTS = {  # which nouns each verb takes (keeps the sentences plausible)
    "吃": ["苹果", "橘子", "鱼", "蛋糕"], "买": list(NOUNS), "看": ["书", "猫", "狗", "鱼", "车"],
    "洗": ["苹果", "杯子", "车", "狗", "猫"], "卖": ["书", "车", "鱼", "苹果", "杯子", "蛋糕"],
    "画": ["猫", "狗", "鱼", "车", "苹果", "杯子"],
}
NUMBERS = [("一", "a"), ("两", "two"), ("三", "three"), ("四", "four"), ("五", "five")]
ADJECTIVES = [("", ""), ("大", "big"), ("小", "small"), ("新", "new"), ("旧", "old"), ("红", "red")]
DEMONSTRATIVES = [("", "", ""), ("这", "this", "these"), ("那", "that", "those")]
TIMES = [
    ("", "", None), ("昨天", "yesterday", "past"), ("每天", "every day", "present"), ("明天", "tomorrow", "future"),
]
PLACES = [
    ("", ""), ("在 家", "at home"), ("在 学校", "at school"), ("在 公园", "in the park"), ("在 商店", "in the shop"),
]
# fmt: on
# --8<-- [end:lexicon]

# fmt: off
SHOWCASE_PAIRS = [  # written by hand; tests/data/test_toy_translation.py checks the grammar produces them
    ("我 吃 了 一 个 苹果", "I ate an apple"),
    ("她 昨天 在 商店 买 了 三 本 新 书", "she bought three new books in the shop yesterday"),
    (
        "我 的 朋友 明天 不 在 公园 画 那 两 只 小 狗",
        "my friend will not draw those two small dogs in the park tomorrow",
    ),
    ("他们 没 洗 这 辆 旧 车", "they did not wash this old car"),
    ("老师 每天 看 一 本 书", "the teacher sees a book every day"),
]
# fmt: on


# --8<-- [start:render]
def render_pair(choice: Sequence[int]) -> tuple[str, str]:
    """One pair from 9 choice indices (subject, time, tense, negation, place, verb, object, adjective,
    number+demonstrative); every rule of the grammar is in this function."""
    s_zh, s_en, person = SUBJECTS[choice[0]]
    t_zh, t_en, tense = TIMES[choice[1]]
    tense = tense or ("past", "present")[choice[2]]  # no time word: 了 marks the past
    negated = choice[3] == 1
    p_zh, p_en = PLACES[choice[4]]
    verb = list(VERBS)[choice[5]]
    noun = OBJECTS[verb][choice[6] % len(OBJECTS[verb])]
    a_zh, a_en = ADJECTIVES[choice[7]]
    (n_zh, n_en), (d_zh, d_sg, d_pl) = NUMBERS[choice[8] % 5], DEMONSTRATIVES[choice[8] // 5]
    base, third, past = VERBS[verb]
    measure, sg, pl = NOUNS[noun]
    # Chinese: S [time] [neg] [place] V [了] [dem] [num] measure [adj] N
    neg_zh = ("没" if tense == "past" else "不") if negated else ""
    le = "了" if tense == "past" and not negated else ""
    num_zh = "" if d_zh and n_zh == "一" else n_zh  # 这个苹果, 这两个苹果
    zh = [s_zh, t_zh, neg_zh, p_zh, verb, le, d_zh, num_zh, measure, a_zh, noun]
    # English: S [aux] V [det] [num] [adj] N [place] [time]
    if tense == "future":
        v_en = f"will not {base}" if negated else f"will {base}"
    elif tense == "past":
        v_en = f"did not {base}" if negated else past
    elif negated:
        v_en = f"{'does' if person == '3sg' else 'do'} not {base}"
    else:
        v_en = third if person == "3sg" else base
    head = [a_en, sg] if n_zh == "一" else [a_en, pl]
    if d_zh:
        det = [d_sg] if n_zh == "一" else [d_pl, n_en]
    elif n_zh == "一":
        det = ["an" if (a_en or sg)[0] in "aeiou" else "a"]
    else:
        det = [n_en]
    en = [s_en, v_en, *det, *head, p_en, t_en]
    return " ".join(w for w in zh if w), " ".join(w for w in en if w)


# --8<-- [end:render]


# --8<-- [start:make_pairs]
def make_toy_pairs(n: int, generator: torch.Generator | None = None) -> list[tuple[str, str]]:
    """``n`` (Chinese, English) pairs, tokens separated by single spaces; repeats are possible
    (1,260,000 distinct pairs exist). Deterministic for a seeded ``generator``."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got n={n}")
    sizes = torch.tensor(
        [len(SUBJECTS), len(TIMES), 2, 2, len(PLACES), len(VERBS), 720, len(ADJECTIVES), 5 * len(DEMONSTRATIVES)],
        dtype=torch.float64,
    )  # 720 = lcm of the object-list lengths: every object equally likely
    u = torch.rand(n, len(sizes), generator=generator, dtype=torch.float64)
    choices = (u * sizes).long().tolist()  # one row of independent uniform choices per pair
    return [render_pair(c) for c in choices]


# --8<-- [end:make_pairs]


# --8<-- [start:tensorize]
def build_vocabs(pairs: Sequence[tuple[str, str]]) -> tuple[Vocab, Vocab]:
    """Source and target word vocabularies with ``<unk>`` = 0, ``<pad>`` = 1, ``<bos>`` = 2, ``<eos>`` = 3."""
    src = Vocab((w for zh, _ in pairs for w in zh.split()), reserved=SPECIALS)
    tgt = Vocab((w for _, en in pairs for w in en.split()), reserved=SPECIALS)
    return src, tgt


class ToyData(NamedTuple):
    """Padded id tensors: ``src: (N, S)`` (source words), ``tgt: (N, T)`` (``<bos>`` words ``<eos>``).

    Teacher forcing feeds ``tgt[:, :-1]`` and predicts ``tgt[:, 1:]``; ``<pad>`` (id 1) fills the rest.
    """

    src: Tensor
    tgt: Tensor


def tensorize(
    pairs: Sequence[tuple[str, str]], src_vocab: Vocab, tgt_vocab: Vocab, *, device: torch.device | None = None
) -> ToyData:
    """Encode and right-pad every pair (unknown words become ``<unk>``)."""
    if not pairs:
        raise ValueError("pairs is empty: nothing to tensorize")
    pad = SPECIALS.index("<pad>") + 1
    srcs = [[src_vocab.token_to_idx.get(w, 0) for w in zh.split()] for zh, _ in pairs]
    tgts = [[tgt_vocab.token_to_idx.get(w, 0) for w in ["<bos>", *en.split(), "<eos>"]] for _, en in pairs]
    s_len, t_len = max(map(len, srcs)), max(map(len, tgts))
    src = torch.tensor([ids + [pad] * (s_len - len(ids)) for ids in srcs], dtype=torch.long, device=device)
    tgt = torch.tensor([ids + [pad] * (t_len - len(ids)) for ids in tgts], dtype=torch.long, device=device)
    return ToyData(src, tgt)


# --8<-- [end:tensorize]


def strip_special(ids: Sequence[int] | Tensor, vocab: Vocab) -> str:
    """Words of ``ids`` up to the first ``<eos>``, without ``<bos>``/``<pad>``."""
    ids = ids.tolist() if isinstance(ids, Tensor) else list(ids)
    words = []
    for i in ids:
        token = vocab.idx_to_token[i]
        if token == "<eos>":
            break
        if token not in ("<bos>", "<pad>"):
            words.append(token)
    return " ".join(words)


if __name__ == "__main__":
    for zh, en in make_toy_pairs(5, torch.Generator().manual_seed(0)):
        print(f"{zh.replace(' ', ''):18s} -> {en}")
    src_vocab, tgt_vocab = build_vocabs(make_toy_pairs(2000, torch.Generator().manual_seed(0)))
    print(f"vocabulary: {len(src_vocab)} Chinese words, {len(tgt_vocab)} English words")
