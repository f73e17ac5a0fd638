"""Read-only pages showing the source of every snippet module and test file.

Topic pages link to them ("the test that proves it"), e.g. ``../code/tests/attention/test_sdpa.md``;
they are generated at build time from the files themselves and kept out of the search index.
"""

from __future__ import annotations

from pathlib import Path

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
    """A page with the file's whole source, highlighted."""
    source = (ROOT / rel).read_text(encoding="utf-8")
    fence = "`" * 5
    return (
        "---\nsearch:\n  exclude: true\n---\n\n"
        f"# {rel.as_posix()}\n\n"
        f"{fence}python\n{source}{fence}\n"
    )
