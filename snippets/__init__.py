"""Runnable, tested from-scratch implementations behind every page of the knowledge base.

Each sub-package mirrors a chapter of the site (``snippets/attention`` ↔ ``docs/attention``).
Run ``python -m snippets list`` to see every module, its summary and the page that explains it.
"""
