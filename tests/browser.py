"""Debian's chromium, headless, driven by Playwright: the browser the UI tests use.

Playwright cannot download its own browsers here, so it launches the system's chromium (package
`chromium`, /usr/bin/chromium). Without it the browser tests fail (they are not skipped) and say how
to install it. The flags keep chromium off the network it would otherwise call at start (updates,
sync, background requests): the machine's network is closed.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM_ENV = "TRACELAKE_CHROMIUM"
FLAGS = [
    "--headless=new",
    "--no-sandbox",  # root in CI and containers
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
    "--disable-default-apps",
]


def chromium_path() -> str:
    """The chromium to drive: $TRACELAKE_CHROMIUM, else chromium on PATH; fails the test when missing."""
    path = os.environ.get(CHROMIUM_ENV) or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path or not Path(path).exists():
        pytest.fail(
            "the UI's browser tests need Debian's chromium and did not find it: install it with "
            "`apt-get install -y chromium` (or point $TRACELAKE_CHROMIUM at a Chromium binary)",
            pytrace=False,
        )
    return path


@contextmanager
def chromium() -> Iterator[object]:
    """A headless Chromium browser (playwright.sync_api.Browser) with a fresh profile."""
    from playwright.sync_api import sync_playwright

    exe = chromium_path()
    with sync_playwright() as pw:  # Playwright gives every launch a fresh temporary profile
        browser = pw.chromium.launch(executable_path=exe, args=FLAGS)
        try:
            yield browser
        finally:
            browser.close()
