"""A real browser for what only a browser does with the gateway's answers: CORS, canvas
readback, srcset, uploads from a page.

The browser is Debian's chromium (`shutil.which("chromium")`), driven by Playwright and
never one Playwright downloads. It is launched once per session; each test opens its pages in
browser contexts of its own (``open_page``), so no cache, cookie or device setting crosses
tests. Pages come from a second origin (``page_origin``): a static server on another port of
127.0.0.1, where a test publishes the HTML it needs.

Playwright's async API runs on the session's event loop (pytest-asyncio's, as
`asyncio_default_fixture_loop_scope` sets): browser tests are ``async def``. The sync API would
not do: between its calls it leaves its own loop marked as running in the test's thread, after
which every later ``asyncio.run`` of the session (create_database, db_fetch) and every async
test refuses to start.

Registered as a plugin by tests/conftest.py, so any test module can ask for these fixtures.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from tests.conftest import WEBSITE_DOMAIN

HTML = "text/html; charset=utf-8"
# What a missing browser says: skipped on a developer's machine, an error in CI.
NO_CHROMIUM = "Debian's chromium is not installed (apt-get install chromium, as .ci/run does)"

OpenPage = Callable[..., Awaitable[Page]]


class PageServer:
    """Static pages on 127.0.0.1 at a port of its own: an origin other than the gateway's."""

    def __init__(self) -> None:
        self.pages: dict[str, tuple[str, bytes]] = {}
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def publish(self, path: str, text: str, content_type: str = HTML) -> str:
        """Serve ``text`` at ``path`` (from "/") and give its URL."""
        assert path.startswith("/"), path
        self.pages[path] = (content_type, text.encode())
        return self.origin + path

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        pages = self.pages

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                # A page is the same whatever its query (a form's redirect adds one).
                page = pages.get(self.path.partition("?")[0])
                if page is None:
                    self.send_error(HTTPStatus.NOT_FOUND)
                    return
                content_type, body = page
                self.send_response(HTTPStatus.OK)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # Kept out of pytest's captured output.

        return Handler


def chromium_executable() -> str:
    path = shutil.which("chromium")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(NO_CHROMIUM, pytrace=False)
        pytest.skip(NO_CHROMIUM)
    return path


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    """Headless chromium for the whole session."""
    executable = chromium_executable()
    async with async_playwright() as playwright:
        # Website hosts (<bucket>.<WEBSITE_DOMAIN>) resolve to the gateway, as DNS would.
        launched = await playwright.chromium.launch(
            executable_path=executable,
            args=[f"--host-resolver-rules=MAP *.{WEBSITE_DOMAIN} 127.0.0.1"],
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture(scope="session")
def page_server() -> Iterator[PageServer]:
    server = PageServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def page_origin(page_server: PageServer) -> Iterator[PageServer]:
    """The second origin, with no page but those this test publishes."""
    yield page_server
    page_server.pages.clear()


@pytest.fixture
async def open_page(browser: Browser) -> AsyncIterator[OpenPage]:
    """``await open_page(url, **context_options)``: ``url`` loaded (its load event fired, so
    its images have loaded or failed) in a new context with Playwright's ``new_context``
    options (``device_scale_factor=2``, ...). Every context is closed after the test."""
    contexts: list[BrowserContext] = []

    async def open_(url: str, **context_options: Any) -> Page:
        context = await browser.new_context(**context_options)
        contexts.append(context)
        page = await context.new_page()
        await page.goto(url)
        return page

    yield open_
    for context in contexts:
        await context.close()
