"""Pretraining and fine-tuning: freezing, per-group learning rates, the classifier (causal LM or encoder
body), the reversal task built from held-out text, and both transfer demos (GPT and BERT/MLM)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from snippets.data.text import is_toy_sentence
from snippets.llm.bert import CLS, PAD, SEP, BERTEncoder, BERTModel, bert_vocab, timemachine_paragraphs
from snippets.llm.finetune import (
    SequenceClassifier,
    encode_snippets,
    finetune,
    finetune_demo,
    fit_threshold,
    freeze,
    make_grammaticality_task,
    make_reversal_task,
    param_groups_with_lr,
    reverse_words,
    sentence_nll,
    text_snippets,
    toy_lm_stream,
    transfer_demo,
)
from snippets.llm.gpt import TinyGPT
from tests.conftest import assert_close

F64 = torch.float64


@pytest.fixture(scope="module")
def toy():
    """A small word-level vocabulary and a labelled task built from the toy grammar."""
    stream, vocab = toy_lm_stream(200, torch.Generator().manual_seed(0))
    task = make_grammaticality_task(40, vocab, torch.Generator().manual_seed(1))
    return stream, vocab, task


@pytest.fixture(scope="module")
def chars():
    """Held-out snippets of The Time Machine, a character vocabulary and a small reversal task."""
    paragraphs = timemachine_paragraphs()
    snippets = [s for s in text_snippets(paragraphs[::4], 16) if reverse_words(s) != s]
    vocab = bert_vocab([[list(s) for s in text_snippets(paragraphs[1::4], 16)]])
    task = make_reversal_task(snippets[:40], vocab, torch.Generator().manual_seed(1))
    return snippets, vocab, task


def _classifier(vocab, device, pool="mean", seed=0) -> SequenceClassifier:
    torch.manual_seed(seed)
    return SequenceClassifier(TinyGPT(len(vocab), 16, 1, 2, 1, max_len=32, dtype=F64, device=device), 2, pool)


def _encoder_classifier(vocab, device, pool="mean", seed=0) -> SequenceClassifier:
    torch.manual_seed(seed)
    body = BERTEncoder(len(vocab), 16, 1, 2, 32, max_len=18, dropout=0.0, dtype=F64, device=device)
    return SequenceClassifier(body, 2, pool)


@pytest.mark.parametrize("body", ["gpt", "bert"])
def test_frozen_body_is_bit_identical_and_absent_from_the_optimizer(
    body: str, toy, chars, device: torch.device
) -> None:
    if body == "gpt":
        _, vocab, task = toy
        model = _classifier(vocab, device)
    else:
        _, vocab, task = chars
        model = _encoder_classifier(vocab, device)
    freeze(model.body)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    groups = param_groups_with_lr(model.body, model.head, 1e-3, 1e-2)
    in_optimizer = {id(p) for g in groups for p in g["params"]}
    assert not in_optimizer & {id(p) for p in model.body.parameters()}
    assert in_optimizer == {id(p) for p in model.head.parameters()}
    finetune(model, tuple(t.to(device) for t in task), 5, seed=0)
    after = model.state_dict()
    for name, value in before.items():
        if name.startswith("body."):
            assert torch.equal(after[name], value), name  # not a single bit changed
        else:
            assert not torch.equal(after[name], value), name  # the head did train
    assert all(p.grad is None for p in model.body.parameters())


def test_param_groups_apply_their_own_learning_rates(toy, device: torch.device) -> None:
    """One SGD step moves each group by exactly -lr * grad with its own lr."""
    _, vocab, (ids, lengths, labels) = toy
    model = _classifier(vocab, device)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(param_groups_with_lr(model.body, model.head, 0.1, 0.7))
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.7]
    F.cross_entropy(model(ids.to(device), lengths.to(device)), labels.to(device)).backward()
    opt.step()
    for name, p in model.named_parameters():
        lr = 0.7 if name.startswith("head.") else 0.1
        assert_close(p.detach(), before[name] - lr * p.grad)
    with pytest.raises(ValueError, match="learning rates must be >= 0"):
        param_groups_with_lr(model.body, model.head, -1.0, 0.1)


@pytest.mark.parametrize(
    ("body", "pool"), [("gpt", "mean"), ("gpt", "last"), ("bert", "mean"), ("bert", "last"), ("bert", "cls")]
)
def test_classifier_ignores_the_padding(body: str, pool: str, toy, chars, device: torch.device) -> None:
    if body == "gpt":
        _, vocab, (ids, lengths, _) = toy
        model = _classifier(vocab, device, pool).eval()
        features = model.body.features  # (1, n) -> (1, n, d), causal
    else:
        _, vocab, (ids, lengths, _) = chars
        model = _encoder_classifier(vocab, device, pool).eval()
        features = model.body  # (1, n) -> (1, n, d), no padding: no mask needed
    ids, lengths = ids.to(device), lengths.to(device)
    other = ids.clone()
    pad = torch.arange(ids.size(1), device=device)[None] >= lengths[:, None]
    other[pad] = 3  # any token in the padded tail
    assert pad.any()
    assert_close(model(ids, lengths), model(other, lengths))
    pooled = {"mean": lambda h: h.mean(0), "last": lambda h: h[-1], "cls": lambda h: h[0]}[pool]
    manual = torch.stack(  # one sequence at a time, without any padding
        [model.head(pooled(features(ids[b : b + 1, : lengths[b]])[0])) for b in range(4)]
    )
    assert_close(model(ids[:4], lengths[:4]), manual)
    with pytest.raises(ValueError, match="lengths must be"):
        model(ids[:2], torch.tensor([0, 1], device=device))
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        SequenceClassifier(model.body, 1)
    with pytest.raises(ValueError, match="pool must be 'mean', 'last' or 'cls'"):
        SequenceClassifier(model.body, 2, "max")  # type: ignore[arg-type]
    if body == "gpt":
        with pytest.raises(ValueError, match="pool='cls' needs a BERTEncoder body"):
            SequenceClassifier(model.body, 2, "cls")
    with pytest.raises(ValueError, match="body must be a TinyGPT or a BERTEncoder"):
        SequenceClassifier(torch.nn.Linear(4, 4), 2)  # type: ignore[arg-type]


def test_grammaticality_task_labels(toy) -> None:
    _, vocab, (ids, lengths, labels) = toy
    for i in range(len(labels)):
        words = vocab.decode(ids[i, : lengths[i]], sep=" ").split()
        assert words[-1] == "<eos>" and all(w != "<pad>" for w in words)
        assert labels[i] == int(is_toy_sentence(" ".join(words[:-1])))
    assert labels[0::2].all()  # untouched sentences are grammatical
    assert labels[1::2].float().mean() < 0.2  # swapping two adjacent words almost always breaks them


def test_sentence_nll_and_threshold(toy, device: torch.device) -> None:
    _, vocab, (ids, lengths, labels) = toy
    torch.manual_seed(0)
    lm = TinyGPT(len(vocab), 16, 1, 2, max_len=32, dtype=F64, device=device)
    ids, lengths = ids.to(device), lengths.to(device)
    nll = sentence_nll(lm, ids, lengths, bos_id=2)
    for b in range(3):  # one sentence at a time: -mean log P(x_t | bos, x_<t)
        x = torch.cat([torch.tensor([2], device=device), ids[b, : lengths[b]]])
        logp = torch.log_softmax(lm(x[None, :-1])[0], dim=-1)
        assert_close(nll[b], -logp[torch.arange(lengths[b]), x[1:]].mean())
    scores = torch.tensor([0.1, 0.5, 0.2, 0.9, 0.4], dtype=F64)
    assert fit_threshold(scores, torch.tensor([1, 0, 1, 0, 1])) == 0.4  # separable: all correct


def test_pretraining_helps_the_downstream_task() -> None:
    """Same labelled examples (256), steps and lr: a pretrained body fine-tunes to a much better
    classifier than random init, and the frozen LM's own surprise is almost a perfect classifier.
    Over 8 seeds (n_test=1000): scratch 0.51–0.54, fine-tuned 0.63–0.77, LM score 0.98–0.99."""
    res = transfer_demo(
        n_labelled=256,
        pretrain_steps=60,
        finetune_steps=50,
        n_test=300,
        methods=("scratch", "finetuned", "lm_score"),
        seed=0,
    )
    assert res["lm_loss_end"] < res["lm_loss_start"] - 1.0  # pretraining did learn the language
    assert res["scratch"] < 0.6  # near chance (0.5)
    assert res["finetuned"] > res["scratch"] + 0.05  # 8 seeds: gains 0.09-0.25, never below 0.09
    assert res["lm_score"] > 0.9
    with pytest.raises(ValueError, match="methods must be among"):
        transfer_demo(methods=("zero-shot",))


def test_text_snippets_cut_paragraphs_into_whole_words() -> None:
    paragraphs = timemachine_paragraphs()[:30]
    snippets = text_snippets(paragraphs, 16)
    assert all(0 < len(s) <= 16 for s in snippets)
    words = [w[:16] for par in paragraphs for sentence in par for w in sentence]
    assert " ".join(snippets).split() == words  # nothing lost, nothing split mid-word, in order
    assert text_snippets([[["the", "time", "traveller"]], [["for", "so", "it"]]], 9) == [
        "the time",
        "traveller",
        "for so it",  # a snippet never spans two paragraphs
    ]
    assert text_snippets([[["abcdefgh"]]], 5) == ["abcde"]  # a word longer than width is cut
    assert reverse_words("the time machine") == "eht emit enihcam"


def test_reversal_task_is_balanced_deterministic_and_labelled_right(chars, device: torch.device) -> None:
    snippets, vocab, _ = chars
    n = 41  # odd: exactly n // 2 are reversed
    ids, lengths, labels = make_reversal_task(snippets[:n], vocab, torch.Generator().manual_seed(0), device=device)
    assert ids.device.type == lengths.device.type == labels.device.type == device.type
    again = make_reversal_task(snippets[:n], vocab, torch.Generator().manual_seed(0), device=device)
    assert all(torch.equal(a, b) for a, b in zip((ids, lengths, labels), again))  # same seed, same task
    other = make_reversal_task(snippets[:n], vocab, torch.Generator().manual_seed(1), device=device)
    assert not torch.equal(labels, other[2])  # another seed, other labels
    assert int((labels == 0).sum()) == n // 2 and int((labels == 1).sum()) == n - n // 2  # balanced
    for i in range(n):
        tokens = vocab.decode(ids[i], sep="|").split("|")
        assert tokens[0] == CLS and tokens[lengths[i] - 1] == SEP and set(tokens[lengths[i] :]) <= {PAD}
        text = "".join(tokens[1 : lengths[i] - 1])
        assert text == (snippets[i] if labels[i] else reverse_words(snippets[i]))
        assert sorted(text) == sorted(snippets[i])  # same letters: only their order differs


def test_scratch_encoder_starts_where_pretraining_started(chars) -> None:
    """finetune_demo's "scratch" body: the same seed and sizes give the pretraining's initial encoder."""
    _, vocab, _ = chars
    torch.manual_seed(5)
    start = BERTModel(len(vocab), 16, 1, 2, 32, max_len=18, dropout=0.0).encoder.state_dict()
    torch.manual_seed(5)
    scratch = BERTEncoder(len(vocab), 16, 1, 2, 32, max_len=18, dropout=0.0).state_dict()
    assert start.keys() == scratch.keys() and all(torch.equal(start[k], scratch[k]) for k in start)


def test_mlm_route_rejects_bad_input(chars) -> None:
    snippets, vocab, _ = chars
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="width must be >= 1"):
        text_snippets([[["a"]]], 0)
    with pytest.raises(ValueError, match="snippets must not be empty"):
        encode_snippets([], vocab)
    with pytest.raises(ValueError, match="must not be empty strings"):
        encode_snippets(["the", ""], vocab)
    with pytest.raises(ValueError, match="need at least 2 snippets"):
        make_reversal_task(snippets[:1], vocab, gen)
    with pytest.raises(ValueError, match="must change when their words are reversed"):
        make_reversal_task(["the time", "a did i"], vocab, gen)
    with pytest.raises(ValueError, match="methods must be among"):
        finetune_demo(methods=("lm_score",))
    with pytest.raises(ValueError, match="n_labelled and n_test must be >= 2"):
        finetune_demo(n_labelled=1)
    with pytest.raises(ValueError, match="exceeds the .* held-out snippets"):
        finetune_demo(n_test=100_000)


def test_mlm_pretraining_helps_the_downstream_task() -> None:
    """The default sizes (300 MLM steps, 256 labelled snippets, 100 fine-tuning steps), 300 test
    snippets, seed 0. Over seeds 0-9 (1000 test snippets): scratch 0.52-0.71, fine-tuned
    0.80-0.86, frozen probe 0.51-0.61; fine-tuned beats scratch by 0.13-0.33 at every seed."""
    res = finetune_demo(n_test=300, seed=0)
    assert res["mlm_loss_end"] < res["mlm_loss_start"] - 1.0  # pretraining lowered the MLM loss
    assert res["mlm_loss_end"] < res["mlm_loss_unigram"] - 0.5  # ... well below letter frequencies alone
    assert res["scratch"] < 0.75
    assert res["finetuned"] > 0.8
    assert res["finetuned"] > res["scratch"] + 0.08  # seed 0: 0.84 vs 0.71
    assert res["probe"] < res["finetuned"] - 0.15  # the frozen encoder's features are not enough
