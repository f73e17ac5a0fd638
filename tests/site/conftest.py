"""Build the site once per test session (strict, zero warnings) and serve it on 127.0.0.1.

Set DLKB_SITE=path (and DLKB_SITE_OFFLINE=path) to test an existing build instead.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import tempfile
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
    failed: bool = False


class _Builds:
    """Both builds, one after the other (they share the figure cache), in a background thread that
    starts as soon as the site tests are collected: the builds use the second core while the
    snippet and page tests run, and the site tests wait only for what is not finished yet."""

    def __init__(self, wanted: list[bool]) -> None:
        self._wanted = wanted  # offline=False / True: the builds the environment does not provide
        self._root = Path(tempfile.mkdtemp(prefix="dlkb-site-"))
        self._done: dict[bool, Build] = {}
        self._proc: subprocess.Popen | None = None
        self._stopping = False
        self._ready = {False: threading.Event(), True: threading.Event()}
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for offline in self._wanted:
            if self._stopping:
                return
            self._done[offline] = self._build(self._root / ("site-offline" if offline else "site"), offline)
            self._ready[offline].set()

    def _build(self, dest: Path, offline: bool) -> Build:
        env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "OFFLINE": "true" if offline else "false"}
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(dest)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            log, _ = self._proc.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            log, _ = self._proc.communicate()
        if self._proc.returncode != 0:
            return Build(dest, f"mkdocs build --strict failed (offline={offline}):\n{log[-6000:]}", failed=True)
        return Build(dest, log)

    def get(self, offline: bool) -> Build:
        self._ready[offline].wait()
        build = self._done[offline]
        if build.failed:
            pytest.fail(build.log, pytrace=False)
        return build

    def close(self) -> None:
        """Stop a build still running (an interrupted session) and delete both builds."""
        self._stopping = True
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
        self._thread.join()
        shutil.rmtree(self._root, ignore_errors=True)


_builds: list[_Builds] = []
_GIVEN = {False: "DLKB_SITE", True: "DLKB_SITE_OFFLINE"}  # a path in these skips that build


def _wanted() -> list[bool]:
    return [offline for offline, var in _GIVEN.items() if not os.environ.get(var)]


@pytest.hookimpl(trylast=True)  # after -k/-m deselection: build only for site tests that will run
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Start building as soon as site tests are collected, and run them last, so that the builds
    overlap as much of the rest of the suite as possible."""
    here = Path(__file__).parent
    site = [item for item in items if here in Path(item.fspath).parents]
    if site and _wanted() and not config.option.collectonly:
        _builds.append(_Builds(_wanted()))
    items[:] = [item for item in items if here not in Path(item.fspath).parents] + site


def pytest_unconfigure(config: pytest.Config) -> None:
    while _builds:
        _builds.pop().close()


def _get(offline: bool) -> Build:
    if os.environ.get(_GIVEN[offline]):
        return Build(Path(os.environ[_GIVEN[offline]]), "")
    return _builds[0].get(offline)  # started when the site tests were collected


@pytest.fixture(scope="session")
def site_build() -> Build:
    """The site built with directory URLs, as served over HTTP."""
    return _get(offline=False)


@pytest.fixture(scope="session")
def offline_build() -> Build:
    """The copy of the site built for file:// (``OFFLINE=true``)."""
    return _get(offline=True)


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
