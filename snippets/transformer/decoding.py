"""Training in parallel, generating step by step: teacher forcing vs incremental and greedy decoding.

Reference: Vaswani et al. 2017, §3.2.3 (masking "ensures that the predictions for position i can
depend only on the known outputs at positions less than i") and §6.1; d2l.ai §10.7.6, §11.7.
Teacher forcing feeds ``<bos> y_1 … y_{T-1}`` and scores ``y_1 … y_T`` in *one* decoder pass; the
causal mask makes logit ``t`` of that pass identical to the logit of a step-by-step pass that has only
seen ``<bos> y_1 … y_{t-1}``. At inference the source is still encoded in one parallel pass; only the
generated tokens are sequential: ``y_t = argmax P(· | y_<t, x)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from snippets.transformer.model import Transformer

__all__ = ["shift_right", "teacher_forced_logits", "incremental_logits", "greedy_decode"]


# --8<-- [start:shift_right]
def shift_right(targets: Tensor, bos_id: int) -> Tensor:
    """Decoder input for teacher forcing: ``targets (B, T) = y_1 … y_T`` → ``<bos> y_1 … y_{T-1}``."""
    if targets.dim() != 2 or targets.size(1) == 0:
        raise ValueError(f"targets must be non-empty token ids (B, T), got shape {tuple(targets.shape)}")
    bos = torch.full_like(targets[:, :1], bos_id)
    return torch.cat([bos, targets[:, :-1]], dim=1)


# --8<-- [end:shift_right]


# --8<-- [start:teacher_vs_incremental]
def teacher_forced_logits(
    model: Transformer, src: Tensor, tgt_in: Tensor, src_key_padding_mask: Tensor | None = None, *, causal: bool = True
) -> Tensor:
    """All ``T`` target positions in one parallel pass: ``src: (B, S)``, ``tgt_in: (B, T)`` →
    logits ``(B, T, V)`` (training). ``causal=False`` removes the mask, to show what it prevents."""
    memory = model.encode(src, src_key_padding_mask)
    return model.decode(tgt_in, memory, src_key_padding_mask, causal=causal)


def incremental_logits(
    model: Transformer, src: Tensor, tgt_in: Tensor, src_key_padding_mask: Tensor | None = None
) -> Tensor:
    """The same logits ``(B, T, V)`` one step at a time (inference): step ``t`` sees only ``tgt_in[:, :t+1]``.

    The source is encoded once; the loop over ``t`` is the lesson (it is what generation must do).
    Each step recomputes the whole prefix — a KV cache avoids that, with the same result.
    """
    memory = model.encode(src, src_key_padding_mask)
    steps = [
        model.decode(tgt_in[:, : t + 1], memory, src_key_padding_mask)[:, -1]  # last position only
        for t in range(tgt_in.size(1))
    ]
    return torch.stack(steps, dim=1)  # (B, T, V)


# --8<-- [end:teacher_vs_incremental]


# --8<-- [start:greedy]
@torch.no_grad()
def greedy_decode(
    model: Transformer,
    src: Tensor,
    bos_id: int,
    eos_id: int,
    max_len: int,
    src_key_padding_mask: Tensor | None = None,
) -> Tensor:
    """Generate ``(B, n)`` token ids, ``n <= max_len``, by repeatedly appending the argmax token.

    The output excludes ``<bos>``; it includes ``<eos>``, after which a row repeats ``<eos>``.
    Stops early once every row has produced ``<eos>``. Deterministic in ``model.eval()`` mode
    (with dropout active, i.e. in training mode, every call samples different dropout masks).
    """
    vocab = model.output.out_features
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got max_len={max_len}")
    for name, tok in (("bos_id", bos_id), ("eos_id", eos_id)):
        if not 0 <= tok < vocab:
            raise ValueError(f"{name}={tok} is not a target token id in [0, {vocab})")
    memory = model.encode(src, src_key_padding_mask)  # the source: one parallel pass
    ys = torch.full((src.size(0), 1), bos_id, dtype=torch.long, device=src.device)
    done = torch.zeros(src.size(0), dtype=torch.bool, device=src.device)
    for _ in range(max_len):  # the target: one token per step
        logits = model.decode(ys, memory, src_key_padding_mask)[:, -1]  # (B, V)
        nxt = logits.argmax(-1).masked_fill(done, eos_id)
        ys = torch.cat([ys, nxt[:, None]], dim=1)
        done |= nxt == eos_id
        if bool(done.all()):
            break
    return ys[:, 1:]


# --8<-- [end:greedy]


if __name__ == "__main__":
    torch.manual_seed(0)
    model = Transformer(
        10,
        10,
        d_model=16,
        nhead=2,
        num_encoder_layers=2,
        num_decoder_layers=2,
        dim_feedforward=32,
        dropout=0.0,
        dtype=torch.float64,
    ).eval()
    src, tgt_in = torch.randint(4, 10, (2, 6)), torch.randint(4, 10, (2, 5))
    parallel = teacher_forced_logits(model, src, tgt_in)
    stepwise = incremental_logits(model, src, tgt_in)
    unmasked = teacher_forced_logits(model, src, tgt_in, causal=False)
    print("max |parallel - step-by-step| with the causal mask:   ", (parallel - stepwise).abs().max().item())
    print("max |parallel - step-by-step| without the causal mask:", (unmasked - stepwise).abs().max().item())
    print("greedy:", greedy_decode(model, src, bos_id=2, eos_id=3, max_len=6).tolist())
