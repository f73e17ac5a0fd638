"""The built site: strict build, every page in both languages, notebooks, search index, offline, links."""

from __future__ import annotations

import functools
import json
import re
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from snippets._catalog import load_catalog
from tests.site.conftest import Build

HAN = re.compile(r"[\u3400-\u9fff]")


def test_build_has_no_warnings(site_build: Build, offline_build: Build) -> None:
    for build in (site_build, offline_build):
        warnings = [ln for ln in build.log.splitlines() if re.match(r"^(WARNING|ERROR)\s+-", ln)]
        assert warnings == []


def test_every_catalog_page_is_built_in_both_languages(site_build: Build) -> None:
    catalog = load_catalog()
    pages = [t.url(lang) for t in catalog.topics for lang in ("zh", "en")]
    pages += [f"{prefix}{c.id}/" for c in catalog.chapters for prefix in ("", "en/")]
    pages += ["", "en/", "glossary/", "en/glossary/"]
    missing = [p for p in pages if not (site_build.site / p / "index.html").is_file()]
    assert missing == []
    for topic in catalog.topics:
        zh = (site_build.site / topic.url("zh") / "index.html").read_text(encoding="utf-8")
        en = (site_build.site / topic.url("en") / "index.html").read_text(encoding="utf-8")
        assert '<html lang="zh"' in zh and '<html lang="en"' in en


def test_notebook_pages_are_rendered_and_executed(site_build: Build) -> None:
    """Guards against static-i18n silently copying notebooks as raw text (upstream #198)."""
    notebooks = [t for t in load_catalog().topics if t.kind == "notebook"]
    assert notebooks
    for topic in notebooks:
        for lang in ("zh", "en"):
            page = (site_build.site / topic.url(lang) / "index.html").read_text(encoding="utf-8")
            assert "jupyter-wrapper" in page, topic.url(lang)
            assert 'src="data:image/png;base64,' in page, f"{topic.url(lang)} has no executed plot"
            assert re.search(r'<h2 id="[^"]+"', page), "notebook headings need non-empty ids"
            assert 'id=""' not in page


def _index(site: Path, lang: str) -> dict:
    folder = site / "search" if lang == "zh" else site / lang / "search"
    return json.loads((folder / "search_index.json").read_text(encoding="utf-8"))


def test_search_index_is_split_per_language(site_build: Build) -> None:
    zh, en = _index(site_build.site, "zh"), _index(site_build.site, "en")
    assert zh["docs"] and en["docs"]
    assert not any(d["location"].startswith("en/") for d in zh["docs"])
    page_titles = [d["title"] for d in en["docs"] if "#" not in d["location"]]
    assert all(HAN.search(t) is None for t in page_titles), "Chinese pages in the English index"
    zh_titles = [d["title"] for d in zh["docs"] if d["location"].endswith("/") and d["location"].count("/") == 2]
    assert zh_titles and all(HAN.search(t) for t in zh_titles if t != "Transformer")
    assert en["config"]["lang"] == ["en"]
    assert not any(d["location"].startswith("code/") for d in zh["docs"] + en["docs"]), "source pages indexed"
    # English pages point their search worker at en/search/ (Material's base)
    page = (site_build.site / "en" / "attention" / "masked-softmax" / "index.html").read_text(encoding="utf-8")
    assert '"base":"../../../en/"' in page


def test_chinese_is_segmented_into_words(site_build: Build) -> None:
    """jieba must import where mkdocs runs: Material joins jieba's words with U+200B."""
    text = " ".join(d["title"] + " " + d["text"] for d in _index(site_build.site, "zh")["docs"])
    assert "\u200b" in text
    assert re.search(r"(^|[\u200b\s])注意力([\u200b\s]|$)", text), "注意力 is not a separate token"
    assert re.search(r"(^|[\u200b\s])权重([\u200b\s]|$)", text)


def test_search_separator_splits_identifiers_and_scripts(site_build: Build) -> None:
    sep = re.compile(_index(site_build.site, "zh")["config"]["separator"])
    split = lambda s: [t for t in sep.split(s) if t]  # noqa: E731
    assert split("optimizer.zero_grad()") == ["optimizer", "zero", "grad"]
    assert split("KV缓存") == ["KV", "缓存"]
    assert split("dropout是什么") == ["dropout", "是什么"]
    assert split("Xavier初始化") == ["Xavier", "初始化"]
    assert split("repeat_interleave") == ["repeat", "interleave"]
    assert split("MultiheadAttention") == ["Multihead", "Attention"]


# --------------------------------------------------------------------- offline / self-contained

EXTERNAL = re.compile(r"^(https?:)?//", re.I)
CSS_URL = re.compile(r"""url\(\s*['"]?([^'")]+)""", re.I)
CSS_IMPORT = re.compile(r"""@import\s+(?:url\()?\s*['"]?([^'")\s;]+)""", re.I)
# Material's bundle names unpkg URLs that it loads only for features this site does not use
# (mermaid diagrams) or browsers it does not target (no ResizeObserver); the browser test proves
# no request leaves 127.0.0.1.
JS_LOAD = re.compile(r"""(?:\.src\s*=|importScripts\(|import\()\s*['"`](https?:)?//""", re.I)


