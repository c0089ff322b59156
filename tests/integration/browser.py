"""A real browser for the integration tests: Debian's Chromium driven by Playwright.

Playwright's own browser download cannot work here (no network beyond package registries),
so the tests drive the system's `/usr/bin/chromium` (Debian package `chromium`, installed by
scripts/bootstrap.sh), headless, with everything that would reach out to the network off.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",  # the tests run as root in a container
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


@contextmanager
def launch_chromium() -> Iterator[Any]:
    """A Playwright `Browser` on the system Chromium; closed (and its processes gone) after."""
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        raise RuntimeError(f"{CHROMIUM}: not installed; run scripts/bootstrap.sh (Debian chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=list(CHROMIUM_ARGS), headless=True
        )
        try:
            yield browser
        finally:
            browser.close()
