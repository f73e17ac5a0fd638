"""Read-only pages showing the source of every snippet module and test file.

Topic pages link to them ("the test that proves it"), e.g. ``../code/tests/attention/test_sdpa.md``;
they are generated at build time from the files themselves and kept out of the search index.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import markdown
import pygments
import pymdownx

from snippets._catalog import ROOT

FOLDERS = ("snippets", "tests")


def source_files() -> list[Path]:
    """Every public snippet module and every test module, relative to the repository root."""
    out = []
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT)
            if path.name == "__init__.py" or any(p.startswith("_") for p in rel.parts[1:]):
                continue
            if folder == "tests" and not path.name.startswith("test_"):
                continue
            out.append(rel)
    return out


def page_uri(rel: Path) -> str:
    """``snippets/attention/sdpa.py`` → ``code/snippets/attention/sdpa.md``."""
    return f"code/{rel.with_suffix('.md').as_posix()}"


def page_markdown(rel: Path) -> str:
    """A page with a placeholder where :func:`highlighted` puts the file's source (see the site hook)."""
    return (
        "---\nsearch:\n  exclude: true\n---\n\n"
        f"# {rel.as_posix()}\n\n"
        f"{placeholder(rel)}\n"
    )


def placeholder(rel: Path) -> str:
    return f'<div class="dlkb-source" data-path="{rel.as_posix()}"></div>'


def highlighted(rel: Path, mdx_configs: dict, cache_dir: Path | None = None) -> str:
    """The file's whole source as the site's Markdown renders a ``python`` fence (same highlight
    options), drawn once per source and option set: both languages and later builds reuse it."""
    source = (ROOT / rel).read_text(encoding="utf-8")
    names = ("pymdownx.highlight", "pymdownx.superfences")
    configs = {n: mdx_configs.get(n, {}) for n in names}
    key = hashlib.sha256(
        json.dumps([configs, pygments.__version__, pymdownx.__version__, source], sort_keys=True, default=str).encode()
    ).hexdigest()[:20]
    cached = (cache_dir or ROOT / ".cache" / "source-pages") / f"{key}.html"
    if cached.is_file():
        return cached.read_text(encoding="utf-8")
    fence = "`" * 5
    html = markdown.markdown(f"{fence}python\n{source}{fence}\n", extensions=list(names), extension_configs=configs)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(cached)  # atomic: a concurrent build never reads half a file
    return html
