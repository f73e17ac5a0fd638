"""One search index per language.

mkdocs-static-i18n merges every language into ``search/search_index.json``; results would mix
languages and a filter applied afterwards would shrink each language's result list. Instead the
merged index is split at build time: ``search/`` keeps the default language, ``<lang>/search/``
holds the others (locations made relative to ``<lang>/``), and pages of language ``<lang>`` get
their Material ``base`` pointed at ``<lang>/`` so its search worker loads its own index.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

_CONFIG = re.compile(r'(<script id="__config" type="application/json">)(.*?)(</script>)', re.S)


def rebase_page(output: str, lang: str) -> str:
    """Point a non-default-language page's Material ``base`` at its language root."""

    def fix(m: re.Match) -> str:
        cfg = json.loads(m.group(2))
        cfg["base"] = f"{cfg['base'].rstrip('/')}/{lang}/"
        return m.group(1) + json.dumps(cfg, ensure_ascii=False, separators=(",", ":")) + m.group(3)

    return _CONFIG.sub(fix, output, count=1)


def split_index(site_dir: Path, langs: list[str], default: str, offline: bool) -> dict[str, int]:
    """Split the merged index into one per language; return the entry count per language."""
    merged_path = site_dir / "search" / "search_index.json"
    merged = json.loads(merged_path.read_text(encoding="utf-8"))
    others = [lang for lang in langs if lang != default]
    buckets: dict[str, list] = {lang: [] for lang in langs}
    for doc in merged["docs"]:
        lang = next((o for o in others if doc["location"].startswith(f"{o}/")), default)
        if lang != default:
            doc = {**doc, "location": doc["location"][len(lang) + 1 :]}
        buckets[lang].append(doc)
    for lang, docs in buckets.items():
        config = dict(merged["config"])
        config["lang"] = ["en"] if lang == "en" else config["lang"]
        folder = site_dir / "search" if lang == default else site_dir / lang / "search"
        folder.mkdir(parents=True, exist_ok=True)
        data = json.dumps({"config": config, "docs": docs}, ensure_ascii=False, separators=(",", ":"))
        (folder / "search_index.json").write_text(data, encoding="utf-8")
        if offline:  # what Material's offline plugin inlines for file:// viewing
            (folder / "search_index.js").write_text(f"var __index = {data}", encoding="utf-8")
    return {lang: len(docs) for lang, docs in buckets.items()}
