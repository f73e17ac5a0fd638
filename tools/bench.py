"""Measure the budgets: site build (cold and warm, per page, slowest figures), test suite, search index
size, and the benchmarks the pages quote (the ``tools/bench_*.py`` modules in MODEL_BENCHES).

Writes reports/bench.md and prints it. Run with `make bench` (not part of `make test`);
`python tools/bench.py models` runs only the model benchmarks (a minute), `site` only the budgets.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}


def timed(cmd: list[str], **kw) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env={**ENV, **kw.pop("env", {})}, capture_output=True, text=True, **kw)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return elapsed, proc


def site_report() -> str:
    out = tempfile.mkdtemp(prefix="bench-")
    site = Path(out) / "site"
    build = [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)]
    shutil.rmtree(ROOT / ".cache", ignore_errors=True)
    cold, _ = timed(build)
    drawn = {}
    for timings in (ROOT / ".cache" / "figures").glob("*/seconds.json"):
        drawn.update(json.loads(timings.read_text()))
    slowest = ", ".join(f"{n} {s:.1f} s" for n, s in sorted(drawn.items(), key=lambda kv: -kv[1])[:5])
    warm, _ = timed(build)
    pages = [p for p in site.rglob("index.html") if "code" not in p.relative_to(site).parts]
    n_pages = len(pages)
    index = {
        lang: (site / sub / "search_index.json").stat().st_size
        for lang, sub in (("zh", "search"), ("en", "en/search"))
    }
    docs = {lang: len(json.loads((site / sub / "search_index.json").read_text())["docs"])
            for lang, sub in (("zh", "search"), ("en", "en/search"))}
    offline, _ = timed(build[:-1] + [str(Path(out) / "offline")], env={"OFFLINE": "true"})
    tests, proc = timed([sys.executable, "-m", "pytest", "-q", "-p", "no:randomly"])
    summary = proc.stdout.strip().splitlines()[-1]
    size = sum(p.stat().st_size for p in site.rglob("*") if p.is_file())
    shutil.rmtree(out, ignore_errors=True)
    return f"""## Site and test-suite budgets

| measure | value |
| --- | ---: |
| `mkdocs build --strict`, cold (notebooks executed) | {cold:.1f} s |
| `mkdocs build --strict`, warm (notebook cache hit) | {warm:.1f} s |
| pages built (zh + en, without source pages) | {n_pages} |
| seconds per page, cold / warm | {cold / n_pages:.2f} / {warm / n_pages:.2f} |
| figures drawn in the cold build: count / seconds | {len(drawn)} / {sum(drawn.values()):.1f} s |
| slowest figures | {slowest} |
| offline (`file://`) build, warm | {offline:.1f} s |
| built site size | {size / 1e6:.1f} MB |
| search index zh: entries / size | {docs['zh']} / {index['zh'] / 1e3:.0f} kB |
| search index en: entries / size | {docs['en']} / {index['en'] / 1e3:.0f} kB |
| `pytest` (whole suite, site builds included) | {tests:.1f} s |
| pytest summary | {summary} |
"""


MODEL_BENCHES = (
    ("tools.bench_attention", "Attention"),
    ("tools.bench_llm", "KV cache and GQA"),
    ("tools.bench_tensors", "Tensors: views and copies"),
    ("tools.bench_grads", "Clearing gradients: zero_() vs None"),
    ("tools.bench_data_amp", "Data loading and mixed precision"),
    ("tools.bench_compile", "torch.compile"),
)


def models_report() -> str:
    """The benchmarks the attention and LLM pages quote (each module has ``run() -> rows``)."""
    import importlib

    sys.path.insert(0, str(ROOT))
    parts = []
    for name, title in MODEL_BENCHES:
        if not (ROOT / (name.replace(".", "/") + ".py")).is_file():
            continue
        rows = importlib.import_module(name).run()
        table = "\n".join(f"| {measure} | {value} |" for measure, value in rows)
        parts.append(f"## {title}\n\n| measure | value |\n| --- | ---: |\n{table}\n")
    return "\n".join(parts)


def main() -> None:
    what = sys.argv[1:] or ["site", "models"]
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"
    report = (
        f"# Benchmarks\n\nMachine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{device}, Python {platform.python_version()}.\n\n"
    )
    if "models" in what:
        report += models_report() + "\n"
    if "site" in what:
        report += site_report()
    (ROOT / "reports").mkdir(exist_ok=True)
    (ROOT / "reports" / "bench.md").write_text(report, encoding="utf-8")
    print(report)


if __name__ == "__main__":
    main()
