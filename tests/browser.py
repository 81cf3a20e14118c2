"""Test helper: Debian's Chromium, headless, driven by Playwright (which cannot download its
own browser offline); the tests that need it skip where it is missing (.ci/run installs it)."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path(shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
HAVE_CHROMIUM = CHROMIUM.is_file()


def skip_without_chromium() -> None:
    """Skip the rest of a test, said in the summary, where Chromium is missing: its HTTP checks
    before this call ran and passed; the page's part did not run."""
    if not HAVE_CHROMIUM:
        pytest.skip(f"Chromium is not installed ({CHROMIUM}): the HTTP checks passed, the page was not tried")


def launch(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)


@contextlib.contextmanager
def chromium_page(url: str) -> Iterator[tuple[Any, list[str]]]:
    """A page opened at ``url`` and the console/page errors it reports (the caller asserts on
    them after its interactions)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    problems: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page()
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto(url)
        try:
            yield page, problems
        finally:
            browser.close()


def upload_picture(page: Any, path: Path | str, drawn: str = "#overlay[data-drawn='true']") -> None:
    """Pick ``path`` in the serve page's image input and wait until ``drawn`` appears (the
    overlay canvas a mask or boxes are drawn on)."""
    page.wait_for_selector("#image-input:not([hidden])")
    page.set_input_files("#file", str(path))
    page.wait_for_selector(drawn)
