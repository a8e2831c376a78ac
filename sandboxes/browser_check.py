"""Headless Chromium (Debian's, driven by Playwright; no browser download) against a generated page. The page is
loaded from a file, and every network request it makes is blocked."""
from __future__ import annotations

import tempfile
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def check_page(html: str, click: str | None, read: str, expect_text: str, timeout: float) -> tuple[bool, str]:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="slime-page-") as tmp, sync_playwright() as p:
        page_file = Path(tmp) / "index.html"
        page_file.write_text(html)
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(timeout * 1000)
            page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file://")
                       else route.abort())
            page.goto(page_file.as_uri())
            if click:
                page.click(click)
            text = (page.text_content(read) or "").strip()
        finally:
            browser.close()
    return text == expect_text.strip(), f"read {read!r}: {text[:200]!r}"
