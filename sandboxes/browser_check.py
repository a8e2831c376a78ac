"""Headless Chromium (Debian's, driven by Playwright; never a downloaded browser) against a generated page.

The page is set as the content of a blank tab, so it has no file:// origin to read local files from, and every
request it makes (scripts, images, fetches) is aborted. Async, so cancelling the judge closes the browser."""

from __future__ import annotations

from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


async def check_page(html: str, click: str | None, read: str, expect_text: str, timeout: float) -> tuple[bool, str]:
    from playwright.async_api import async_playwright

    if not Path(CHROMIUM).exists():
        raise FileNotFoundError(f"{CHROMIUM} is missing (Debian package chromium)")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS, timeout=timeout * 1000)
        try:
            page = await browser.new_page()
            page.set_default_timeout(timeout * 1000)
            await page.route("**/*", lambda route: route.abort())
            await page.set_content(html)
            if click:
                await page.click(click)
            text = ((await page.text_content(read)) or "").strip()
        finally:
            await browser.close()
    return text == expect_text.strip(), f"read {read!r}: {text[:200]!r}"
