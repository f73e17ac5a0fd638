"""Why several heads: a task one head cannot solve at equal width and parameter count.

Reference: Vaswani et al. 2017, §3.2.2 ("with a single attention head, averaging inhibits
this"); Michel et al. 2019, "Are Sixteen Heads Really Better than One?" (many trained heads are
prunable). Task: at step t output BOTH the token at t-1 and the token at t-3. One head gives
each query one weighted average ``sum_s a_s v(x_s)``: the two tokens end up mixed in the same
d_model-wide vector, and which one came from t-3 cannot be read back linearly. Two heads of
width d_model/2 each pick one offset and write to separate halves of the concatenation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from snippets.attention.multihead import MultiHeadAttention
from snippets.attention.positional import LearnedPositionalEmbedding

__all__ = ["OFFSETS", "two_offset_copy_task", "AttentionOnlyModel", "TrainResult", "train_attention_only"]

OFFSETS = (1, 3)  # targets: the tokens at t-1 and at t-3
IGNORE = -100  # cross_entropy's ignore_index: target undefined (t < offset)


# --8<-- [start:task]
def two_offset_copy_task(
    n: int, seq_len: int = 8, vocab: int = 8, *, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Random tokens ``(n, seq_len)`` and targets ``(n, seq_len, 2)``: ``targets[:, t, j]`` is
    the token at ``t - OFFSETS[j]`` (``-100``, i.e. ignored, where that position does not exist)."""
    if n <= 0 or vocab <= 1 or seq_len <= max(OFFSETS):
        raise ValueError(f"need n > 0, vocab > 1, seq_len > {max(OFFSETS)}; got {n=}, {vocab=}, {seq_len=}")
    tokens = torch.randint(0, vocab, (n, seq_len), generator=generator)
    targets = torch.full((n, seq_len, len(OFFSETS)), IGNORE, dtype=torch.long)
    for j, off in enumerate(OFFSETS):  # two offsets, not a loop over positions
        targets[:, off:, j] = tokens[:, :-off]
    return tokens, targets


# --8<-- [end:task]


# --8<-- [start:model]
class AttentionOnlyModel(nn.Module):
    """Token + learned position embedding → one causal multi-head attention → linear read-out.

    No residual, no MLP: whatever reaches the read-out at step t went through attention.
    ``tokens: (B, L)`` → ``logits: (B, L, 2, vocab)`` and per-head weights ``(B, h, L, L)``.
    The parameter count depends on ``d_model`` only, not on ``num_heads``.
    """

    def __init__(self, vocab: int, seq_len: int, d_model: int, num_heads: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.embed = nn.Embedding(vocab, d_model)
        self.pos = LearnedPositionalEmbedding(seq_len, d_model)
        self.attn = MultiHeadAttention(d_model, num_heads)
        self.readout = nn.Linear(d_model, len(OFFSETS) * vocab)

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        x = self.pos(self.embed(tokens))  # (B, L, d_model)
        y, w = self.attn(x, x, x, is_causal=True, need_weights=True, average_attn_weights=False)
        return self.readout(y).unflatten(-1, (len(OFFSETS), self.vocab)), w


# --8<-- [end:model]


@dataclass
class TrainResult:
    """What :func:`train_attention_only` measured on a held-out batch after training."""

    num_heads: int
    num_params: int
    losses: list[float]  # training loss per step
    eval_loss: float  # mean cross-entropy over both targets (nats)
    accuracy: tuple[float, float]  # accuracy for the t-1 and the t-3 target
    attention: Tensor  # (h, L, L): attention weights of each head, averaged over the batch
    model: AttentionOnlyModel


# --8<-- [start:train]
def train_attention_only(
    num_heads: int,
    d_model: int = 8,
    *,
    vocab: int = 8,
    seq_len: int = 8,
    steps: int = 200,
    batch_size: int = 64,
    lr: float = 0.02,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> TrainResult:
    """Train :class:`AttentionOnlyModel` with Adam on fresh batches; evaluate on held-out data."""
    torch.manual_seed(seed)  # the initial weights
    data = torch.Generator().manual_seed(seed)  # the training batches (drawn on the CPU)
    model = AttentionOnlyModel(vocab, seq_len, d_model, num_heads).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss(ignore_index=IGNORE)
    losses = []
    for _ in range(steps):
        tokens, targets = two_offset_copy_task(batch_size, seq_len, vocab, generator=data)
        tokens, targets = tokens.to(device), targets.to(device)
        logits, _ = model(tokens)
        loss = loss_fn(logits.reshape(-1, vocab), targets.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    held_out = torch.Generator().manual_seed(2**31 - 1)  # never used for training batches
    tokens, targets = two_offset_copy_task(1024, seq_len, vocab, generator=held_out)
    tokens, targets = tokens.to(device), targets.to(device)
    with torch.no_grad():
        logits, w = model(tokens)
    valid = targets != IGNORE
    hit = logits.argmax(-1) == targets
    acc = tuple((hit[..., j][valid[..., j]]).double().mean().item() for j in range(len(OFFSETS)))
    return TrainResult(
        num_heads=num_heads,
        num_params=sum(p.numel() for p in model.parameters()),
        losses=losses,
        eval_loss=loss_fn(logits.reshape(-1, vocab), targets.reshape(-1)).item(),
        accuracy=acc,
        attention=w.mean(0).cpu(),
        model=model,
    )


# --8<-- [end:train]


if __name__ == "__main__":
    torch.set_num_threads(1)  # tiny model: one thread is fastest
    for h in (1, 2):
        r = train_attention_only(h, steps=120, lr=0.03)  # the tests' small variant; defaults: 200 steps
        print(
            f"{h} head(s), {r.num_params} parameters: held-out loss {r.eval_loss:.2e}, "
            f"accuracy t-1 {r.accuracy[0]:.2f}, t-3 {r.accuracy[1]:.2f}"
        )
        for i, a in enumerate(r.attention):
            offsets = [t - int(a[t].argmax()) for t in range(3, a.size(0))]
            print(f"  head {i}: most-attended offset for t = 3.. : {offsets}")
