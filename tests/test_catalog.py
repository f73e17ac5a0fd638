"""catalog.toml ↔ pages ↔ snippet modules ↔ tests ↔ glossary: one list, no drift."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from kbsite.glossary import load_glossary
from snippets.__main__ import all_modules
from snippets._catalog import ROOT, load_catalog

DOCS = ROOT / "docs"
CATALOG = load_catalog()


def test_ids_and_slugs_are_unique_and_chapters_known() -> None:
    assert len({t.id for t in CATALOG.topics}) == len(CATALOG.topics)
    assert len({t.slug for t in CATALOG.topics}) == len(CATALOG.topics)
    chapter_ids = [c.id for c in CATALOG.chapters]
    assert sorted(c.number for c in CATALOG.chapters) == list(range(1, 16))
    assert sorted(cid for p in CATALOG.parts for cid in p.chapters) == sorted(chapter_ids)
    for t in CATALOG.topics:
        assert t.chapter in chapter_ids, t.slug
        assert t.id.split(".")[0] == str(CATALOG.chapter(t.chapter).number), t.slug
        assert t.kind in ("page", "notebook")


def test_every_topic_has_both_pages_and_every_page_a_topic() -> None:
    for t in CATALOG.topics:
        for lang in ("zh", "en"):
            assert (DOCS / t.page(lang)).is_file(), f"{t.slug}: missing {t.page(lang)}"
    listed = {t.page(lang) for t in CATALOG.topics for lang in ("zh", "en")}
    for chapter in CATALOG.chapters:
        assert (DOCS / chapter.id / "index.md").is_file() and (DOCS / chapter.id / "index.en.md").is_file()
        for page in (DOCS / chapter.id).iterdir():
            if page.name not in ("index.md", "index.en.md"):
                assert page.relative_to(DOCS) in listed, f"{page} is not in catalog.toml"


def test_topics_name_existing_modules_and_tests() -> None:
    modules = all_modules()
    for t in CATALOG.topics:
        assert t.snippets, f"{t.slug} explains no snippet module"
        for mod in t.snippets:
            assert mod in modules, f"{t.slug}: no module snippets/{mod.replace('.', '/')}.py"
            proof = f"tests/{mod.rsplit('.', 1)[0].replace('.', '/')}/test_{mod.rsplit('.', 1)[-1]}.py"
            assert proof in t.tests, f"{t.slug}: {proof} must be listed as the test of {mod}"
        for test in t.tests:
            assert (ROOT / test).is_file(), f"{t.slug}: missing {test}"


def test_every_module_is_explained_tested_and_copyable() -> None:
    modules = all_modules()
    explained = {m for t in CATALOG.topics for m in t.snippets}
    assert sorted(set(modules) - explained) == [], "modules without a page in catalog.toml"
    for mod, path in modules.items():
        chapter = path.parent.relative_to(ROOT / "snippets")
        assert (ROOT / "tests" / chapter / f"test_{path.stem}.py").is_file(), f"{mod} has no test file"
    basenames = Counter(m.rsplit(".", 1)[-1] for m in modules)
    assert [b for b, n in basenames.items() if n > 1] == [], "copy flattens modules: names must be unique"


def test_snippets_tree_mirrors_chapters() -> None:
    chapter_ids = {c.id for c in CATALOG.chapters} | {"data"}  # data/ serves several chapters
    for folder in (ROOT / "snippets", ROOT / "tests"):
        for sub in folder.iterdir():
            if sub.is_dir() and not sub.name.startswith("_") and sub.name not in ("site",):
                assert sub.name in chapter_ids, f"{sub} is not a chapter folder"


def test_glossary_terms_point_at_topics() -> None:
    slugs = {t.slug for t in CATALOG.topics}
    terms = load_glossary()
    assert terms
    assert len({t.zh for t in terms}) == len(terms) and len({t.en for t in terms}) == len(terms)
    for term in terms:
        assert set(term.topics) <= slugs, f"glossary term {term.en!r} names unknown topics"
    covered = {s for term in terms for s in term.topics}
    assert slugs <= covered, f"topics without a glossary term: {sorted(slugs - covered)}"


def test_catalog_navigation_lists_every_topic() -> None:
    from kbsite.catalog_pages import build_nav

    flat: list[str] = []

    def walk(items) -> None:
        for item in items:
            if isinstance(item, str):
                flat.append(item)
            else:
                for value in item.values():
                    walk(value if isinstance(value, list) else [value])

    walk(build_nav(CATALOG))
    assert {t.page("zh").as_posix() for t in CATALOG.topics} <= set(flat)
    assert all(f"{c.id}/index.md" in flat for c in CATALOG.chapters)
    assert all((DOCS / Path(p)).is_file() for p in flat)
