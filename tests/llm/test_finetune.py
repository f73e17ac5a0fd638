"""Pretraining and fine-tuning: freezing, per-group learning rates, the classifier, the transfer demo."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from snippets.data.text import is_toy_sentence
from snippets.llm.finetune import (
    SequenceClassifier,
    finetune,
    fit_threshold,
    freeze,
    make_grammaticality_task,
    param_groups_with_lr,
    sentence_nll,
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


def _classifier(vocab, device, pool="mean", seed=0) -> SequenceClassifier:
    torch.manual_seed(seed)
    return SequenceClassifier(TinyGPT(len(vocab), 16, 1, 2, 1, max_len=32, dtype=F64, device=device), 2, pool)


def test_frozen_body_is_bit_identical_and_absent_from_the_optimizer(toy, device: torch.device) -> None:
    _, vocab, task = toy
    model = _classifier(vocab, device)
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


@pytest.mark.parametrize("pool", ["mean", "last"])
def test_classifier_ignores_the_padding(pool: str, toy, device: torch.device) -> None:
    _, vocab, (ids, lengths, _) = toy
    model = _classifier(vocab, device, pool).eval()
    ids, lengths = ids.to(device), lengths.to(device)
    other = ids.clone()
    pad = torch.arange(ids.size(1), device=device)[None] >= lengths[:, None]
    other[pad] = 3  # any token in the padded tail
    assert pad.any()
    assert_close(model(ids, lengths), model(other, lengths))
    manual = torch.stack(
        [  # one sequence at a time, without any padding
            model.head(
                model.body.features(ids[b : b + 1, : lengths[b]])[0].mean(0)
                if pool == "mean"
                else model.body.features(ids[b : b + 1, : lengths[b]])[0, -1]
            )
            for b in range(4)
        ]
    )
    assert_close(model(ids[:4], lengths[:4]), manual)
    with pytest.raises(ValueError, match="lengths must be"):
        model(ids[:2], torch.tensor([0, 1], device=device))
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        SequenceClassifier(model.body, 1)
    with pytest.raises(ValueError, match="pool must be 'mean' or 'last'"):
        SequenceClassifier(model.body, 2, "max")  # type: ignore[arg-type]


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
