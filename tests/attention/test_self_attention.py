"""self_attention vs nn.MultiheadAttention(num_heads=1); permutation equivariance; the "self" myth."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from snippets.attention.sdpa import attention_weights
from snippets.attention.self_attention import permute_tokens, self_attention
from tests.conftest import assert_close

F64 = torch.float64


def _setup(seed: int, device: torch.device, *, square: bool = False):
    g = torch.Generator().manual_seed(seed)
    b, n, d_in, d_k, d_v = (int(t) for t in torch.randint(2, 6, (5,), generator=g))
    if square:
        d_k = d_v = d_in
    x = torch.randn(b, n, d_in, generator=g, dtype=F64)
    w = [torch.randn(d_in, dd, generator=g, dtype=F64) for dd in (d_k, d_k, d_v)]
    return [t.to(device) for t in (x, *w)], g


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("masked", [False, True])
def test_matches_multiheadattention(seed: int, masked: bool, device: torch.device) -> None:
    """One head, no biases, W^O = I: nn.MultiheadAttention(x, x, x) is exactly self-attention."""
    (x, w_q, w_k, w_v), g = _setup(seed, device, square=True)
    b, n, d = x.shape
    ref = nn.MultiheadAttention(d, 1, bias=False, batch_first=True, dtype=F64, device=device)
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([w_q.T, w_k.T, w_v.T]))
        ref.out_proj.weight.copy_(torch.eye(d, dtype=F64))
    keep = None
    if masked:
        keep = torch.rand(b, n, generator=g) > 0.4
        keep[:, 0] = True
        keep = keep.to(device)
    leaves = [t.clone().requires_grad_() for t in (x, w_q, w_k, w_v)]
    out = self_attention(*leaves, mask=None if keep is None else keep[:, None, :])
    x_ref = x.clone().requires_grad_()
    out_ref, _ = ref(x_ref, x_ref, x_ref, key_padding_mask=None if keep is None else ~keep)
    assert_close(out, out_ref)
    grad = torch.randn_like(out)
    out.backward(grad)
    out_ref.backward(grad)
    assert_close(leaves[0].grad, x_ref.grad)
    for w, g_ref in zip(leaves[1:], ref.in_proj_weight.grad.chunk(3)):
        assert_close(w.grad, g_ref.T)


def test_gradcheck_rectangular_weights(device: torch.device) -> None:
    (x, w_q, w_k, w_v), _ = _setup(11, device)
    x, w_q, w_k, w_v = (t[:1].clone() if t is x else t.clone() for t in (x, w_q, w_k, w_v))
    inputs = tuple(t.requires_grad_() for t in (x, w_q, w_k, w_v))
    assert torch.autograd.gradcheck(self_attention, inputs)


@pytest.mark.parametrize("seed", range(6))
def test_permutation_equivariance_holds_invariance_fails(seed: int, device: torch.device) -> None:
    (x, w_q, w_k, w_v), g = _setup(seed, device)
    n = x.size(1)
    y = self_attention(x, w_q, w_k, w_v)
    for _ in range(3):
        perm = torch.randperm(n, generator=g)
        while torch.equal(perm, torch.arange(n)):
            perm = torch.randperm(n, generator=g)
        y_p = self_attention(permute_tokens(x, perm.to(device)), w_q, w_k, w_v)
        assert_close(y_p, permute_tokens(y, perm.to(device)))  # f(PX) = P f(X)
        assert (y_p - y).abs().max() > 1e-3  # but f(PX) != f(X): shuffling changes the outputs
        assert_close(y_p.sum(-2), y.sum(-2))  # only an order-blind read-out (sum/mean) is unchanged


def test_attention_weights_are_permuted_on_both_sides(device: torch.device) -> None:
    """A(PX) = P A(X) P^T: the weight matrix moves with the tokens, rows and columns alike."""
    (x, w_q, w_k, _), g = _setup(7, device)
    perm = torch.randperm(x.size(1), generator=g).to(device)
    a = attention_weights(x @ w_q, x @ w_k)
    a_p = attention_weights(permute_tokens(x, perm) @ w_q, permute_tokens(x, perm) @ w_k)
    assert_close(a_p, a[..., perm, :][..., :, perm])


def test_padding_mask_keeps_equivariance_causal_mask_breaks_it(device: torch.device) -> None:
    (x, w_q, w_k, w_v), g = _setup(3, device)
    b, n, _ = x.shape
    perm = torch.roll(torch.arange(n), 1).to(device)
    keep = torch.rand(b, n, generator=g) > 0.4
    keep[:, 0] = keep[:, -1] = True
    keep = keep.to(device)
    y = self_attention(x, w_q, w_k, w_v, mask=keep[:, None, :])
    y_p = self_attention(permute_tokens(x, perm), w_q, w_k, w_v, mask=keep[:, perm][:, None, :])
    assert_close(y_p, permute_tokens(y, perm))  # a padding mask is attached to tokens: still equivariant
    causal = torch.ones(n, n, dtype=torch.bool, device=device).tril()
    y = self_attention(x, w_q, w_k, w_v, mask=causal)
    y_p = self_attention(permute_tokens(x, perm), w_q, w_k, w_v, mask=causal)
    assert (y_p - permute_tokens(y, perm)).abs().max() > 1e-3  # a causal mask is tied to positions


def test_counterexample_token_attends_most_to_another_token(device: torch.device) -> None:
    """002 L494 "self-attention scores are highest on itself" is false: X = [[1, 0], [3, 0]]."""
    x = torch.tensor([[1.0, 0.0], [3.0, 0.0]], dtype=F64, device=device)
    eye = torch.eye(2, dtype=F64, device=device)
    scores = x @ x.T
    assert scores.tolist() == [[1.0, 3.0], [3.0, 9.0]]
    w = attention_weights(x, x)  # W_Q = W_K = I
    assert w[0].argmax().item() == 1 and w[0, 1] > w[0, 0]  # token 0 attends most to token 1
    y = self_attention(x, eye, eye, eye)
    assert y[0, 0] > 2.0  # token 0's output is dominated by token 1's value (3, 0)


def test_self_is_the_maximum_only_for_equal_norms_and_tied_projections(device: torch.device) -> None:
    """Cauchy-Schwarz: x_i.x_j <= |x_i| |x_j| = |x_i|^2 when all norms are equal and W_Q = W_K;
    with learned W_Q != W_K nothing favours the diagonal."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=g, dtype=F64).to(device)
    unit = x / x.norm(dim=-1, keepdim=True)
    diag = torch.arange(64, device=device)
    assert torch.equal((unit @ unit.T).argmax(-1), diag)  # equal norms: self wins every row
    assert ((x @ x.T).argmax(-1) != diag).any()  # unequal norms: some row prefers another token
    w_q, w_k = (torch.randn(8, 8, generator=g, dtype=F64).to(device) for _ in range(2))
    off = (attention_weights(unit @ w_q, unit @ w_k).argmax(-1) != diag).double().mean()
    assert off > 0.5  # untied projections: most rows attend most to some other token


@pytest.mark.parametrize(
    ("shapes", "match"),
    [
        (((4,), (4, 2), (4, 2), (4, 3)), r"x must be \(\.\.\., n, d_in\), got shape \(4,\)"),
        (((3, 4), (5, 2), (4, 2), (4, 3)), r"w_q must be \(d_in=4, d_out\), got shape \(5, 2\)"),
        (((3, 4), (4, 2), (4,), (4, 3)), r"w_k must be \(d_in=4, d_out\)"),
        (((3, 4), (4, 2), (4, 2), (3, 3)), r"w_v must be \(d_in=4, d_out\)"),
        (((3, 4), (4, 2), (4, 3), (4, 3)), "d_k mismatch"),
    ],
)
def test_rejects_bad_input(shapes, match) -> None:
    with pytest.raises(ValueError, match=match):
        self_attention(*(torch.randn(s) for s in shapes))


def test_permute_tokens_rejects_non_permutations() -> None:
    x = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match=r"perm must be a permutation of 0\.\.2, got \[0, 0, 1\]"):
        permute_tokens(x, torch.tensor([0, 0, 1]))
    with pytest.raises(ValueError, match="perm must be a permutation"):
        permute_tokens(x, torch.tensor([0, 1]))
