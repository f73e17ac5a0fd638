"""Mixed-precision training: float formats, gradient underflow, a from-scratch dynamic loss scaler
and an autocast training step.

Reference: Micikevicius et al. 2018, "Mixed Precision Training"; PyTorch docs "Automatic Mixed
Precision" (``torch.autocast``, ``torch.amp.GradScaler``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = [
    "FormatLimits",
    "format_limits",
    "underflow_demo",
    "ScratchGradScaler",
    "amp_train_step",
    "two_spirals",
    "precision_comparison",
]


# --8<-- [start:formats]
@dataclass(frozen=True)
class FormatLimits:
    """What a floating-point format can represent (from ``torch.finfo``)."""

    dtype: torch.dtype
    exponent_bits: int
    mantissa_bits: int
    max: float  # largest finite value
    smallest_normal: float  # below this, precision degrades (subnormals), then 0
    smallest_subnormal: float
    eps: float  # gap between 1 and the next representable number


def format_limits(dtypes: Iterable[torch.dtype] = (torch.float32, torch.float16, torch.bfloat16)) -> list[FormatLimits]:
    """One row per dtype: bit split (1 sign bit + exponent + mantissa), range and precision."""
    rows = []
    for dt in dtypes:
        if not dt.is_floating_point:
            raise ValueError(f"format_limits needs floating-point dtypes, got {dt}")
        fi = torch.finfo(dt)
        mantissa = -round(math.log2(fi.eps))  # eps = 2^-mantissa_bits
        exponent = fi.bits - 1 - mantissa
        subnormal = fi.smallest_normal * fi.eps  # 2^(emin - mantissa_bits)
        rows.append(FormatLimits(dt, exponent, mantissa, fi.max, fi.smallest_normal, subnormal, fi.eps))
    return rows
# --8<-- [end:formats]


# --8<-- [start:underflow]
def underflow_demo(grad_values: Tensor, scale: float = 2.0**16) -> dict[str, Tensor]:
    """What happens to small float32 gradients stored in float16, without and with loss scaling.

    ``plain``: ``grad.half()`` (tiny values flush to 0); ``scaled``: ``(grad * scale).half()`` then
    unscaled in float32 — the values survive. Also ``bf16``: bfloat16 keeps float32's exponent range.
    """
    if scale <= 0 or not math.isfinite(scale):
        raise ValueError(f"scale must be positive and finite, got scale={scale}")
    g = grad_values.float()
    return {
        "plain": g.half().float(),
        "scaled": ((g * scale).half().float() / scale),
        "bf16": g.bfloat16().float(),
    }
# --8<-- [end:underflow]


# --8<-- [start:scaler]
class ScratchGradScaler:
    """Dynamic loss scaling, step for step like ``torch.amp.GradScaler``.

    ``scale(loss)`` multiplies the loss by ``S`` so small gradients don't underflow in float16;
    ``unscale_(opt)`` divides the gradients by ``S`` and records whether any is inf/NaN; ``step(opt)``
    skips ``opt.step()`` when one is; ``update()`` halves ``S`` after an overflow and doubles it after
    ``growth_interval`` clean steps in a row.
    """

    def __init__(
        self,
        init_scale: float = 2.0**16,
        growth_factor: float = 2.0,
        backoff_factor: float = 0.5,
        growth_interval: int = 2000,
    ) -> None:
        if not (init_scale > 0 and math.isfinite(init_scale)):
            raise ValueError(f"init_scale must be positive and finite, got init_scale={init_scale}")
        if not growth_factor > 1.0:
            raise ValueError(f"growth_factor must be > 1, got growth_factor={growth_factor}")
        if not 0.0 < backoff_factor < 1.0:
            raise ValueError(f"backoff_factor must lie in (0, 1), got backoff_factor={backoff_factor}")
        if not (isinstance(growth_interval, int) and growth_interval >= 1):
            raise ValueError(f"growth_interval must be a positive int, got growth_interval={growth_interval!r}")
        # float32 like torch's scale tensor, so products with it round the same way
        self._scale = torch.tensor(init_scale, dtype=torch.float32)
        self._growth_factor, self._backoff_factor = growth_factor, backoff_factor
        self._growth_interval, self._growth_tracker = growth_interval, 0
        self._found_inf: dict[int, bool] = {}  # id(optimizer) -> overflow seen since the last update()

    def get_scale(self) -> float:
        return float(self._scale)

    def scale(self, loss: Tensor) -> Tensor:
        return loss * self._scale.to(loss.device)

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        if id(optimizer) in self._found_inf:
            raise RuntimeError("unscale_() has already been called on this optimizer since the last update().")
        inv_scale = self._scale.double().reciprocal().float()  # exact for powers of two
        found_inf = False
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.dtype == torch.float16:
                    raise ValueError("Attempting to unscale FP16 gradients: keep the parameters in float32.")
                p.grad.mul_(inv_scale.to(p.grad.device))
                found_inf |= not bool(torch.isfinite(p.grad).all())
        self._found_inf[id(optimizer)] = found_inf

    def step(self, optimizer: torch.optim.Optimizer) -> float | None:
        if id(optimizer) not in self._found_inf:
            self.unscale_(optimizer)
        if self._found_inf[id(optimizer)]:
            return None  # overflow: skip the update, the weights stay as they are
        return optimizer.step()

    def update(self) -> None:
        if not self._found_inf:
            raise RuntimeError("No inf checks were recorded prior to update(): call step() or unscale_() first.")
        if any(self._found_inf.values()):
            self._scale = self._scale * self._backoff_factor
            self._growth_tracker = 0
        else:
            self._growth_tracker += 1
            if self._growth_tracker == self._growth_interval:
                grown = self._scale * self._growth_factor
                if torch.isfinite(grown):
                    self._scale = grown
                self._growth_tracker = 0
        self._found_inf.clear()

    def state_dict(self) -> dict[str, float | int]:
        """Same keys as ``torch.amp.GradScaler.state_dict()``: the two load into each other."""
        return {
            "scale": self.get_scale(),
            "growth_factor": self._growth_factor,
            "backoff_factor": self._backoff_factor,
            "growth_interval": self._growth_interval,
            "_growth_tracker": self._growth_tracker,
        }

    def load_state_dict(self, state: dict[str, float | int]) -> None:
        missing = {"scale", "growth_factor", "backoff_factor", "growth_interval", "_growth_tracker"} - set(state)
        if missing:
            raise ValueError(f"GradScaler state is missing {sorted(missing)}")
        self._scale = torch.tensor(float(state["scale"]), dtype=torch.float32)
        self._growth_factor, self._backoff_factor = float(state["growth_factor"]), float(state["backoff_factor"])
        self._growth_interval, self._growth_tracker = int(state["growth_interval"]), int(state["_growth_tracker"])
# --8<-- [end:scaler]


# --8<-- [start:train_step]
def amp_train_step(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    optimizer: torch.optim.Optimizer,
    scaler: ScratchGradScaler | torch.amp.GradScaler | None = None,
    dtype: torch.dtype | None = torch.bfloat16,
) -> float:
    """One mixed-precision step: forward under ``torch.autocast`` (``dtype=None``: plain float32),
    backward on the scaled loss, unscale + inf check + step, scale update. Returns the loss."""
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(x.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        loss = loss_fn(model(x), y)  # matmuls in `dtype`; the loss is computed in float32
    if scaler is None:  # bfloat16 needs no scaling: it has float32's exponent range
        loss.backward()
        optimizer.step()
    else:  # float16: scale so tiny gradients survive, then unscale before the update
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    return float(loss.detach())
# --8<-- [end:train_step]


def two_spirals(n: int, generator: torch.Generator, noise: float = 0.1) -> tuple[Tensor, Tensor]:
    """``n`` points of two interleaved spirals: ``x: (n, 2)`` float32, ``y: (n,)`` class 0/1."""
    if n < 2:
        raise ValueError(f"n must be >= 2, got n={n}")
    y = torch.arange(n) % 2
    t = torch.rand(n, generator=generator) * 3 * math.pi + 0.5
    angle = t + math.pi * y
    x = torch.stack([t * torch.cos(angle), t * torch.sin(angle)], dim=1) / 5
    return x + noise * torch.randn(n, 2, generator=generator), y


def precision_comparison(
    steps: int = 300, n: int = 512, hidden: int = 64, lr: float = 1e-2, seed: int = 0, device: str = "cpu"
) -> dict[str, dict[str, float | list[float]]]:
    """Train the same MLP (same seed, data and steps) in float32 and under bfloat16 autocast (plus
    float16 + GradScaler on CUDA); report the loss curve, final test loss and accuracy of each."""
    g = torch.Generator().manual_seed(seed)
    x, y = (t.to(device) for t in two_spirals(n, g))
    xt, yt = (t.to(device) for t in two_spirals(n, g))
    modes: dict[str, tuple[torch.dtype | None, bool]] = {"float32": (None, False), "bfloat16": (torch.bfloat16, False)}
    if torch.device(device).type == "cuda":
        modes["float16"] = (torch.float16, True)
    out: dict[str, dict[str, float | list[float]]] = {}
    for name, (dtype, scaled) in modes.items():
        torch.manual_seed(seed)
        model = nn.Sequential(
            nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 2)
        ).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        scaler = ScratchGradScaler() if scaled else None
        losses = [amp_train_step(model, nn.functional.cross_entropy, x, y, opt, scaler, dtype) for _ in range(steps)]
        with torch.no_grad(), torch.autocast(torch.device(device).type, dtype=dtype or torch.float32,
                                              enabled=dtype is not None):
            logits = model(xt)
            test_loss = float(nn.functional.cross_entropy(logits.float(), yt))
        accuracy = float((logits.argmax(1) == yt).float().mean())
        out[name] = {"losses": losses, "test_loss": test_loss, "accuracy": accuracy}
    return out


if __name__ == "__main__":
    for row in format_limits():
        print(f"{str(row.dtype):15} 1+{row.exponent_bits}+{row.mantissa_bits} bits  max {row.max:.3g}  "
              f"smallest normal {row.smallest_normal:.3g}  eps {row.eps:.3g}")
    demo = underflow_demo(torch.tensor([1e-3, 1e-6, 1e-8]))
    print("1e-8 in float16:", demo["plain"][2].item(), "| scaled by 2^16:", f"{demo['scaled'][2].item():.3g}")
    res = precision_comparison(steps=60)
    for name, r in res.items():
        print(f"{name}: final train loss {r['losses'][-1]:.3f}, test accuracy {r['accuracy']:.2f}")