class _Refs(HTMLParser):
    """Collect every URL an HTML page would load or link to."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.loads: list[str] = []  # fetched by the browser on load
        self.links: list[str] = []  # followed on click
        self.ids: set[str] = set()
        self.inline_css: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        for key in ("id", "name"):
            if a.get(key):
                self.ids.add(a[key])
        if tag in ("script", "img", "iframe", "source", "audio", "video", "embed") and a.get("src"):
            self.loads.append(a["src"])
        if tag == "link" and a.get("href"):
            rel = (a.get("rel") or "").lower()
            loaded = rel in ("stylesheet", "icon", "preload", "modulepreload", "manifest")
            (self.loads if loaded else self.links).append(a["href"])
        if tag == "a" and a.get("href"):
            self.links.append(a["href"])
        if a.get("style"):
            self.inline_css.append(a["style"])
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.inline_css.append(data)


PRE = re.compile(r"<pre\b[^>]*>.*?</pre>", re.S)
TAG = re.compile(r"<(\w+)\b([^>]*)>")
ATTR = re.compile(r"""(?:^|\s)(id|name|href)="([^"]*)\"""")


@functools.cache  # the offline and link tests read the same pages: parse each one once
def _parse(path: Path) -> _Refs:
    """Parse the page; highlighted code (``<pre>``: escaped text, spans and line-number anchors,
    half of the site's markup) is scanned for its anchors' ids and links with a regex instead."""
    refs = _Refs()
    html = path.read_text(encoding="utf-8")
    for block in PRE.findall(html):
        for tag, attrs in TAG.findall(block):
            for attr, value in ATTR.findall(attrs):
                if attr != "href":
                    refs.ids.add(unescape(value))
                elif tag == "a":
                    refs.links.append(unescape(value))
    refs.feed(PRE.sub("<pre></pre>", html))
    return refs


@pytest.mark.parametrize("which", ["site_build", "offline_build"])
def test_nothing_is_loaded_from_another_host(which: str, request: pytest.FixtureRequest) -> None:
    site = request.getfixturevalue(which).site
    offenders = []
    for path in site.rglob("*"):
        if path.suffix == ".html":
            refs = _parse(path.resolve())
            offenders += [(path, u) for u in refs.loads if EXTERNAL.match(u)]
            for css in refs.inline_css:
                offenders += [(path, u) for u in CSS_URL.findall(css) + CSS_IMPORT.findall(css) if EXTERNAL.match(u)]
        elif path.suffix == ".css":
            css = path.read_text(encoding="utf-8")
            offenders += [(path, u) for u in CSS_URL.findall(css) + CSS_IMPORT.findall(css) if EXTERNAL.match(u)]
        elif path.suffix == ".js" and "workers" not in path.parts and not path.name.startswith("bundle."):
            offenders += [(path, m.group(0)) for m in JS_LOAD.finditer(path.read_text(encoding="utf-8"))]
    assert offenders == []


def test_no_google_fonts_or_cdn_anywhere_in_html(site_build: Build) -> None:
    for path in site_build.site.rglob("*.html"):
        text = re.sub(r"<(pre|code)\b.*?</\1>", "", path.read_text(encoding="utf-8"), flags=re.S)  # shown code
        for host in ("fonts.googleapis", "fonts.gstatic", "cdn.jsdelivr", "unpkg.com", "cdnjs", "googletagmanager"):
            assert host not in text, f"{path} mentions {host}"


def _resolve(site: Path, page: Path, url: str) -> tuple[Path, str] | None:
    parts = urlsplit(url)
    if parts.scheme or parts.netloc or url.startswith(("mailto:", "data:", "javascript:")):
        return None
    base = page.parent
    target = (base / unquote(parts.path)).resolve() if parts.path else page
    if target.is_dir():
        target = target / "index.html"
    return target, unquote(parts.fragment)


@pytest.mark.parametrize("which", ["site_build", "offline_build"])
def test_internal_links_and_anchors_resolve(which: str, request: pytest.FixtureRequest) -> None:
    site = request.getfixturevalue(which).site.resolve()
    broken = []
    # 404.html is served at arbitrary URLs, so MkDocs gives it root-absolute links by design
    for page in sorted(p for p in site.rglob("*.html") if p.name != "404.html"):
        refs = _parse(page)
        for url in refs.links + refs.loads:
            resolved = _resolve(site, page, url)
            if resolved is None:
                continue
            target, fragment = resolved
            if not target.is_file():
                broken.append(f"{page.relative_to(site)} -> {url}")
                continue
            if fragment and target.suffix == ".html":
                if fragment not in _parse(target).ids:
                    broken.append(f"{page.relative_to(site)} -> {url} (no #{fragment})")
    assert broken == []


def test_offline_copy_has_one_search_script_per_language(offline_build: Build) -> None:
    site = offline_build.site
    for lang, folder in (("zh", site / "search"), ("en", site / "en" / "search")):
        js = (folder / "search_index.js").read_text(encoding="utf-8")
        data = json.loads(js.removeprefix("var __index = "))
        assert data["docs"], lang
        has_han_titles = any(HAN.search(d["title"]) for d in data["docs"] if "#" not in d["location"])
        assert has_han_titles == (lang == "zh")
    home = (site / "index.html").read_text(encoding="utf-8")
    assert 'href="en/index.html"' in home and "unpkg" not in home
    assert "assets/iframe-worker/shim.js" in home
