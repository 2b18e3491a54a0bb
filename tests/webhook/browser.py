"""Headless Chromium for the report tests: Debian's /usr/bin/chromium driven by Playwright.

`Browser.open(url)` loads a page with JavaScript off (the reports must not
need it), records every request the page makes and refuses any that would
leave 127.0.0.1. Screenshots go to ARTIFACTS (.cache/artifacts/reports, or
$SHADOWGATE_ARTIFACTS): the test artefacts of the report pages.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("SHADOWGATE_ARTIFACTS") or REPO_ROOT / ".cache" / "artifacts" / "reports")
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
LOCAL = {"127.0.0.1"}


def chromium_or_skip() -> None:
    """CI has Chromium (make test installs it): there a missing browser fails; elsewhere it skips."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: `make system-deps` installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} is not installed (make system-deps installs it)")
    pytest.importorskip("playwright.sync_api")


class Browser:
    """One Chromium for a test module."""

    def __init__(self) -> None:
        from playwright.sync_api import sync_playwright

        self._pw = sync_playwright().start()
        self.browser = self._pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        self.requests: list[str] = []
        self.refused: list[str] = []
        ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def page(self, javascript: bool = False, headers: dict | None = None):
        ctx = self.browser.new_context(java_script_enabled=javascript, viewport={"width": 1400, "height": 900},
                                       extra_http_headers=headers or {})

        def route(r) -> None:
            url = r.request.url
            self.requests.append(url)
            if url.startswith(("data:", "about:", "blob:")) or urlsplit(url).hostname in LOCAL:
                r.continue_()
            else:
                self.refused.append(url)
                r.abort()

        ctx.route("**/*", route)
        page = ctx.new_page()
        page.on("request", lambda req: self.requests.append(req.url))
        return page

    def shot(self, page, name: str) -> Path:
        path = ARTIFACTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    def close(self) -> None:
        self.browser.close()
        self._pw.stop()

    def left_localhost(self) -> list[str]:
        """Requests to anywhere but 127.0.0.1 (made, or refused by the route)."""
        out = [u for u in self.requests if not u.startswith(("data:", "about:", "blob:"))
               and urlsplit(u).hostname not in LOCAL]
        return sorted(set(out) | set(self.refused))


class AppServer:
    """A Flask app served over HTTP on 127.0.0.1 (an ephemeral port) in a thread."""

    def __init__(self, app) -> None:
        from werkzeug.serving import make_server

        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(5)
