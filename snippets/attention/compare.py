"""CNN vs RNN vs self-attention: which inputs each output sees, how many steps run in sequence,
how far a signal travels, and what a layer costs.

Reference: Vaswani et al. 2017, §4 and Table 1 ("Why Self-Attention"); d2l.ai §11.6.2. Per layer,
with sequence length n, width d and kernel size k: self-attention O(n^2 d) operations, O(1)
sequential steps, O(1) maximum path length; RNN O(n d^2), O(n), O(n); CNN O(k n d^2), O(1),
O(n/k). Everything here is measured on real layers: dependencies with autograd, sequential
depth from the autograd graph and from forward hooks (how many calls of one cell must wait for
the previous one), operation counts with ``torch.utils.flop_counter``.
All layers map ``(B, T, d) -> (B, T, d)`` (batch-first).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from snippets.attention.multihead import MultiHeadAttention

__all__ = [
    "KINDS",
    "Conv1dLayer",
    "ElmanRNN",
    "SelfAttentionLayer",
    "make_stack",
    "receptive_field_via_autograd",
    "autograd_depth",
    "module_call_chains",
    "count_sequential_cell_calls",
    "sequential_steps",
    "max_path_length",
    "layer_flops",
    "complexity_table",
]

Kind = Literal["cnn", "rnn", "self-attention"]
KINDS: tuple[str, ...] = ("cnn", "rnn", "self-attention")


# --8<-- [start:layers]
class Conv1dLayer(nn.Module):
    """``tanh(conv1d(x))`` with an odd ``kernel_size`` and 'same' zero padding: output t sees
    inputs ``t - (k-1)/2 .. t + (k-1)/2``."""

    def __init__(self, d: int, kernel_size: int = 3) -> None:
        super().__init__()
        if kernel_size <= 0 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive ('same' padding), got {kernel_size}")
        self.conv = nn.Conv1d(d, d, kernel_size, padding=kernel_size // 2)

    def forward(self, x: Tensor) -> Tensor:  # (B, T, d): Conv1d wants channels first
        return torch.tanh(self.conv(x.transpose(1, 2)).transpose(1, 2))


class ElmanRNN(nn.Module):
    """``h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)`` — ``nn.RNN``'s recurrence, written
    out. The input projection runs for all t at once; only the recurrence is a loop over time."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.ih, self.hh = nn.Linear(d, d), nn.Linear(d, d)

    def forward(self, x: Tensor) -> Tensor:
        xw = self.ih(x)  # (B, T, d): parallel over time
        h = torch.zeros_like(xw[:, 0])
        outputs = []
        for t in range(x.size(1)):  # n sequential steps: h_t needs h_{t-1}
            h = torch.tanh(xw[:, t] + self.hh(h))
            outputs.append(h)
        return torch.stack(outputs, dim=1)


class SelfAttentionLayer(nn.Module):
    """One single-head self-attention layer ``MHA(x, x, x)`` (optionally causal)."""

    def __init__(self, d: int, causal: bool = False) -> None:
        super().__init__()
        self.attn, self.causal = MultiHeadAttention(d, 1), causal

    def forward(self, x: Tensor) -> Tensor:
        return self.attn(x, x, x, is_causal=self.causal)[0]


# --8<-- [end:layers]


def make_stack(kind: Kind, d: int, num_layers: int = 1, kernel_size: int = 3) -> nn.Sequential:
    """``num_layers`` layers of one kind, ``(B, T, d) -> (B, T, d)``."""
    _check_kind(kind)
    if d <= 0 or num_layers <= 0:
        raise ValueError(f"d and num_layers must be positive, got d={d}, num_layers={num_layers}")
    build = {
        "cnn": lambda: Conv1dLayer(d, kernel_size),
        "rnn": lambda: ElmanRNN(d),
        "self-attention": lambda: SelfAttentionLayer(d),
    }[kind]
    return nn.Sequential(*(build() for _ in range(num_layers)))


