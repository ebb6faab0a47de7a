"""Real-browser tests: Playwright (sync API) driving Debian's chromium, headless.

The browser is /usr/bin/chromium from Debian's `chromium` package (`make browser`, which
`make test` runs), or TAO_CHROMIUM. Never Playwright's own browser download (`playwright
install`): CI's network reaches only the PyPI, Debian and npm registries.

One browser for the whole session, its profile in a fresh directory, from a fixture:

    import pytest

    from tests.browser import open_browser

    @pytest.fixture(scope="session")
    def browser(tmp_path_factory):
        with open_browser(tmp_path_factory.mktemp("chromium-profile")) as context:
            yield context

    @pytest.fixture
    def page(browser):
        page = browser.new_page()
        yield page
        page.close()

The sync API refuses to start inside a running asyncio event loop: use it from plain
(non-async) tests and fixtures.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import BrowserContext, sync_playwright

CHROMIUM = Path(os.environ.get("TAO_CHROMIUM", "/usr/bin/chromium"))

# Playwright adds most of these itself; they are written out so the browser stays quiet on
# a closed network whatever Playwright's defaults become.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",                       # CI runs as root, where the sandbox refuses to start
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]

VIEWPORT = {"width": 1280, "height": 900}


@contextmanager
def open_browser(user_data_dir: Path) -> Iterator[BrowserContext]:
    """A headless chromium with its profile in `user_data_dir`, which must be new or empty
    (a tmp dir) so that no state from another run leaks in. Everything is closed on exit,
    on error too."""
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        raise RuntimeError(f"no chromium at {CHROMIUM}: run `make browser` (Debian's chromium package) "
                           "or set TAO_CHROMIUM")
    user_data_dir = Path(user_data_dir)
    user_data_dir.mkdir(parents=True, exist_ok=True)
    if any(user_data_dir.iterdir()):
        raise ValueError(f"{user_data_dir} is not empty: pass a fresh directory (tmp_path_factory.mktemp)")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            user_data_dir,
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport=VIEWPORT,
        )
        try:
            yield context
        finally:
            context.close()
