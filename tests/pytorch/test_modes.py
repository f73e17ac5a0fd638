"""set_mode / mode_sensitive_layers vs Module.train()/eval(), and what each mode changes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from snippets.pytorch.modes import mode_flags, mode_sensitive_layers, set_mode, temporary_mode
from tests.conftest import assert_close

F64 = torch.float64


def _nested() -> nn.Module:
    block = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Dropout(0.3))
    return nn.Sequential(block, nn.Sequential(nn.Linear(6, 6), nn.Sequential(nn.Dropout(0.2))), nn.Linear(6, 2))


@pytest.mark.parametrize("training", [True, False])
def test_flags_match_module_train_eval(training: bool) -> None:
    ours, ref = _nested(), _nested()
    set_mode(ours, not training)  # start from the other mode
    ref.train(not training)
    assert set_mode(ours, training) is ours
    if training:
        ref.train()
    else:
        ref.eval()
    assert mode_flags(ours) == mode_flags(ref) == {name: training for name, _ in ref.named_modules()}
    assert len(mode_flags(ours)) == 11  # the root and 10 submodules


def test_set_mode_does_not_call_train_overrides() -> None:
    class FrozenBN(nn.BatchNorm1d):
        def train(self, mode: bool = True):  # keeps its statistics frozen
            return super().train(False)

    model = nn.Sequential(nn.Linear(3, 3), FrozenBN(3))
    model.train()
    assert mode_flags(model) == {"": True, "0": True, "1": False}  # Module.train consults the override
    set_mode(model, True)
    assert mode_flags(model) == {"": True, "0": True, "1": True}  # writing the flags does not


ZOO = {
    "linear": (nn.Linear(5, 5), False),
    "conv": (nn.Conv1d(5, 5, 1), False),
    "relu": (nn.ReLU(), False),
    "layernorm": (nn.LayerNorm(5), False),
    "groupnorm": (nn.GroupNorm(1, 5), False),
    "instancenorm": (nn.InstanceNorm1d(5), False),
    "instancenorm_tracked": (nn.InstanceNorm1d(5, track_running_stats=True), True),
    "batchnorm": (nn.BatchNorm1d(5), True),
    "batchnorm_untracked": (nn.BatchNorm1d(5, track_running_stats=False), False),
    "dropout": (nn.Dropout(0.5), True),
    "dropout_p0": (nn.Dropout(0.0), False),
    "dropout1d": (nn.Dropout1d(0.5), True),
    "alpha_dropout": (nn.AlphaDropout(0.5), True),
    "rrelu": (nn.RReLU(), True),
    "mha": (nn.MultiheadAttention(4, 2, dropout=0.5, batch_first=True), True),
    "mha_no_dropout": (nn.MultiheadAttention(4, 2, batch_first=True), False),
}


@pytest.mark.parametrize("name", list(ZOO))
def test_sensitive_layers_are_exactly_those_whose_output_changes(name: str) -> None:
    layer, sensitive = ZOO[name]
    layer = layer.to(F64)
    g = torch.Generator().manual_seed(0)
    if isinstance(layer, nn.MultiheadAttention):
        x = torch.randn(3, 4, 4, generator=g, dtype=F64)

        def run():
            return layer(x, x, x)[0]
    else:
        x = torch.randn(8, 5, 3, generator=g, dtype=F64) - 0.5  # (N, C, L), some negatives for RReLU
        if isinstance(layer, (nn.Linear, nn.LayerNorm)):
            x = x.transpose(1, 2)  # features last

        def run():
            return layer(x)

    torch.manual_seed(1)
    train_out = run()
    layer.eval()
    eval_out, eval_again = run(), run()
    assert torch.equal(eval_out, eval_again)  # eval mode is deterministic
    assert (not torch.equal(train_out, eval_out)) == sensitive
    assert bool(mode_sensitive_layers(layer)) == sensitive


def test_sensitive_layers_are_found_in_nested_models() -> None:
    found = mode_sensitive_layers(_nested())
    assert list(found) == ["0.1", "0.3", "1.1.0"]
    assert found["0.3"].startswith("Dropout(p=0.3)") and found["0.1"].startswith("BatchNorm1d")
    enc = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.1)
    assert set(mode_sensitive_layers(enc)) == {"self_attn", "dropout", "dropout1", "dropout2"}
    assert "SELU" in mode_sensitive_layers(nn.AlphaDropout(0.2))[""]  # not the 1/(1-p) rule


def test_custom_module_reading_training_is_invisible_to_the_scan() -> None:
    class FunctionalDropout(nn.Module):  # F.dropout(training=self.training): no Dropout submodule
        def forward(self, x):
            return F.dropout(x, 0.5, training=self.training)

    model = nn.Sequential(nn.Linear(4, 4), FunctionalDropout())
    x = torch.randn(8, 4)
    torch.manual_seed(0)
    train_out = model(x)
    model.eval()
    assert not torch.equal(train_out, model(x))  # its output does depend on the mode
    assert mode_sensitive_layers(model) == {}  # but a type-based scan cannot know: always call eval()


def test_dropout_train_is_inverted_mask_eval_is_identity(device: torch.device) -> None:
    p = 0.25
    drop = nn.Dropout(p)
    x = torch.rand(200, 50, dtype=F64, device=device) + 0.5
    out = drop(x)
    mask = out != 0
    assert_close(out, x * mask / (1 - p))  # survivors scaled by 1/(1-p)
    assert abs((~mask).double().mean().item() - p) < 0.02
    assert abs(out.mean().item() / x.mean().item() - 1) < 0.02  # the expectation is kept
    drop.eval()
    assert drop(x) is x  # not "equivalent processing": it does nothing at all


def test_batchnorm_train_uses_batch_stats_and_updates_running_stats(device: torch.device) -> None:
    torch.manual_seed(0)
    bn = nn.BatchNorm1d(3, momentum=0.1).to(device, F64)
    nn.init.normal_(bn.weight)
    nn.init.normal_(bn.bias)
    x = torch.randn(16, 3, dtype=F64, device=device) * 2 + 1
    out = bn(x)
    mean, var = x.mean(0), x.var(0, unbiased=False)
    assert_close(out, (x - mean) / torch.sqrt(var + bn.eps) * bn.weight + bn.bias)
    assert_close(bn.running_mean, 0.9 * torch.zeros(3, dtype=F64, device=device) + 0.1 * mean)
    assert_close(bn.running_var, 0.9 * torch.ones(3, dtype=F64, device=device) + 0.1 * x.var(0, unbiased=True))
    assert bn.num_batches_tracked.item() == 1
    bn.eval()
    stats = bn.running_mean.clone(), bn.running_var.clone()
    out = bn(x)
    assert_close(out, (x - stats[0]) / torch.sqrt(stats[1] + bn.eps) * bn.weight + bn.bias)
    assert torch.equal(bn.running_mean, stats[0]) and bn.num_batches_tracked.item() == 1  # no update


def test_batchnorm_single_sample_only_fails_in_train() -> None:
    bn = nn.BatchNorm1d(3)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        bn(torch.randn(1, 3))
    bn.eval()
    assert bn(torch.randn(1, 3)).shape == (1, 3)


def test_gradients_are_computed_in_eval_mode(device: torch.device) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Dropout(0.5), nn.Linear(5, 1)).to(device, F64)
    model(torch.randn(8, 4, dtype=F64, device=device))  # one train step of running stats
    model.eval()
    x = torch.randn(6, 4, dtype=F64, device=device)
    out = model(x).sum()
    assert out.requires_grad and out.grad_fn is not None
    out.backward()
    # the same function written out: BN with running stats, dropout = identity
    lin1, bn, _, lin2 = model
    params = [p.detach().clone().requires_grad_() for p in model.parameters()]
    w1, b1, g, b, w2, b2 = params
    h = F.batch_norm(x @ w1.T + b1, bn.running_mean, bn.running_var, g, b, training=False, eps=bn.eps)
    (h @ w2.T + b2).sum().backward()
    assert_close(out.detach(), (h @ w2.T + b2).sum().detach())
    for p, q in zip(model.parameters(), params):
        assert p.grad is not None
        assert_close(p.grad, q.grad)


def test_temporary_mode_restores_mixed_flags_even_after_an_error() -> None:
    model = _nested()
    model.train()
    model[0][1].eval()  # a BatchNorm frozen on purpose
    before = mode_flags(model)
    with temporary_mode(model, False) as m:
        assert m is model and not any(mode_flags(model).values())
    assert mode_flags(model) == before
    with pytest.raises(RuntimeError, match="boom"):
        with temporary_mode(model, False):
            raise RuntimeError("boom")
    assert mode_flags(model) == before
    model.eval()
    model.train()  # the usual "switch back" loses the frozen flag
    assert mode_flags(model) != before


def test_rejects_bad_input() -> None:
    model = _nested()
    with pytest.raises(ValueError, match=r"training must be a bool \(True = train, False = eval\), got 'yes'"):
        set_mode(model, "yes")
    with pytest.raises(ValueError, match="got 1"):
        set_mode(model, 1)
    with pytest.raises(TypeError, match="module must be an nn.Module, got Tensor"):
        mode_sensitive_layers(torch.ones(2))
    with pytest.raises(ValueError, match="training must be a bool"):
        with temporary_mode(model, None):
            pass
    with pytest.raises(ValueError, match="training mode is expected to be boolean"):
        model.train("yes")  # PyTorch's own check


def test_eval_is_train_false_and_both_return_the_module() -> None:
    calls = []

    class Spy(nn.Linear):
        def train(self, mode: bool = True):
            calls.append(mode)
            return super().train(mode)

    spy = Spy(2, 2)
    assert spy.eval() is spy and spy.train() is spy
    assert calls == [False, True]
