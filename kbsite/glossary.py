"""The bilingual glossary (glossary.toml): the glossary page and the term line of each topic page."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from snippets._catalog import ROOT, Catalog

GLOSSARY = ROOT / "glossary.toml"


@dataclass(frozen=True)
class Term:
    zh: str
    en: str
    aliases: tuple[str, ...]
    topics: tuple[str, ...]


@cache
def load_glossary(path: Path = GLOSSARY) -> tuple[Term, ...]:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    return tuple(
        Term(t["zh"], t["en"], tuple(t.get("aliases", ())), tuple(t.get("topics", ()))) for t in data["term"]
    )


def _esc(text: str) -> str:
    return text.replace("|", "\\|")


def glossary_markdown(catalog: Catalog, lang: str) -> str:
    """The glossary table, sorted by the page language's term."""
    by_slug = {t.slug: t for t in catalog.topics}
    head = {
        "zh": "| 中文 | English | 别名 | 页面 |\n| --- | --- | --- | --- |",
        "en": "| English | 中文 | Also known as | Pages |\n| --- | --- | --- | --- |",
    }[lang]
    rows = []
    terms = sorted(load_glossary(), key=lambda t: (t.zh if lang == "zh" else t.en.lower()))
    for term in terms:
        pages = ", ".join(
            f"[{by_slug[s].title(lang)}]({by_slug[s].page('zh').as_posix()})" for s in term.topics if s in by_slug
        )
        first, second = (term.zh, term.en) if lang == "zh" else (term.en, term.zh)
        aliases = ("、" if lang == "zh" else ", ").join(term.aliases)
        rows.append(f"| **{_esc(first)}** | {_esc(second)} | {_esc(aliases)} | {pages} |")
    return head + "\n" + "\n".join(rows)


def terms_line(slug: str, lang: str) -> str:
    """One line naming the glossary terms of a topic (with aliases), appended to its page."""
    terms = [t for t in load_glossary() if slug in t.topics]
    if not terms:
        return ""
    if lang == "zh":
        items = "；".join(f"{t.zh}（{t.en}{'，' + '，'.join(t.aliases) if t.aliases else ''}）" for t in terms)
        return f"\n\n---\n\n**本页术语**：{items}。见[术语表](../glossary.md)。\n"
    items = "; ".join(f"{t.en} ({t.zh}{', ' + ', '.join(t.aliases) if t.aliases else ''})" for t in terms)
    return f"\n\n---\n\n**Terms on this page**: {items}. See the [glossary](../glossary.md).\n"
