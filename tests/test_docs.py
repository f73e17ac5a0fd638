"""The pages themselves: both languages, one skeleton, the same code, formulas, includes and links."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pytest_codeblocks.main import extract_from_file

from snippets._catalog import load_catalog

DOCS = Path(__file__).resolve().parents[1] / "docs"
SECTIONS = {
    "为什么重要": "Why it matters",
    "直觉": "Intuition",
    "数学": "The math",
    "代码": "The code",
    "验证": "Verified against",
    "笔记中的问题": "Questions from the notes",
    "勘误": "Errata",
    "要点": "Key points",
    "延伸阅读": "See also",
}


def _pairs() -> list[tuple[Path, Path]]:
    pairs = []
    for zh in sorted(DOCS.rglob("*")):
        if "assets" in zh.parts or zh.suffix not in (".md", ".py") or ".en." in zh.name:
            continue
        pairs.append((zh, zh.with_name(zh.stem + ".en" + zh.suffix)))
    return pairs


PAIRS = _pairs()
IDS = [str(p[0].relative_to(DOCS)) for p in PAIRS]


def _text(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".py":  # jupytext percent notebook: keep the Markdown cells, unprefixed
        text = "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#") for line in text.splitlines())
    return text


def _prose(text: str) -> str:
    """Text outside fenced code blocks."""
    return re.sub(r"^(\s*)(`{3,}).*?^\1\2\s*$", "", text, flags=re.S | re.M)


def _headings(text: str, level: int) -> list[str]:
    return re.findall(rf"^{'#' * level} (.+?)\s*$", _prose(text), flags=re.M)


def test_every_page_has_both_languages() -> None:
    assert PAIRS
    missing = [str(en) for _, en in PAIRS if not en.exists()]
    orphans = [
        str(p)
        for p in DOCS.rglob("*.en.*")
        if "assets" not in p.parts and not p.with_name(p.name.replace(".en.", ".")).exists()
    ]
    assert missing == [] and orphans == []


@pytest.mark.parametrize(("zh", "en"), PAIRS, ids=IDS)
def test_same_skeleton(zh: Path, en: Path) -> None:
    zt, et = _text(zh), _text(en)
    assert len(_headings(zt, 1)) == len(_headings(et, 1)) == 1
    zh2, en2 = _headings(zt, 2), _headings(et, 2)
    assert len(zh2) == len(en2)
    assert len(_headings(zt, 3)) == len(_headings(et, 3))
    if zh.stem in {t.slug for t in load_catalog().topics}:  # a topic page: the fixed sections
        assert zh2 == list(SECTIONS), f"{zh.name}: sections must be {list(SECTIONS)}"
        assert en2 == list(SECTIONS.values())


def _blocks(path: Path) -> list[tuple]:
    if path.suffix == ".py":
        cells = re.split(r"^# %%.*$", path.read_text(encoding="utf-8"), flags=re.M)
        return [c.strip() for c in cells if c.strip() and not c.lstrip().startswith("# ") and "---" not in c[:10]]
    return [(b.syntax, b.code, b.expected_output, tuple(b.marks)) for b in extract_from_file(path)]


@pytest.mark.parametrize(("zh", "en"), PAIRS, ids=IDS)
def test_same_code_byte_for_byte(zh: Path, en: Path) -> None:
    assert _blocks(zh) == _blocks(en)


@pytest.mark.parametrize(("zh", "en"), PAIRS, ids=IDS)
def test_same_formulas_includes_and_links(zh: Path, en: Path) -> None:
    zt, et = _prose(_text(zh)), _prose(_text(en))
    assert zt.count("$$") == et.count("$$"), "different number of display formulas"
    includes = re.compile(r'--8<-- "([^"]+)"')
    assert includes.findall(_text(zh)) == includes.findall(_text(en))
    links = re.compile(r"\]\(([^)\s]+)\)")
    assert sorted(links.findall(zt)) == sorted(links.findall(et))
    assert zt.count("!!! ") == et.count("!!! "), "different number of admonitions"


def _fences(path: Path) -> list[tuple[int, str, str, str]]:
    """(line, info string, body, preceding non-blank line) of every fence."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out, i = [], 0
    while i < len(lines):
        m = re.match(r"^(\s*)(`{3,})(.*)$", lines[i])
        if m:
            indent, ticks, info = m.groups()
            j = i + 1
            while j < len(lines) and not lines[j].strip().startswith(ticks):
                j += 1
            prev = next((ln for ln in reversed(lines[:i]) if ln.strip()), "")
            out.append((i + 1, info.strip(), "\n".join(lines[i + 1 : j]), prev.strip()))
            i = j
        i += 1
    return out


MD_PAGES = sorted(p for p in DOCS.rglob("*.md") if "assets" not in p.parts)


@pytest.mark.parametrize("page", MD_PAGES, ids=[str(p.relative_to(DOCS)) for p in MD_PAGES])
def test_every_python_block_runs_or_is_a_marked_include(page: Path) -> None:
    """pytest-codeblocks silently ignores decorated fences (``python title=…``, ``py``, ``pycon``)
    and runs every ``bash``/``sh`` fence: only plain ``python`` blocks may hold code, and the only
    decorated ones allowed are snippet includes carrying an explicit skip marker."""
    for line, info, body, prev in _fences(page):
        lang = info.split()[0] if info else ""
        where = f"{page.name}:{line}"
        assert lang not in ("py", "pycon", "python3", "bash", "sh", "shell", "zsh"), f"{where}: use python or console"
        if "--8<--" in body:
            assert info.startswith("python title="), f"{where}: an include block needs python title=…"
            assert prev.startswith('<!--pytest.mark.skip(reason="included from snippets/'), f"{where}: skip marker"
        elif lang == "python":
            assert info == "python", f"{where}: decorated python fences are not tested"


def test_pages_link_to_existing_sources_and_tests() -> None:
    root = DOCS.parent
    for page in MD_PAGES:
        for target in re.findall(r"\]\((?:\.\./)+code/([^)#]+)\.md\)", page.read_text(encoding="utf-8")):
            assert (root / f"{target}.py").is_file(), f"{page.name} links to missing {target}.py"
