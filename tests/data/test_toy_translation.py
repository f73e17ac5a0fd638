"""The generated Chinese → English task: grammar, determinism, word-order changes, tensors and vocabularies."""

from __future__ import annotations

import itertools

import pytest
import torch

from snippets.data import toy_translation as toy
from snippets.data.toy_translation import (
    SHOWCASE_PAIRS,
    build_vocabs,
    make_toy_pairs,
    render_pair,
    strip_special,
    tensorize,
)

# The choice vectors (subject, time, tense, negation, place, verb, object, adjective, number+demonstrative)
# that render each hand-written showcase pair.
SHOWCASE_CHOICES = [
    [0, 0, 0, 0, 0, 0, 0, 0, 0],
    [3, 1, 0, 0, 4, 1, 2, 3, 2],
    [7, 3, 0, 1, 3, 5, 1, 2, 11],
    [5, 0, 0, 1, 0, 3, 2, 4, 5],
    [6, 2, 0, 0, 0, 2, 0, 0, 0],
]


@pytest.mark.parametrize(("choice", "pair"), list(zip(SHOWCASE_CHOICES, SHOWCASE_PAIRS)))
def test_grammar_produces_the_showcase_pairs(choice: list[int], pair: tuple[str, str]) -> None:
    assert render_pair(choice) == pair


def test_deterministic_for_a_seeded_generator() -> None:
    a = make_toy_pairs(200, torch.Generator().manual_seed(5))
    assert a == make_toy_pairs(200, torch.Generator().manual_seed(5))
    assert a != make_toy_pairs(200, torch.Generator().manual_seed(6))
    assert make_toy_pairs(0) == []


def test_translation_is_a_function_and_pairs_are_counted() -> None:
    """Every Chinese sentence has exactly one English rendering (so exact match can reach 100 %),
    and the grammar has 1,260,000 distinct pairs: checked exhaustively for one subject and one verb."""
    verb = 0  # 吃, with 4 possible objects
    n_obj = len(toy.OBJECTS[list(toy.VERBS)[verb]])
    pairs = {
        render_pair([0, t, tense, neg, place, verb, obj, adj, nd])
        for t, tense, neg, place, obj, adj, nd in itertools.product(
            range(4), range(2), range(2), range(5), range(n_obj), range(6), range(15)
        )
    }
    time_tense = 2 + 3  # no time word: past or present; 昨天 / 每天 / 明天 fix the tense
    assert len(pairs) == time_tense * 2 * 5 * n_obj * 6 * 15
    assert len({zh for zh, _ in pairs}) == len(pairs) == len({en for _, en in pairs})
    total_objects = sum(len(v) for v in toy.OBJECTS.values())
    assert len(toy.SUBJECTS) * time_tense * 2 * 5 * total_objects * 6 * 15 == 1_260_000
    sample = make_toy_pairs(5000, torch.Generator().manual_seed(0))
    mapping: dict[str, str] = {}
    for zh, en in sample:
        assert mapping.setdefault(zh, en) == en


def test_time_and_place_move_from_before_the_verb_to_the_end() -> None:
    """Chinese: S time place V O; English: S V O place time — a translator must reorder."""
    zh, en = SHOWCASE_PAIRS[1]
    z, e = zh.split(), en.split()
    assert z.index("昨天") < z.index("商店") < z.index("买") < z.index("书")
    assert e.index("bought") < e.index("books") < e.index("shop") < e.index("yesterday")
    sample = make_toy_pairs(2000, torch.Generator().manual_seed(1))
    with_time = [(z, e) for z, e in sample if e.endswith(("yesterday", "tomorrow", "every day"))]
    assert len(with_time) > 1000  # 3 of 4 time choices
    assert all(z.split()[1] in ("昨天", "明天", "每天") or z.startswith("我 的 朋友") for z, _ in with_time)


@pytest.mark.parametrize(
    ("choice", "pair"),
    [
        ([2, 0, 1, 0, 0, 0, 0, 0, 0], ("他 吃 一 个 苹果", "he eats an apple")),  # 3rd person -s, a -> an
        ([4, 0, 1, 1, 0, 0, 0, 1, 1], ("我们 不 吃 两 个 大 苹果", "we do not eat two big apples")),
        ([3, 0, 1, 1, 0, 0, 2, 0, 2], ("她 不 吃 三 条 鱼", "she does not eat three fish")),  # fish: no -s
        ([0, 3, 0, 0, 0, 1, 2, 0, 5], ("我 明天 买 这 本 书", "I will buy this book tomorrow")),
        ([0, 0, 0, 0, 0, 1, 2, 1, 6], ("我 买 了 这 两 本 大 书", "I bought these two big books")),
    ],
)
def test_english_agreement_rules(choice: list[int], pair: tuple[str, str]) -> None:
    assert render_pair(choice) == pair


def test_tensorize_pads_and_marks_sentences() -> None:
    pairs = SHOWCASE_PAIRS[:2]
    src_vocab, tgt_vocab = build_vocabs(pairs)
    assert [src_vocab.idx_to_token[i] for i in range(4)] == ["<unk>", "<pad>", "<bos>", "<eos>"]
    assert [tgt_vocab.idx_to_token[i] for i in range(4)] == ["<unk>", "<pad>", "<bos>", "<eos>"]
    data = tensorize(pairs, src_vocab, tgt_vocab)
    assert data.src.shape == (2, 10) and data.tgt.shape == (2, 11)  # longest: 10 words; 9 words + <bos>/<eos>
    assert data.src.dtype == torch.long
    assert data.src[0, 6:].tolist() == [1] * 4  # sentence 0 has 6 words, then <pad>
    assert data.tgt[:, 0].tolist() == [2, 2]  # <bos>
    assert data.tgt[0, 5].item() == 3 and data.tgt[0, 6:].tolist() == [1] * 5  # 4 words, <eos>, <pad>
    assert strip_special(data.tgt[1], tgt_vocab) == pairs[1][1]
    unknown = tensorize([("我 吃 了 一 个 猫", "I ate a zebra")], src_vocab, tgt_vocab)
    assert unknown.src[0, 5].item() == 0 and unknown.tgt[0, 4].item() == 0  # <unk>


def test_strip_special_stops_at_eos() -> None:
    _, tgt_vocab = build_vocabs(SHOWCASE_PAIRS)
    ids = [2] + tgt_vocab.encode("I ate an apple".split()).tolist() + [3, 5, 6, 1]
    assert strip_special(ids, tgt_vocab) == "I ate an apple"
    assert strip_special(torch.tensor(ids), tgt_vocab) == "I ate an apple"


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="n must be >= 0, got n=-1"):
        make_toy_pairs(-1)
    src_vocab, tgt_vocab = build_vocabs(SHOWCASE_PAIRS)
    with pytest.raises(ValueError, match="pairs is empty"):
        tensorize([], src_vocab, tgt_vocab)