# --8<-- [start:receptive_field]
def receptive_field_via_autograd(
    model: nn.Module, T: int, d_in: int, *, generator: torch.Generator | None = None
) -> Tensor:
    """Dependency matrix ``(T, T)``: entry ``[t, s]`` is True iff output t has a non-zero gradient
    with respect to input s. One backward pass: T copies of one random input, copy t keeps only
    output t. ``model`` maps ``(B, T, d_in) -> (B, T, d_out)`` and must treat samples independently.
    Runs on the model's device and dtype; row sums are the receptive-field sizes (footprints)."""
    if T <= 0 or d_in <= 0:
        raise ValueError(f"T and d_in must be positive, got T={T}, d_in={d_in}")
    p = next(model.parameters(), torch.empty(0, dtype=torch.float64))  # dtype/device to use
    x = torch.randn(1, T, d_in, generator=generator, dtype=p.dtype).to(p.device)
    xs = x.expand(T, T, d_in).clone().requires_grad_()  # copy b is used for output position b
    y = model(xs)
    if y.dim() != 3 or y.shape[:2] != (T, T):
        raise ValueError(f"model must map (B, T, d_in) to (B, T, d_out), got output {tuple(y.shape)}")
    r = torch.randn(y.size(-1), generator=generator, dtype=p.dtype).to(p.device)  # random read-out
    idx = torch.arange(T, device=p.device)
    picked = y[idx, idx]  # (T, d_out): output t of copy t
    (grad,) = torch.autograd.grad((picked @ r).sum(), xs)  # (T, T, d_in): d out_t / d x_s
    return grad.abs().sum(-1) != 0


# --8<-- [end:receptive_field]


# --8<-- [start:depth]
def autograd_depth(output: Tensor) -> int:
    """Length of the longest chain of autograd nodes behind ``output``: the number of operations
    that must run one after another (the critical path), whatever the hardware parallelism."""
    if output.grad_fn is None:
        raise ValueError("output has no grad_fn: compute it from inputs that require grad")
    depth: dict[object, int] = {}
    stack = [output.grad_fn]
    while stack:  # iterative DFS (an RNN's graph is deep); a node is finished after its children
        node = stack.pop()
        if node in depth:
            continue
        children = [c for c, _ in node.next_functions if c is not None and c not in depth]
        if children:
            stack.append(node)
            stack.extend(children)
        else:
            depth[node] = 1 + max((depth[c] for c, _ in node.next_functions if c is not None), default=0)
    return depth[output.grad_fn]


# --8<-- [end:depth]


# --8<-- [start:cell_calls]
def module_call_chains(model: nn.Module, x: Tensor) -> dict[str, tuple[int, int]]:
    """Run ``model(x)`` once with a forward hook on every submodule and return, per submodule name
    (``""`` is the model itself), ``(calls, chain)``: how many times it ran, and the longest chain
    of its calls in which each call consumes (through the autograd graph) an earlier call's output.
    ``calls`` counts work, ``chain`` counts the calls that must run one after another: T calls of a
    per-position MLP form chains of length 1 (they could run at once), an RNN cell's T calls one
    chain of length T. A fused kernel (``nn.RNN``) is one call: the hook sees modules, not kernels."""
    records: dict[str, list[tuple[object, int]]] = {}  # name -> [(output grad_fn, chain), ...]

    def ancestors(args: tuple) -> set[object]:
        seen: set[object] = set()
        stack = [a.grad_fn for a in args if isinstance(a, Tensor) and a.grad_fn is not None]
        while stack:  # every autograd node the inputs of this call were computed from
            node = stack.pop()
            if node not in seen:
                seen.add(node)
                stack.extend(c for c, _ in node.next_functions if c is not None)
        return seen

    def hook(name: str):
        def record(module: nn.Module, args: tuple, output: object) -> None:
            out = output[0] if isinstance(output, tuple) else output
            node = out.grad_fn if isinstance(out, Tensor) else None  # None: nothing can consume it
            past, prev = ancestors(args), records.setdefault(name, [])
            prev.append((node, 1 + max((c for n, c in prev if n is not None and n in past), default=0)))

        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in model.named_modules()]
    try:
        with torch.enable_grad():
            model(x if x.requires_grad else x.detach().requires_grad_())
    finally:
        for h in handles:
            h.remove()
    return {name: (len(rec), max(c for _, c in rec)) for name, rec in records.items()}


