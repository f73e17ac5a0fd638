"""The site as people use it: Debian's Chromium driven by Playwright against the built site.

Chromium comes from Debian (`make test` installs it when missing); Playwright never downloads a
browser. Every request that would leave 127.0.0.1 (or file://) is blocked and recorded.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.site.conftest import Build

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser() -> Iterator:
    if not Path(CHROMIUM).exists():
        message = "Debian's chromium is not installed (make test installs it: apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


class Page:
    """A browser tab that blocks and records requests to any other host."""

    def __init__(self, browser) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN")
        self.page = self.context.new_page()
        self.external: list[str] = []
        self.page.route("**/*", self._route)

    def _route(self, route) -> None:
        url = route.request.url
        if url.startswith(("http://127.0.0.1", "file://", "data:", "blob:", "about:")):
            route.continue_()
        else:
            self.external.append(url)
            route.abort()

    def search(self, query: str) -> list[str]:
        """Type a query in Material's search box; return the hrefs of the results."""
        page = self.page
        page.locator("input.md-search__input").click()
        box = page.locator("input.md-search__input")
        box.fill(query)
        box.press("End")  # Material searches on keyboard events; fill() alone does not trigger it
        page.wait_for_function(
            # the result count, once the index is loaded: "找到 3 个…" / "没有找到…" / "3 matching documents"
            "() => { const m = document.querySelector('.md-search-result__meta');"
            " return m && /\\d|没有|No matching/.test(m.textContent); }",
            timeout=30000,
        )
        page.wait_for_timeout(150)
        hrefs = page.eval_on_selector_all(
            ".md-search-result__item > a.md-search-result__link", "els => els.map(e => e.href)"
        )
        page.keyboard.press("Escape")
        return hrefs


@pytest.fixture
def tab(browser) -> Iterator[Page]:
    t = Page(browser)
    yield t
    assert t.external == [], f"requests left 127.0.0.1: {t.external}"
    t.context.close()


ZH_QUERIES = {
    "注意力": "attention/scaled-dot-product-attention/",
    "归一化": "attention/masked-softmax/",  # inside a sentence: "…重新归一化"
    "因果掩码": "attention/masked-softmax/",
    "掩码softmax": "attention/masked-softmax/",  # glued Latin/Han
    "dropout是什么": "attention/scaled-dot-product-attention/",
    "scaled_dot_product_attention": "attention/scaled-dot-product-attention/",
    "key_padding_mask": "attention/masked-softmax/",
    "饱和": "attention/why-scale-sqrt-dk/",
}
EN_QUERIES = {
    "attention": "en/attention/scaled-dot-product-attention/",
    "masked": "en/attention/masked-softmax/",
    "saturates": "en/attention/why-scale-sqrt-dk/",
    "padding": "en/attention/masked-softmax/",
    "is_causal": "en/attention/",
}


def test_chinese_search_finds_chinese_pages_only(tab: Page, server: str) -> None:
    tab.page.goto(server)
    for query, expected in ZH_QUERIES.items():
        hrefs = tab.search(query)
        assert any(h.startswith(server + expected) for h in hrefs), f"{query!r} -> {hrefs}"
        assert not any(h.startswith(server + "en/") for h in hrefs), f"{query!r} returned English pages"


def test_english_search_finds_english_pages_only(tab: Page, server: str) -> None:
    tab.page.goto(server + "en/")
    for query, expected in EN_QUERIES.items():
        hrefs = tab.search(query)
        assert any(h.startswith(server + expected) for h in hrefs), f"{query!r} -> {hrefs}"
        assert all(h.startswith(server + "en/") for h in hrefs), f"{query!r} returned Chinese pages"


def _switch_language(tab: Page, name: str) -> None:
    page = tab.page
    page.locator(".md-header__option .md-select").first.hover()
    page.locator(f"a.md-select__link:text-is('{name}')").click()
    page.wait_for_load_state()


def test_language_switch_lands_on_the_same_topic(tab: Page, server: str) -> None:
    page = tab.page
    page.goto(server + "attention/scaled-dot-product-attention/")
    _switch_language(tab, "English")
    page.wait_for_url(server + "en/attention/scaled-dot-product-attention/")
    assert page.locator("html").get_attribute("lang") == "en"
    _switch_language(tab, "中文")
    page.wait_for_url(server + "attention/scaled-dot-product-attention/")
    # after instant navigation the header is not re-rendered: the links must still follow the page
    page.goto(server)
    page.locator("article a[href$='attention/masked-softmax/']").first.click()  # instant navigation
    page.wait_for_url(server + "attention/masked-softmax/")
    _switch_language(tab, "English")
    page.wait_for_url(server + "en/attention/masked-softmax/")
    nav = page.locator(".md-tabs").inner_text()
    assert "Attention and LLMs" in nav and "注意力与大模型" not in nav  # translated navigation


def _math_ok(page) -> None:
    page.wait_for_function("() => document.querySelectorAll('.katex').length > 0", timeout=10000)
    article = page.locator("article").inner_text()
    assert "$$" not in article and "\\(" not in article and "\\[" not in article
    assert page.locator(".katex-error").count() == 0
    assert page.evaluate("() => document.fonts.check('16px KaTeX_Main')")


def test_math_code_copy_and_figures(tab: Page, server: str) -> None:
    page = tab.page
    for url in ("attention/masked-softmax/", "en/attention/scaled-dot-product-attention/"):
        page.goto(server + url)
        _math_ok(page)
        assert page.locator(".katex-display").count() >= 2
        copy = "button.md-code__button[data-md-type='copy'], button.md-clipboard"  # Material 9.8 / older
        assert page.locator(copy).count() >= 3, "code copy buttons"
        img = page.locator("article img[src*='assets/figures/']").first
        assert img.evaluate("el => el.complete && el.naturalWidth > 100")


def test_notebook_page_renders_plot_and_math(tab: Page, server: str) -> None:
    page = tab.page
    for url in ("attention/why-scale-sqrt-dk/", "en/attention/why-scale-sqrt-dk/"):
        page.goto(server + url)
        _math_ok(page)
        assert page.locator(".jupyter-wrapper img").first.evaluate("el => el.naturalWidth > 300")


def test_offline_copy_works_from_the_file_system(tab: Page, offline_build: Build) -> None:
    page = tab.page
    home = (offline_build.site / "index.html").resolve().as_uri()
    page.goto(home)
    root = home.removesuffix("index.html")
    hrefs = tab.search("注意力")
    assert any(h.startswith(root + "attention/scaled-dot-product-attention.html") for h in hrefs), hrefs
    page.goto(root + "attention/masked-softmax.html")
    _math_ok(page)
    _switch_language(tab, "English")
    page.wait_for_url(root + "en/attention/masked-softmax.html")
    hrefs = tab.search("attention")
    assert hrefs and all(h.startswith(root + "en/") for h in hrefs), hrefs
