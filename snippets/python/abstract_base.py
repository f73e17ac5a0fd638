"""Interfaces in Python: a base class whose methods ``raise NotImplementedError`` vs ``abc.ABC``.

The encoder–decoder interface of d2l.ai §10.6 (``Encoder``, ``Decoder``, ``EncoderDecoder``) written
both ways. With ``NotImplementedError`` a subclass that forgets to override a method is created
without complaint and fails only when that method is *called*; with ``@abstractmethod`` it cannot
even be instantiated (``TypeError``). ``nn.Module`` itself uses the first style: a module without
``forward`` raises ``NotImplementedError`` when called. Reference: Python docs, ``abc`` and
``NotImplementedError``; d2l.ai §10.6 (encoder–decoder architecture).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from torch import Tensor, nn

__all__ = ["Encoder", "Decoder", "EncoderDecoder", "AbstractEncoder", "AbstractDecoder"]


# --8<-- [start:not_implemented]
class Encoder(nn.Module):
    """Base encoder: ``forward(X, *args)`` must be overridden (d2l style)."""

    def forward(self, X: Tensor, *args: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must override Encoder.forward")


class Decoder(nn.Module):
    """Base decoder: ``init_state(enc_outputs, *args)`` and ``forward(X, state)`` must be overridden."""

    def init_state(self, enc_outputs: Any, *args: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must override Decoder.init_state")

    def forward(self, X: Tensor, state: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must override Decoder.forward")


# --8<-- [end:not_implemented]


# --8<-- [start:abc]
class AbstractEncoder(nn.Module, ABC):
    """The same interface with ``abc``: a subclass without ``forward`` cannot be instantiated."""

    @abstractmethod
    def forward(self, X: Tensor, *args: Any) -> Any: ...


class AbstractDecoder(nn.Module, ABC):
    @abstractmethod
    def init_state(self, enc_outputs: Any, *args: Any) -> Any: ...

    @abstractmethod
    def forward(self, X: Tensor, state: Any) -> Any: ...


# --8<-- [end:abc]


# --8<-- [start:encoder_decoder]
class EncoderDecoder(nn.Module):
    """``decoder(dec_X, decoder.init_state(encoder(enc_X, *args), *args))`` for any encoder/decoder pair.

    As in d2l, ``init_state`` receives the encoder's whole output. Works with subclasses of either
    base, and with any modules that merely *have* these methods (duck typing).
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        if not callable(getattr(decoder, "init_state", None)):
            raise TypeError(f"decoder {type(decoder).__name__} has no init_state method")
        self.encoder, self.decoder = encoder, decoder

    def forward(self, enc_X: Tensor, dec_X: Tensor, *args: Any) -> Any:
        enc_outputs = self.encoder(enc_X, *args)
        state = self.decoder.init_state(enc_outputs, *args)
        return self.decoder(dec_X, state)


# --8<-- [end:encoder_decoder]


if __name__ == "__main__":

    class Forgetful(Encoder):  # forgot to override forward: fine until called
        pass

    enc = Forgetful()
    print("created:", type(enc).__name__)
    try:
        enc(None)
    except NotImplementedError as err:
        print("on call: NotImplementedError:", err)

    class ForgetfulABC(AbstractEncoder):
        pass

    try:
        ForgetfulABC()
    except TypeError as err:
        print("on instantiation: TypeError:", err)
