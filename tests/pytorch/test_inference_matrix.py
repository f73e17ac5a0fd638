"""inference_matrix: train/eval changes what is computed, grad mode changes what is recorded."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from snippets.pytorch.inference_matrix import inference_matrix, measure_saved
from tests.conftest import assert_close

F64 = torch.float64
N, D_IN, H, D_OUT = 5, 4, 8, 3


def _mlp(device, bn: bool = False) -> nn.Module:
    torch.manual_seed(0)
    layers = [nn.Linear(D_IN, H), *([nn.BatchNorm1d(H)] if bn else []), nn.ReLU(), nn.Dropout(0.5), nn.Linear(H, D_OUT)]
    return nn.Sequential(*layers).to(device, F64)


def _x(device) -> torch.Tensor:
    return torch.randn(N, D_IN, generator=torch.Generator().manual_seed(1), dtype=F64).to(device)


def test_every_cell(device: torch.device) -> None:
    cells = inference_matrix(_mlp(device), _x(device))
    assert list(cells) == [(t, c) for t in (True, False) for c in ("grad", "no_grad", "inference_mode")]
    for (training, ctx), cell in cells.items():
        assert cell.training == training and cell.context == ctx
        recorded = ctx == "grad"
        assert cell.requires_grad == recorded
        assert cell.grad_fn == ("AddmmBackward0" if recorded else None)  # eval + grad: still a graph
        assert (cell.saved_count > 0) == recorded and (cell.activation_nbytes > 0) == recorded
        assert cell.is_inference == (ctx == "inference_mode")
        assert not cell.buffers_changed  # no BatchNorm in this model


def test_saved_bytes_are_exactly_the_activations_on_cpu() -> None:
    cells = inference_matrix(_mlp("cpu"), _x("cpu"))
    act = N * H * 8  # one (N, H) float64 activation
    # train: ReLU output, dropout mask, dropout output; eval: dropout is the identity, one ReLU output
    assert (cells[True, "grad"].saved_count, cells[True, "grad"].activation_nbytes) == (5, 3 * act)
    assert (cells[False, "grad"].saved_count, cells[False, "grad"].activation_nbytes) == (4, act)
    # what autograd sees: + the input x (N, D_IN) saved by Linear 1 and W2^T (H, D_OUT) saved by Linear 2
    refs = N * D_IN * 8 + H * D_OUT * 8
    assert cells[True, "grad"].saved_nbytes == 3 * act + refs  # each activation saved once
    assert cells[False, "grad"].saved_nbytes == 2 * act + refs  # ReLU out saved by ReLU and by Linear 2
    for ctx in ("no_grad", "inference_mode"):
        assert cells[True, ctx].saved_nbytes == cells[False, ctx].saved_nbytes == 0


def test_train_saves_more_than_eval_on_any_device(device: torch.device) -> None:
    cells = inference_matrix(_mlp(device), _x(device))
    assert cells[True, "grad"].activation_nbytes > cells[False, "grad"].activation_nbytes > 0


def test_grad_mode_never_changes_the_values(device: torch.device) -> None:
    cells = inference_matrix(_mlp(device), _x(device))
    for training in (True, False):  # same seed, same dropout mask: bit-identical across grad modes
        ref = cells[training, "grad"].output
        assert all(torch.equal(cells[training, c].output, ref) for c in ("no_grad", "inference_mode"))
    assert not torch.equal(cells[True, "no_grad"].output, cells[False, "no_grad"].output)  # dropout on
    model = _mlp(device).eval()
    assert_close(cells[False, "grad"].output, model(_x(device)).detach())  # eval = deterministic forward


def test_batchnorm_statistics_move_in_train_mode_even_without_grad(device: torch.device) -> None:
    model = _mlp(device, bn=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cells = inference_matrix(model, _x(device))
    for (training, ctx), cell in cells.items():
        assert cell.buffers_changed == training, (training, ctx)  # no_grad does not protect them
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # model untouched
    assert model.training


def test_eval_graph_supports_backward(device: torch.device) -> None:
    model = _mlp(device, bn=True).eval()
    out = model(_x(device)).sum()
    out.backward()  # eval mode builds a full graph: backward works
    assert all(p.grad is not None for p in model.parameters())
    with torch.no_grad():
        out = model(_x(device)).sum()
    with pytest.raises(RuntimeError, match="does not require grad and does not have a grad_fn"):
        out.backward()


def test_measure_saved_on_single_ops(device: torch.device) -> None:
    a = torch.randn(3, 4, dtype=F64, device=device, requires_grad=True)
    b = torch.randn(3, 4, dtype=F64, device=device, requires_grad=True)
    nb = a.numel() * 8
    s = measure_saved(lambda: a * b, known=[a, b])
    assert (s.count, s.nbytes, s.activation_nbytes) == (2, 2 * nb, 0)  # mul saves both inputs
    s = measure_saved(lambda: a + b, known=[a, b])
    assert (s.count, s.nbytes) == (0, 0)  # add needs nothing for its backward
    s = measure_saved(lambda: (a * b).exp(), known=[a, b])
    assert (s.count, s.nbytes, s.activation_nbytes) == (3, 3 * nb, nb)  # exp saves its new result
    s = measure_saved(lambda: a * b.detach(), known=[a, b])
    assert s.count == 1  # only b is needed (for the gradient w.r.t. a)
    with torch.no_grad():
        assert measure_saved(lambda: (a * b).exp()).count == 0
    s = measure_saved(lambda: (a * b).exp())
    assert s.activation_nbytes == 3 * nb and torch.is_tensor(s.result) and s.result.requires_grad


@pytest.mark.parametrize(
    ("args", "kwargs", "err", "match"),
    [
        ((torch.ones(2), torch.ones(2)), {}, TypeError, "model must be an nn.Module, got Tensor"),
        ((nn.Linear(2, 2), [1.0, 2.0]), {}, TypeError, "x must be a torch.Tensor, got list"),
        ((nn.Linear(2, 2), torch.ones(1, 2)), {"contexts": ["nograd"]}, ValueError, r"contexts=\['nograd'\] must be"),
        ((nn.Linear(2, 2), torch.ones(1, 2)), {"contexts": []}, ValueError, "non-empty"),
    ],
)
def test_rejects_bad_input(args, kwargs, err, match) -> None:
    with pytest.raises(err, match=match):
        inference_matrix(*args, **kwargs)


def test_the_two_switches_are_independent(device: torch.device) -> None:
    model, other = _mlp(device), nn.Linear(D_IN, D_IN).to(device, F64)
    x = _x(device)
    model.eval()
    assert torch.is_grad_enabled() and other(x).requires_grad  # eval() leaves the grad mode alone
    with torch.no_grad():
        assert not other(x).requires_grad  # the grad mode applies to every op, whatever the module
        model.train()
        assert all(m.training for m in model.modules())  # and leaves the module flags alone
    with torch.inference_mode():
        model.eval()
        assert not any(m.training for m in model.modules())
    assert torch.is_grad_enabled()
