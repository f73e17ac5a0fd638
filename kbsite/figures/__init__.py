"""Figures generated from the snippets at build time (PNG), cached by the source they depend on.

A page shows a figure with ordinary Markdown: ``![alt](../assets/figures/NAME.png)``; the site
hook adds every registered figure to the build, so a missing name fails ``mkdocs build --strict``.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import pkgutil
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIGURES: dict[str, Callable] = {}


def figure(name: str) -> Callable[[Callable], Callable]:
    """Register a function returning a matplotlib Figure under ``name``."""

    def register(fn: Callable) -> Callable:
        if name in FIGURES:
            raise ValueError(f"figure {name!r} registered twice")
        FIGURES[name] = fn
        return fn

    return register


def load_all() -> dict[str, Callable]:
    """Import every figure module of this package and return the registry."""
    for mod in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{mod.name}")
    return FIGURES


def _source_key() -> str:
    h = hashlib.sha256()
    for folder in (ROOT / "snippets", ROOT / "kbsite"):
        for path in sorted(folder.rglob("*.py")):
            h.update(path.as_posix().encode() + path.read_bytes())
    return h.hexdigest()[:16]


def render_all(cache_dir: Path | None = None) -> dict[str, bytes]:
    """PNG bytes of every registered figure, from ``cache_dir`` when the sources are unchanged."""
    figures = load_all()
    key_dir = (cache_dir or ROOT / ".cache" / "figures") / _source_key()
    out, seconds = {}, {}
    threads = None
    for name, fn in sorted(figures.items()):
        cached = key_dir / f"{name}.png"
        if cached.is_file():
            out[name] = cached.read_bytes()
            continue
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        if threads is None:  # the figures' models are tiny: a 2nd intra-op thread only adds contention
            import torch

            threads = torch.get_num_threads()
            torch.set_num_threads(1)
        start = time.perf_counter()
        fig = fn()
        seconds[name] = round(time.perf_counter() - start, 3)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
        plt.close(fig)
        key_dir.mkdir(parents=True, exist_ok=True)
        cached.write_bytes(buf.getvalue())
        out[name] = buf.getvalue()
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    if seconds:  # what each freshly drawn figure cost (tools/bench.py reports the slowest)
        timings = key_dir / "seconds.json"
        old = json.loads(timings.read_text()) if timings.is_file() else {}
        timings.write_text(json.dumps({**old, **seconds}, indent=1, sort_keys=True))
    return out
