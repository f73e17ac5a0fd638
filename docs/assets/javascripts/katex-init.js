// Render math with the vendored KaTeX, and keep the language switcher pointing at this page's
// translation. Runs on every page load, including Material's instant navigation.
(function () {
  "use strict";

  function renderMath(root) {
    // Markdown pages: pymdownx.arithmatex (generic) wraps math in .arithmatex with \( \) / \[ \].
    root.querySelectorAll(".arithmatex").forEach(function (el) {
      if (el.dataset.katex) return;
      var tex = el.textContent.trim();
      var display = tex.startsWith("\\[");
      tex = tex.replace(/^\\[\[(]/, "").replace(/\\[\])]$/, "");
      katex.render(tex, el, { displayMode: display, throwOnError: false });
      el.dataset.katex = "1";
    });
    // Notebook pages: nbconvert leaves $…$ and $$…$$ in the rendered Markdown cells.
    root.querySelectorAll(".jupyter-wrapper .jp-RenderedMarkdown").forEach(function (el) {
      renderMathInElement(el, {
        delimiters: [
          { left: "$$", right: "$$", display: true },
          { left: "$", right: "$", display: false },
          { left: "\\(", right: "\\)", display: false },
          { left: "\\[", right: "\\]", display: true },
        ],
        throwOnError: false,
      });
    });
  }

  // Instant navigation swaps the page body and <head>, but not the header's language menu:
  // copy each language's link from the new page's <link rel="alternate" hreflang>.
  function syncLanguageLinks() {
    document.querySelectorAll("a.md-select__link[hreflang]").forEach(function (a) {
      var alt = document.head.querySelector(
        'link[rel="alternate"][hreflang="' + a.getAttribute("hreflang") + '"]'
      );
      if (alt) a.href = alt.href;
    });
  }

  function onPage() {
    renderMath(document.body);
    syncLanguageLinks();
  }

  // Render now (idempotent), and again whenever Material's instant navigation swaps the page.
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", onPage);
  } else {
    onPage();
  }
  if (typeof document$ !== "undefined") document$.subscribe(onPage);
})();
