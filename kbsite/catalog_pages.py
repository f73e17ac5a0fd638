"""Navigation and index lists generated from catalog.toml (no second, hand-kept list)."""

from __future__ import annotations

from snippets._catalog import Catalog, Topic

HOME = {"zh": "首页", "en": "Home"}


def build_nav(catalog: Catalog) -> list:
    """MkDocs ``nav`` (titles in the default language; pages take their H1 as title)."""
    nav: list = [{HOME["zh"]: ["index.md", "glossary.md"]}]
    for part in catalog.parts:
        sections = []
        for cid in part.chapters:
            chapter = catalog.chapter(cid)
            pages = [f"{cid}/index.md"] + [t.page("zh").as_posix() for t in catalog.topics_of(cid)]
            sections.append({chapter.zh: pages})
        nav.append({part.zh: sections})
    return nav


def nav_translations(catalog: Catalog, lang: str) -> dict[str, str]:
    """Section titles of :func:`build_nav` → their translation in ``lang``."""
    out = {HOME["zh"]: HOME[lang]}
    out.update({p.zh: p.title(lang) for p in catalog.parts})
    out.update({c.zh: c.title(lang) for c in catalog.chapters})
    return out


def _link(topic: Topic, from_chapter: str | None) -> str:
    page = topic.page("zh")
    return page.name if from_chapter == topic.chapter else page.as_posix()


def topics_markdown(catalog: Catalog, chapter_id: str, lang: str) -> str:
    """Markdown list of a chapter's written topics (for the chapter index page)."""
    topics = catalog.topics_of(chapter_id)
    if not topics:
        return {"zh": "*本章的主题正在编写中。*", "en": "*The topics of this chapter are being written.*"}[lang]
    return "\n".join(f"- {t.id} · [{t.title(lang)}]({_link(t, chapter_id)})" for t in topics)


def chapters_markdown(catalog: Catalog, lang: str) -> str:
    """Markdown table of every chapter with its written topics (for the home page)."""
    head = {
        "zh": "| 章 | 主题 |\n| --- | --- |",
        "en": "| Chapter | Topics |\n| --- | --- |",
    }[lang]
    rows = []
    for c in sorted(catalog.chapters, key=lambda c: c.number):
        topics = catalog.topics_of(c.id)
        listed = " · ".join(f"[{t.title(lang)}]({_link(t, None)})" for t in topics) or "—"
        rows.append(f"| {c.number} · [{c.title(lang)}]({c.id}/index.md) | {listed} |")
    return head + "\n" + "\n".join(rows)
