"""Site hook: catalog-driven navigation and index lists, build-time figures, per-language search.

Everything a fresh clone needs to show the real site happens here at build time; nothing is
generated into docs/ by hand.
"""

from __future__ import annotations

import logging
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

from kbsite import catalog_pages, search_split, source_pages
from kbsite.figures import render_all
from kbsite.glossary import glossary_markdown, terms_line
from snippets._catalog import load_catalog

log = logging.getLogger("mkdocs.hooks.site")
_state: dict = {}


class _DropInstantWarning(logging.Filter):
    """i18n warns that its contextual language links break with instant navigation; the site's
    katex-init.js re-syncs the header links from each page's <link rel=alternate> (browser-tested)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "not compatible with theme.features = navigation.instant" not in record.getMessage()


logging.getLogger("mkdocs.plugins.mkdocs_static_i18n.reconfigure").addFilter(_DropInstantWarning())


def _i18n(config):
    return config.plugins.get("i18n")


def _lang(config) -> str:
    i18n = _i18n(config)
    return i18n.current_language if i18n else "zh"


@event_priority(50)
def on_config(config):
    catalog = load_catalog()
    config.nav = catalog_pages.build_nav(catalog)
    i18n = _i18n(config)
    if i18n is not None:
        for lang_cfg in i18n.config.languages:
            if not lang_cfg.default:
                lang_cfg.nav_translations = catalog_pages.nav_translations(catalog, lang_cfg.locale)
        if i18n.current_language in (None, i18n.default_language):
            _state["root_site_dir"] = Path(config.site_dir)
    return config


@event_priority(-110)
def on_files(files, config):
    """Add the build-time figures (assets/figures/NAME.png) and the source pages (code/...),
    after i18n has rebuilt the file list so that every language gets them."""
    if "figures" not in _state:
        _state["figures"] = render_all()
    for name, png in _state["figures"].items():
        files.append(File.generated(config, f"assets/figures/{name}.png", content=png))
    lang, i18n = _lang(config), _i18n(config)
    prefix = "" if i18n is None or lang == i18n.default_language else f"{lang}/"
    for rel in source_pages.source_files():  # code/snippets/..., code/tests/... source pages
        page = File.generated(config, source_pages.page_uri(rel), content=source_pages.page_markdown(rel))
        page.dest_uri = prefix + page.dest_uri  # each language shows them in its own chrome
        files.append(page)
    return files


def on_page_markdown(markdown: str, page, config, files):
    catalog = load_catalog()
    lang = _lang(config)
    if "<!-- catalog:chapters -->" in markdown:
        markdown = markdown.replace("<!-- catalog:chapters -->", catalog_pages.chapters_markdown(catalog, lang))
    if "<!-- catalog:topics -->" in markdown:
        chapter = page.file.src_uri.split("/")[0]
        markdown = markdown.replace("<!-- catalog:topics -->", catalog_pages.topics_markdown(catalog, chapter, lang))
    if "<!-- catalog:glossary -->" in markdown:
        markdown = markdown.replace("<!-- catalog:glossary -->", glossary_markdown(catalog, lang))
    slug = page.file.src_uri.rsplit("/", 1)[-1].split(".", 1)[0]
    if any(t.slug == slug and page.file.src_uri.startswith(t.chapter + "/") for t in catalog.topics):
        markdown += terms_line(slug, lang)
    return markdown


def on_page_content(html: str, page, config, files):
    """Source pages: put the highlighted file where its placeholder is (drawn once for both languages)."""
    if page.file.src_uri.startswith("code/"):
        rel = Path(page.file.src_uri.removeprefix("code/")).with_suffix(".py")
        html = html.replace(source_pages.placeholder(rel), source_pages.highlighted(rel, config.mdx_configs), 1)
    return html


@event_priority(-110)
def on_post_page(output: str, page, config):
    i18n = _i18n(config)
    if i18n is not None and i18n.current_language != i18n.default_language:
        output = search_split.rebase_page(output, i18n.current_language)
    return output


@event_priority(-200)
def on_post_build(config):
    i18n = _i18n(config)
    if i18n is None or i18n.building:
        return
    offline = config.plugins.get("material/offline") or config.plugins.get("offline")
    counts = search_split.split_index(
        _state.get("root_site_dir", Path(config.site_dir)),
        list(i18n.build_languages),
        i18n.default_language,
        offline=bool(offline and offline.config.enabled),
    )
    log.info(f"Search index split per language: {counts}")


def on_page_context(context, page, config, nav):
    """Make the language links relative (i18n writes root-absolute ``/`` and ``/en/`` on the home
    pages), so the site also works under a sub-path and from ``file://``."""
    alternates = getattr(config.extra, "alternate", None) or config.extra.get("alternate") or []
    for alt in alternates:
        if alt["link"].startswith("/"):
            alt["link"] = alt["link"].lstrip("/") or "./"
    return context
