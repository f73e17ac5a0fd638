"""Teacher forcing vs step-by-step decoding: one parallel pass equals T incremental passes; greedy decoding."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from snippets.transformer.decoding import greedy_decode, incremental_logits, shift_right, teacher_forced_logits
from snippets.transformer.model import Transformer
from tests.conftest import assert_close

F64 = torch.float64
BOS, EOS = 2, 3


def _model(seed: int, device: torch.device, *, norm_first: bool = False, dropout: float = 0.0, layers: int = 2):
    torch.manual_seed(seed)
    return Transformer(
        12,
        11,
        d_model=16,
        nhead=4,
        num_encoder_layers=layers,
        num_decoder_layers=layers,
        dim_feedforward=24,
        dropout=dropout,
        norm_first=norm_first,
        dtype=F64,
        device=device,
    ).eval()


def _batch(seed: int, device: torch.device):
    g = torch.Generator().manual_seed(seed)
    b, s, t = (int(x) for x in torch.randint(1, 6, (3,), generator=g))
    s += 1
    src = torch.randint(4, 12, (b, s), generator=g).to(device)
    tgt_in = shift_right(torch.randint(4, 11, (b, t), generator=g), BOS).to(device)
    valid = torch.randint(1, s + 1, (b,), generator=g)
    pad = (torch.arange(s)[None] >= valid[:, None]).to(device)  # True = padding
    return src, tgt_in, pad


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("norm_first", [False, True])
def test_teacher_forced_logits_equal_incremental_logits(seed: int, norm_first: bool, device: torch.device) -> None:
    """The runnable answer to 'is the decoder parallel in training?': yes, and it changes nothing."""
    model = _model(seed, device, norm_first=norm_first)
    src, tgt_in, pad = _batch(seed, device)
    with torch.no_grad():
        parallel = teacher_forced_logits(model, src, tgt_in, pad)
        stepwise = incremental_logits(model, src, tgt_in, pad)
        unmasked = teacher_forced_logits(model, src, tgt_in, pad, causal=False)
    assert parallel.shape == (src.size(0), tgt_in.size(1), 11)
    assert_close(parallel, stepwise)
    if tgt_in.size(1) > 1:  # without the mask, earlier positions see the future: different logits
        assert not torch.allclose(unmasked[:, :-1], stepwise[:, :-1])


@pytest.mark.parametrize("seed", range(3))
def test_matches_nn_transformer_teacher_forcing(seed: int, device: torch.device) -> None:
    """One teacher-forced pass == nn.Transformer with tgt_mask (weights copied, float64, train mode, fwd + bwd)."""
    model = _model(seed, device).train()
    ref = nn.Transformer(16, 4, 2, 2, 24, dropout=0.0, batch_first=True, dtype=F64, device=device).train()
    model.encoder.load_from_torch(ref.encoder)
    model.decoder.load_from_torch(ref.decoder)
    src, tgt_in, pad = _batch(seed, device)
    logits = teacher_forced_logits(model, src, tgt_in, pad)
    t = tgt_in.size(1)
    mask = nn.Transformer.generate_square_subsequent_mask(t, device=device, dtype=F64)
    h = ref(
        model.pos(model.src_embed(src)),
        model.pos(model.tgt_embed(tgt_in)),
        tgt_mask=mask,
        tgt_is_causal=True,
        src_key_padding_mask=pad,
        memory_key_padding_mask=pad,
    )
    expected = model.output(h)
    assert_close(logits, expected)
    g = torch.randn_like(logits)
    shared = [model.src_embed.weight, model.tgt_embed.weight, model.output.weight]  # used by both paths
    ours_grads = torch.autograd.grad((logits * g).sum(), shared)
    ref_grads = torch.autograd.grad((expected * g).sum(), shared)  # backward through nn.Transformer
    for a, b in zip(ours_grads, ref_grads):
        assert_close(a, b)


def test_forward_is_teacher_forcing(device: torch.device) -> None:
    model = _model(5, device)
    src, tgt_in, pad = _batch(5, device)
    with torch.no_grad():
        assert_close(model(src, tgt_in, src_key_padding_mask=pad), teacher_forced_logits(model, src, tgt_in, pad))


@pytest.mark.parametrize("seed", range(3))
def test_greedy_is_reproducible_and_consistent_with_teacher_forcing(seed: int, device: torch.device) -> None:
    model = _model(seed, device)
    with torch.no_grad():  # keep <eos> unlikely so that sequences get long
        model.output.bias[EOS] -= 5.0
    src, _, pad = _batch(seed, device)
    out = greedy_decode(model, src, BOS, EOS, max_len=7, src_key_padding_mask=pad)
    assert torch.equal(out, greedy_decode(model, src, BOS, EOS, max_len=7, src_key_padding_mask=pad))
    assert out.shape[0] == src.shape[0] and 1 <= out.shape[1] <= 7
    with torch.no_grad():  # fed its own output, one parallel pass predicts exactly that output
        again = teacher_forced_logits(model, src, shift_right(out, BOS), pad).argmax(-1)
    for row, row_again in zip(out, again):
        stop = int((row == EOS).nonzero()[0]) + 1 if (row == EOS).any() else len(row)
        assert torch.equal(row[:stop], row_again[:stop])
        assert torch.all(row[stop:] == EOS)


def test_greedy_stops_when_every_row_has_eos() -> None:
    model = _model(0, torch.device("cpu"))
    with torch.no_grad():
        model.output.bias[EOS] += 100.0  # <eos> always wins
    out = greedy_decode(model, torch.randint(4, 12, (3, 5)), BOS, EOS, max_len=9)
    assert torch.equal(out, torch.full((3, 1), EOS))


def test_source_encoded_once_target_decoded_step_by_step() -> None:
    model = _model(1, torch.device("cpu"))
    with torch.no_grad():
        model.output.bias[EOS] -= 100.0  # never stop early
    calls = {"encoder": 0, "decoder": 0}
    hooks = [getattr(model, n).register_forward_hook(lambda *a, n=n: calls.__setitem__(n, calls[n] + 1)) for n in calls]
    out = greedy_decode(model, torch.randint(4, 12, (2, 6)), BOS, EOS, max_len=5)
    for hk in hooks:
        hk.remove()
    assert out.shape == (2, 5)
    assert calls == {"encoder": 1, "decoder": 5}


def test_dropout_breaks_equality_in_training_mode() -> None:
    model = _model(2, torch.device("cpu"), dropout=0.3).train()
    src, tgt_in, pad = _batch(2, torch.device("cpu"))
    with torch.no_grad():
        a, b = teacher_forced_logits(model, src, tgt_in, pad), teacher_forced_logits(model, src, tgt_in, pad)
        assert not torch.allclose(a, b)
        model.eval()
        assert_close(teacher_forced_logits(model, src, tgt_in, pad), incremental_logits(model, src, tgt_in, pad))


def test_shift_right() -> None:
    y = torch.tensor([[5, 6, 7, EOS], [8, EOS, 1, 1]])
    assert torch.equal(shift_right(y, BOS), torch.tensor([[BOS, 5, 6, 7], [BOS, 8, EOS, 1]]))
    with pytest.raises(ValueError, match=r"targets must be non-empty token ids \(B, T\), got shape \(2, 0\)"):
        shift_right(torch.zeros(2, 0, dtype=torch.long), BOS)
    with pytest.raises(ValueError, match=r"got shape \(3,\)"):
        shift_right(torch.tensor([1, 2, 3]), BOS)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_len": 0}, "max_len must be >= 1, got max_len=0"),
        ({"bos_id": 11}, r"bos_id=11 is not a target token id in \[0, 11\)"),
        ({"eos_id": -1}, r"eos_id=-1 is not a target token id in \[0, 11\)"),
    ],
)
def test_greedy_rejects_bad_arguments(kwargs, match) -> None:
    model = _model(0, torch.device("cpu"))
    args = {"bos_id": BOS, "eos_id": EOS, "max_len": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        greedy_decode(model, torch.randint(4, 12, (1, 3)), **args)
