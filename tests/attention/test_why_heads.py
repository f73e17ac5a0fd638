"""Two heads solve the two-offset copy task; one head of the same width and size does not."""

from __future__ import annotations

import math

import pytest
import torch

from snippets.attention.why_heads import (
    OFFSETS,
    AttentionOnlyModel,
    train_attention_only,
    two_offset_copy_task,
)


def test_task_targets_match_a_brute_force_loop() -> None:
    tokens, targets = two_offset_copy_task(5, 9, 6, generator=torch.Generator().manual_seed(0))
    assert tokens.shape == (5, 9) and targets.shape == (5, 9, 2)
    assert 0 <= tokens.min() and tokens.max() < 6
    for b in range(5):
        for t in range(9):
            for j, off in enumerate(OFFSETS):
                expected = tokens[b, t - off].item() if t >= off else -100
                assert targets[b, t, j].item() == expected


def test_parameter_count_depends_on_width_not_heads() -> None:
    d, vocab, seq_len = 8, 8, 8
    counts = {h: sum(p.numel() for p in AttentionOnlyModel(vocab, seq_len, d, h).parameters()) for h in (1, 2, 4, 8)}
    attn = 4 * d * d + 4 * d
    assert set(counts.values()) == {vocab * d + seq_len * d + attn + d * 2 * vocab + 2 * vocab}


@pytest.fixture
def one_thread():
    """Tiny models train several times faster on one thread (no per-op thread sync)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_two_heads_solve_what_one_head_cannot(device: torch.device, one_thread) -> None:
    """Small variant (120 steps): same d_model = 8 and 560 parameters, same data and steps: 2 heads
    reach ~0 loss with one head per offset; 1 head learns t-1 but stays near chance on t-3 (1/8)."""
    one = train_attention_only(1, steps=120, lr=0.03, seed=0, device=device)
    two = train_attention_only(2, steps=120, lr=0.03, seed=0, device=device)
    assert one.num_params == two.num_params == 560
    assert two.eval_loss < 0.01 and min(two.accuracy) > 0.99
    assert one.eval_loss > 0.3 and one.eval_loss / two.eval_loss > 100
    assert one.accuracy[0] > 0.9  # the single head does copy ONE of the two tokens
    assert one.accuracy[1] < 0.4  # ... but not the other
    # the single head's loss has flattened well above 0: the last 30 steps improve by < 0.1 nats
    late = sum(one.losses[90:]) / 30
    assert late > 0.4 and sum(one.losses[60:90]) / 30 - late < 0.1
    # ... after starting near ln(8) (uniform guessing)
    assert abs(one.losses[0] - math.log(8)) < 0.5
    # attention maps (h, L, L): each of the two heads specialises on one offset, t = 3..L-1
    offsets = [{t - int(a[t].argmax()) for t in range(3, a.size(0))} for a in two.attention]
    assert sorted(offsets, key=min) == [{1}, {3}]
    assert all(a[t, t - min(o)] > 0.9 for a, o in zip(two.attention, offsets) for t in range(3, 8))
    assert [t - int(one.attention[0, t].argmax()) for t in range(3, 8)] == [1] * 5
    # the single head DOES look at both tokens (about 0.5 / 0.43): finding them is not the problem,
    # unmixing their average is
    assert all(one.attention[0, t, t - off] > 0.35 for t in range(3, 8) for off in OFFSETS)
    assert one.attention.shape == (1, 8, 8) and two.attention.shape == (2, 8, 8)
    # attention maps are causal and rows are distributions
    torch.testing.assert_close(two.attention.sum(-1), torch.ones(2, 8))
    assert torch.all(two.attention.triu(1) == 0)


def test_training_is_deterministic(one_thread) -> None:
    a = train_attention_only(2, steps=5, seed=3)
    b = train_attention_only(2, steps=5, seed=3)
    assert a.losses == b.losses and a.eval_loss == b.eval_loss


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((0, 8, 8), "need n > 0"),
        ((4, 3, 8), "seq_len > 3"),
        ((4, 8, 1), "vocab > 1"),
    ],
)
def test_task_rejects_bad_sizes(args, match) -> None:
    with pytest.raises(ValueError, match=match):
        two_offset_copy_task(*args)
