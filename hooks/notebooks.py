"""Notebook pages (mkdocs-jupyter) under mkdocs-static-i18n.

1. i18n re-creates every File as a plain mkdocs File, whose ``is_documentation_page()`` is False
   for ``.py`` sources, so notebooks would silently be copied as raw text: restore their
   page status (upstream ultrabug/mkdocs-static-i18n#198).
2. mkdocs-jupyter evicts cache entries unused by "the" build, but i18n runs one build per
   language, so the languages evicted each other's cache: keep every entry used this run.
   The cache key ignores imported ``snippets`` code, so the cache folder is keyed by its hash.
4. nbconvert adds loaders for mermaid (from a CDN) and a MathJax config: both are removed.
3. nbconvert slugs headings to ASCII, giving Chinese headings ``id=""``: re-slug them like
   Markdown pages (pymdownx.slugs) and fix the page TOC to match.
"""

from __future__ import annotations

import hashlib
import html
import logging
import posixpath
import re
import shutil
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File
from pymdownx.slugs import slugify

NOTEBOOK_DIR_DEPTH = 1  # notebook pages live at docs/<chapter>/<slug>.py
_slug = slugify(case="lower")
log = logging.getLogger("mkdocs.hooks.notebooks")
_used_cache_paths: set = set()
_original_is_doc = File.is_documentation_page


def _is_notebook_src(src_uri: str) -> bool:
    return src_uri.endswith(".py") and src_uri.count("/") == NOTEBOOK_DIR_DEPTH


def _is_documentation_page(self: File) -> bool:
    return _original_is_doc(self) or _is_notebook_src(self.src_uri)


def _tree_hash(*folders: Path) -> str:
    h = hashlib.sha256()
    for folder in folders:
        for path in sorted(folder.rglob("*.py")):
            h.update(path.as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


@event_priority(100)
def on_config(config):
    File.is_documentation_page = _is_documentation_page
    jupyter = config.plugins.get("mkdocs-jupyter")
    if jupyter is not None:
        root = Path(config.config_file_path).parent
        base = root / ".cache" / "mkdocs-jupyter"
        key = _tree_hash(root / "snippets")
        jupyter.config["cache_dir"] = str(base / key)
        if base.is_dir():  # drop caches made against other versions of snippets/
            for stale in base.iterdir():
                if stale.name != key:
                    shutil.rmtree(stale, ignore_errors=True)
    return config


@event_priority(-50)
def on_pre_build(config):
    jupyter = config.plugins.get("mkdocs-jupyter")
    if jupyter is not None:  # one shared set for every language build of this run
        _used_cache_paths.update(Path(jupyter.config["cache_dir"]).glob("*.json"))
        jupyter._used_cache_paths = _used_cache_paths


_HEADING = re.compile(r"<h([1-6])([^>]*)>(.*?)</h\1>", re.S)


def on_page_content(html_text: str, page, config, files):
    if not _is_notebook_src(page.file.src_uri):
        return html_text
    seen: dict[str, int] = {}
    ids: list[str] = []

    def fix(m: re.Match) -> str:
        level, attrs, inner = m.groups()
        inner = re.sub(r'<a class="anchor-link".*?</a>', "", inner, flags=re.S)
        text = html.unescape(re.sub(r"<[^>]+>", "", inner)).strip()
        slug = _slug(text, "-") or "section"
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        slug = slug if n == 0 else f"{slug}_{n}"
        ids.append(slug)
        attrs = re.sub(r'\s*id="[^"]*"', "", attrs)
        link = f'<a class="headerlink" href="#{slug}" title="Permanent link">&para;</a>'
        return f'<h{level}{attrs} id="{slug}">{inner}{link}</h{level}>'

    html_text = _HEADING.sub(fix, html_text)
    flat = list(_walk(page.toc))
    for item, new_id in zip(flat, ids):
        item.id = new_id
    return _LINK.sub(lambda m: _resolve_link(m, page, files), html_text)


_LINK = re.compile(r'href="([^":#?]+\.(?:md|py))(#[^"]*)?"')


def _resolve_link(m: re.Match, page, files) -> str:
    """Resolve a Markdown-style link to another source file, as MkDocs does for Markdown pages
    (nbconvert leaves ``href="other.md"`` untouched)."""
    target_src = posixpath.normpath(posixpath.join(posixpath.dirname(page.file.src_uri), m.group(1)))
    target = files.get_file_from_path(target_src)
    if target is None:
        log.warning(f"Notebook '{page.file.src_uri}' links to '{m.group(1)}', which is not found")
        return m.group(0)
    return f'href="{target.url_relative_to(page.file)}{m.group(2) or ""}"'


_CDN_SCRIPTS = re.compile(
    r'<script type="module">(?:(?!</script>).)*?mermaid(?:(?!</script>).)*</script>'
    r'|<script type="text/x-mathjax-config">.*?</script>',
    re.S,
)


def on_post_page(output: str, page, config):
    """Drop nbconvert's CDN loaders (mermaid from cdnjs, a MathJax config): the site renders math
    with its own KaTeX and has no mermaid output, and must not reference another host."""
    if _is_notebook_src(page.file.src_uri):
        output = _CDN_SCRIPTS.sub("", output)
    return output


def _walk(items):
    for item in items:
        yield item
        yield from _walk(item.children)
