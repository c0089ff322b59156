"""A real browser for the integration tests: Debian's Chromium driven by Playwright for Python.

Playwright's own browser download cannot work here (no internet at run time), so the tests
drive the system's `/usr/bin/chromium` (Debian package `chromium`, installed by
scripts/bootstrap.sh). `launch_chromium` starts it headless with everything that would reach
the network turned off, and closes it (and Playwright's driver) on the way out.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser

CHROMIUM = Path("/usr/bin/chromium")
# Headless, no sandbox (tests may run as root in a container), and nothing that phones home.
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


@contextmanager
def launch_chromium() -> Iterator[Browser]:
    """Debian's Chromium under Playwright; skips the test if Chromium is not installed."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not installed; run scripts/bootstrap.sh (Debian package chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=list(CHROMIUM_ARGS)
        )
        try:
            yield browser
        finally:
            browser.close()
