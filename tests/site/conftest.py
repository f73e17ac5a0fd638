"""Build the site once per test session (strict, zero warnings) and serve it on 127.0.0.1.

Set DLKB_SITE=path (and DLKB_SITE_OFFLINE=path) to test an existing build instead.
"""

from __future__ import annotations

import functools
import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Build:
    """A finished ``mkdocs build``: where it went and what it printed."""

    site: Path
    log: str


def _build(dest: Path, offline: bool) -> Build:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "OFFLINE": "true" if offline else "false"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(dest)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        pytest.fail(f"mkdocs build --strict failed (offline={offline}):\n{log[-6000:]}", pytrace=False)
    return Build(dest, log)


@pytest.fixture(scope="session")
def site_build(tmp_path_factory: pytest.TempPathFactory) -> Build:
    """The site built with directory URLs, as served over HTTP."""
    if os.environ.get("DLKB_SITE"):
        return Build(Path(os.environ["DLKB_SITE"]), "")
    return _build(tmp_path_factory.mktemp("build") / "site", offline=False)


@pytest.fixture(scope="session")
def offline_build(tmp_path_factory: pytest.TempPathFactory) -> Build:
    """The copy of the site built for file:// (``OFFLINE=true``)."""
    if os.environ.get("DLKB_SITE_OFFLINE"):
        return Build(Path(os.environ["DLKB_SITE_OFFLINE"]), "")
    return _build(tmp_path_factory.mktemp("build") / "site-offline", offline=True)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep test output clean
        pass


@pytest.fixture(scope="session")
def server(site_build: Build) -> Iterator[str]:
    """Base URL of the built site served by a static server on 127.0.0.1."""
    handler = functools.partial(_QuietHandler, directory=str(site_build.site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (``--dist loadgroup``), keep every site test on one worker, so the site is
    built once while the other worker runs the rest of the suite."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.xdist_group("site"))