def count_sequential_cell_calls(model: nn.Module, T: int, d_in: int) -> int:
    """The longest chain of dependent calls of any one submodule of ``model`` on one input
    ``(1, T, d_in)`` (see :func:`module_call_chains`): T for an RNN, 1 for an attention or
    convolution layer, whatever T is. Runs on the model's device and dtype."""
    if T <= 0 or d_in <= 0:
        raise ValueError(f"T and d_in must be positive, got T={T}, d_in={d_in}")
    p = next(model.parameters(), torch.empty(0, dtype=torch.float64))
    x = torch.randn(1, T, d_in, dtype=p.dtype, device=p.device)
    return max(chain for _, chain in module_call_chains(model, x).values())


# --8<-- [end:cell_calls]


# --8<-- [start:table]
def sequential_steps(kind: Kind, n: int) -> int:
    """Operations that cannot run in parallel, per layer: n for an RNN, 1 for CNN/self-attention."""
    _check_kind(kind)
    _check_positive(n=n)
    return n if kind == "rnn" else 1


def max_path_length(kind: Kind, n: int, kernel_size: int = 3) -> int:
    """Layers (or recurrent steps) a signal crosses from input 0 to output n-1, in the smallest
    stack that connects them: self-attention 1; RNN n (one cell per position); CNN with centred
    kernels ``ceil((n-1) / ((k-1)/2))`` — O(n/k)."""
    _check_kind(kind)
    _check_positive(n=n)
    if kind == "self-attention":
        return 1
    if kind == "rnn":
        return n
    if kernel_size <= 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd and > 1, got {kernel_size}")
    return max(1, math.ceil((n - 1) / ((kernel_size - 1) // 2)))


def layer_flops(kind: Kind, n: int, d: int, kernel_size: int = 3) -> int:
    """Floating-point operations (2 per multiply-add) of one layer's matrix products:
    self-attention ``Q K^T`` and ``A V``: ``4 n^2 d`` (projections excluded, as in the paper);
    RNN ``x W_ih`` and ``h W_hh`` for n steps: ``4 n d^2``; CNN: ``2 k n d^2``."""
    _check_kind(kind)
    _check_positive(n=n, d=d, kernel_size=kernel_size)
    return {"self-attention": 4 * n * n * d, "rnn": 4 * n * d * d, "cnn": 2 * kernel_size * n * d * d}[kind]


def complexity_table(n: int, d: int, kernel_size: int = 3) -> list[dict[str, int | str]]:
    """Table 1 of the paper with numbers: one row per layer kind."""
    return [
        {
            "layer": kind,
            "flops": layer_flops(kind, n, d, kernel_size),
            "sequential_steps": sequential_steps(kind, n),
            "max_path_length": max_path_length(kind, n, kernel_size),
        }
        for kind in ("self-attention", "rnn", "cnn")
    ]


# --8<-- [end:table]


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def _check_positive(**sizes: int) -> None:
    for name, v in sizes.items():
        if v <= 0:
            raise ValueError(f"{name} must be positive, got {name}={v}")


if __name__ == "__main__":
    torch.manual_seed(0)
    T, d = 9, 4
    for kind, layers in (("cnn", 2), ("rnn", 1), ("self-attention", 1)):
        dep = receptive_field_via_autograd(make_stack(kind, d, layers).double(), T, d)
        print(f"{kind:14s} x{layers}: output 4 sees inputs {dep[4].nonzero().flatten().tolist()}")
    for T in (4, 16):
        calls = {kind: count_sequential_cell_calls(make_stack(kind, d).double(), T, d) for kind in KINDS}
        print(f"T={T:2d}: sequential cell calls {calls}")
    print(f"{'layer':14s} {'flops':>11s} {'sequential':>10s} {'max path':>8s}   (n=100, d=512, k=3)")
    for r in complexity_table(100, 512):
        print(f"{r['layer']:14s} {r['flops']:>11,d} {r['sequential_steps']:>10d} {r['max_path_length']:>8d}")
