"""Read the topic catalog (``catalog.toml`` at the repository root); standard library only."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CATALOG = ROOT / "catalog.toml"
LANGS = ("zh", "en")


@dataclass(frozen=True)
class Chapter:
    """One chapter: ``id`` is the folder name used in docs/, snippets/ and tests/."""

    id: str
    number: int
    zh: str
    en: str

    def title(self, lang: str) -> str:
        return self.zh if lang == "zh" else self.en


@dataclass(frozen=True)
class Topic:
    """One written topic (a curriculum row) and where its page, code and proof live."""

    id: str
    slug: str
    chapter: str
    zh: str
    en: str
    snippets: tuple[str, ...] = ()
    tests: tuple[str, ...] = ()
    kind: str = "page"  # "page" (Markdown) or "notebook" (jupytext percent script)
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def title(self, lang: str) -> str:
        return self.zh if lang == "zh" else self.en

    def page(self, lang: str) -> Path:
        """Source file of the page, relative to ``docs/``."""
        suffix = ".py" if self.kind == "notebook" else ".md"
        lang_part = "" if lang == "zh" else f".{lang}"
        return Path(self.chapter) / f"{self.slug}{lang_part}{suffix}"

    def url(self, lang: str = "zh") -> str:
        """Site path of the page (directory URLs), e.g. ``en/attention/masked-softmax/``."""
        prefix = "" if lang == "zh" else f"{lang}/"
        return f"{prefix}{self.chapter}/{self.slug}/"


@dataclass(frozen=True)
class Part:
    """A top-level navigation tab grouping chapters."""

    zh: str
    en: str
    chapters: tuple[str, ...]

    def title(self, lang: str) -> str:
        return self.zh if lang == "zh" else self.en


@dataclass(frozen=True)
class Catalog:
    parts: tuple[Part, ...]
    chapters: tuple[Chapter, ...]
    topics: tuple[Topic, ...]

    def chapter(self, chapter_id: str) -> Chapter:
        return next(c for c in self.chapters if c.id == chapter_id)

    def topics_of(self, chapter_id: str) -> list[Topic]:
        """Topics of a chapter in curriculum order."""
        key = lambda t: tuple(int(p) for p in t.id.split("."))  # noqa: E731
        return sorted((t for t in self.topics if t.chapter == chapter_id), key=key)

    def topics_for_module(self, module: str) -> list[Topic]:
        """Topics whose page explains ``module`` (dotted, without ``snippets.``)."""
        return [t for t in self.topics if module in t.snippets]


@cache
def load_catalog(path: Path = CATALOG) -> Catalog:
    """Parse ``catalog.toml`` into :class:`Catalog` (cached)."""
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    parts = tuple(Part(p["zh"], p["en"], tuple(p["chapters"])) for p in data.get("part", []))
    chapters = tuple(Chapter(**c) for c in data.get("chapter", []))
    topics = []
    for t in data.get("topic", []):
        known = {k: t[k] for k in ("id", "slug", "chapter", "zh", "en", "kind") if k in t}
        topics.append(
            Topic(
                **known,
                snippets=tuple(t.get("snippets", ())),
                tests=tuple(t.get("tests", ())),
                extra={k: v for k, v in t.items() if k not in known and k not in ("snippets", "tests")},
            )
        )
    return Catalog(parts, chapters, tuple(topics))
