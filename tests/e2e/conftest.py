"""The headless Chromium both console suites drive (one per module, like their servers)."""

from __future__ import annotations

import pytest

from tests.e2e.test_console_flow import ARTIFACTS, CHROMIUM, NO_CHROMIUM


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if CHROMIUM is None:  # only reached in CI, where the browser tests must not be skipped
        pytest.fail(f"{NO_CHROMIUM}; CI is set, so the browser tests fail instead of skipping")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        yield b
        b.close()
