"""NotImplementedError fails at call time, abc at instantiation; EncoderDecoder wires any pair."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from snippets.attention.bahdanau import Seq2SeqDecoder, Seq2SeqEncoder
from snippets.python.abstract_base import AbstractDecoder, AbstractEncoder, Decoder, Encoder, EncoderDecoder
from tests.conftest import assert_close

F64 = torch.float64


class LinearEncoder(Encoder):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(3, 4, dtype=F64)

    def forward(self, X, *args):
        return self.proj(X).tanh()  # (B, T, 4)


class MeanDecoder(Decoder):
    def __init__(self) -> None:
        super().__init__()
        self.out = nn.Linear(4 + 2, 5, dtype=F64)

    def init_state(self, enc_outputs, *args):
        return enc_outputs.mean(1)  # (B, 4)

    def forward(self, X, state):
        ctx = state.unsqueeze(1).expand(-1, X.size(1), -1)
        return self.out(torch.cat([X, ctx], dim=-1)), state


def test_not_overriding_fails_only_when_called() -> None:
    class Forgetful(Encoder):
        pass

    enc = Forgetful()  # created without complaint
    assert isinstance(enc, nn.Module)
    with pytest.raises(NotImplementedError, match="Forgetful must override Encoder.forward"):
        enc(torch.zeros(1))

    class HalfDone(Decoder):
        def init_state(self, enc_outputs, *args):
            return enc_outputs

    dec = HalfDone()
    assert torch.equal(dec.init_state(torch.ones(2)), torch.ones(2))  # the overridden method works
    with pytest.raises(NotImplementedError, match="HalfDone must override Decoder.forward"):
        dec(torch.zeros(1), None)


def test_abc_fails_at_instantiation() -> None:
    class Forgetful(AbstractEncoder):
        pass

    with pytest.raises(TypeError, match="Can't instantiate abstract class Forgetful"):
        Forgetful()

    class HalfDone(AbstractDecoder):
        def init_state(self, enc_outputs, *args):
            return enc_outputs

    with pytest.raises(TypeError, match="abstract method forward"):
        HalfDone()
    assert AbstractDecoder.__abstractmethods__ == frozenset({"init_state", "forward"})

    class Done(AbstractEncoder):
        def forward(self, X, *args):
            return X + 1

    assert torch.equal(Done()(torch.zeros(2)), torch.ones(2))


def test_nn_module_without_forward_raises_not_implemented() -> None:
    class NoForward(nn.Module):
        pass

    m = NoForward()
    with pytest.raises(NotImplementedError, match='Module \\[NoForward\\] is missing the required "forward" function'):
        m(torch.zeros(1))


def test_calling_an_abstract_method_body_directly_returns_none() -> None:
    class Done(AbstractEncoder):
        def forward(self, X, *args):
            return super().forward(X)  # the abstract body is `...`: it runs and returns None

    assert Done()(torch.zeros(1)) is None


def test_registered_virtual_subclass_passes_isinstance_without_inheriting() -> None:
    class Probe(AbstractEncoder):
        pass

    assert not issubclass(Seq2SeqEncoder, Probe)
    Probe.register(Seq2SeqEncoder)  # duck-typed project class, declared an implementation
    assert issubclass(Seq2SeqEncoder, Probe) and isinstance(Seq2SeqEncoder(10, 4, 8), Probe)
    assert Probe not in Seq2SeqEncoder.__mro__


@pytest.mark.parametrize("seed", range(3))
def test_encoder_decoder_matches_composing_by_hand(seed: int, device: torch.device) -> None:
    torch.manual_seed(seed)
    enc, dec = LinearEncoder().to(device), MeanDecoder().to(device)
    model = EncoderDecoder(enc, dec)
    g = torch.Generator().manual_seed(seed)
    b, t_src, t_tgt = (int(v) for v in torch.randint(1, 6, (3,), generator=g))
    src = torch.randn(b, t_src, 3, generator=g, dtype=F64).to(device).requires_grad_()
    tgt = torch.randn(b, t_tgt, 2, generator=g, dtype=F64).to(device)
    out, state = model(src, tgt)
    ref, ref_state = dec(tgt, dec.init_state(enc(src)))
    assert out.shape == (b, t_tgt, 5)
    assert_close(out, ref)
    assert_close(state, ref_state)
    (g_ours,) = torch.autograd.grad(out.sum(), src)
    (g_ref,) = torch.autograd.grad(ref.sum(), src)
    assert_close(g_ours, g_ref)


def test_encoder_decoder_accepts_duck_typed_modules() -> None:
    class EncoderAdapter(nn.Module):  # bahdanau's encoder returns (outputs, state) already
        def __init__(self) -> None:
            super().__init__()
            self.inner = Seq2SeqEncoder(10, 4, 8)

        def forward(self, X, *args):
            return self.inner(X, *args)

    class DecoderAdapter(nn.Module):  # bahdanau's init_state takes the pieces, d2l's takes the tuple
        def __init__(self) -> None:
            super().__init__()
            self.inner = Seq2SeqDecoder(10, 4, 8)

        def init_state(self, enc_outputs, *args):
            return self.inner.init_state(*enc_outputs, *args)

        def forward(self, X, state):
            return self.inner(X, state)

    torch.manual_seed(0)
    enc, dec = EncoderAdapter(), DecoderAdapter()
    src, tgt = torch.randint(3, 10, (2, 5)), torch.randint(3, 10, (2, 4))
    logits, _ = EncoderDecoder(enc, dec)(src, tgt)
    ref, _ = dec.inner(tgt, dec.inner.init_state(*enc.inner(src)))
    assert torch.equal(logits, ref)


def test_rejects_decoder_without_init_state() -> None:
    with pytest.raises(TypeError, match="decoder Linear has no init_state method"):
        EncoderDecoder(LinearEncoder(), nn.Linear(2, 2))


def test_not_implemented_is_a_value_not_an_exception() -> None:
    assert (1).__add__("a") is NotImplemented  # binary dunders *return* it: "try the other operand"
    with pytest.raises(TypeError, match="unsupported operand type"):
        _ = 1 + "a"  # both sides returned NotImplemented
    with pytest.raises(TypeError, match="exceptions must derive from BaseException"):
        raise NotImplemented  # noqa: F901 - the classic typo for NotImplementedError
    assert issubclass(NotImplementedError, RuntimeError)
