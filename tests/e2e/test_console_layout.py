"""Every console page at 1440 px and 390 px: no horizontal page scroll, the nav collapses on a phone,
tables fit (or scroll inside their card), numbers carry thousands separators, the audit log shows full
user agents on hover and no Python `None`. Screenshots of each page and width land in tests/artifacts/
(`layout-<page>-<width>.png`) for a person to look at.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_console_flow import (
    ARTIFACTS,
    CHROMIUM,
    IN_CI,
    NARROW,
    NO_CHROMIUM,
    STATIC_KEY,
    WIDE,
    open_page,
    run_demo,
    wait_js,
)

pytestmark = pytest.mark.skipif(CHROMIUM is None and not IN_CI, reason=NO_CHROMIUM)
PASSWORD = "layout-operator-password"
PAGES = [("dashboard", "/admin/"), ("deployment", "/admin/deployment"), ("keys", "/admin/keys"),
         ("usage", "/admin/usage?days=30"), ("audit", "/admin/audit")]
LONG_NAME = "customer-support-assistant-production-eu-west"


def fits(page, label: str) -> None:
    """The page itself never scrolls sideways (wide content scrolls inside its own card)."""
    width = page.evaluate("[document.scrollingElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"{label}: page is {width[0]} px wide in a {width[1]} px window"


def snap(page, name: str, width: int) -> None:
    page.screenshot(path=str(ARTIFACTS / f"layout-{name}-{width}.png"), full_page=True)


def settle(page, name: str) -> None:
    if name == "dashboard":
        wait_js(page, "!!(window.tesseraCharts && window.tesseraCharts.reqs.data.labels.length >= 2)")
    if name == "usage":
        wait_js(page, "!!window.tesseraUsageChart")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    with run_demo(tmp_path_factory.mktemp("layout") / "data", "--fake-gpus", "2") as srv:
        yield srv


@pytest.fixture(scope="module")
def page(server: dict, browser):
    with open_page(browser, server["url"]) as pg:
        yield pg


def test_login_and_password_pages_fit(server: dict, page) -> None:
    data_dir: Path = server["data_dir"]
    bootstrap = (data_dir / "admin_password").read_text().strip()
    for width in (WIDE, NARROW):
        page.set_viewport_size({"width": width, "height": 900})
        page.goto("/admin/login")
        fits(page, f"login at {width}")
        snap(page, "login", width)
    page.fill("#password", bootstrap)
    page.click("button[type=submit]")
    page.wait_for_url("**/admin/password")
    for width in (NARROW, WIDE):
        page.set_viewport_size({"width": width, "height": 900})
        page.reload()
        fits(page, f"password at {width}")
        snap(page, "password", width)
    page.fill("#old_password", bootstrap)
    page.fill("#new_password", PASSWORD)
    page.fill("#confirm_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/admin/")


def _seed(server: dict, page) -> None:
    """Keys with long names and big limits, traffic (also 429s) for usage, history and the audit log."""
    import openai

    csrf = page.evaluate("JSON.parse(document.body.getAttribute('hx-headers'))['X-CSRF-Token']")
    secrets = []
    for name, rpm, tpm in [(LONG_NAME, 2, 1_000_000), ("batch-jobs", None, 250_000), ("intern", 60, None)]:
        r = page.request.post(f"{server['url']}/admin/api/keys", headers={"X-CSRF-Token": csrf}, data={
            "name": name, "rpm": rpm, "tpm": tpm, "max_concurrency": 8, "models": None, "expires_at": None})
        assert r.status == 201, r.text()
        secrets.append(r.json()["key"])
    client = openai.OpenAI(base_url=f"{server['url']}/v1", api_key=secrets[0], max_retries=0)
    for _ in range(2):
        client.chat.completions.create(model="tiny-llama", messages=[{"role": "user", "content": "hello " * 30}])
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="tiny-llama", messages=[{"role": "user", "content": "again"}])
    r = httpx.get(f"{server['url']}/v1/models", headers={"Authorization": f"Bearer {STATIC_KEY}"})
    assert r.status_code == 200


def test_every_page_fits_both_widths(server: dict, page) -> None:
    _seed(server, page)
    for name, path in PAGES:
        for width in (WIDE, NARROW):
            page.set_viewport_size({"width": width, "height": 900})
            page.goto(path)
            settle(page, name)
            fits(page, f"{name} at {width}")
            snap(page, name, width)


def test_nav_collapses_on_a_phone(page) -> None:
    page.set_viewport_size({"width": NARROW, "height": 900})
    page.goto("/admin/keys")
    assert page.is_visible("#nav-toggle") and not page.is_visible("#nav")
    page.click("#nav-toggle")
    assert page.is_visible("#nav") and page.get_attribute("#nav-toggle", "aria-expanded") == "true"
    snap(page, "nav-open", NARROW)
    page.click("#nav a:has-text('Usage')")
    page.wait_for_url("**/admin/usage")
    page.set_viewport_size({"width": WIDE, "height": 900})
    page.goto("/admin/keys")
    assert page.is_visible("#nav") and not page.is_visible("#nav-toggle")


def test_keys_table_fits_with_buttons_inside_the_card(page) -> None:
    page.set_viewport_size({"width": WIDE, "height": 900})
    page.goto("/admin/keys")
    card = page.locator("#keys-card").bounding_box()
    scroller = page.evaluate("(() => { const t = document.getElementById('key-table'); "
                             "return [t.scrollWidth, t.clientWidth]; })()")
    assert scroller[0] <= scroller[1], f"keys table scrolls at {WIDE} px: {scroller}"
    buttons = page.locator("#keys-table button")
    assert buttons.count() == 6  # rotate + revoke for three keys
    for i in range(buttons.count()):
        box = buttons.nth(i).bounding_box()
        assert card["x"] <= box["x"] and box["x"] + box["width"] <= card["x"] + card["width"], (i, box, card)
    text = page.inner_text("#keys-table")
    assert "TPM 1,000,000" in text and "TPM 250,000" in text


def _usage_chart(page) -> dict:
    wait_js(page, "!!window.tesseraUsageChart")
    return page.evaluate("(() => { const c = window.tesseraUsageChart; const x = c.scales.x; return {"
                         "ticks: x.ticks.map(t => x.getLabelForValue(t.value)), title: c.options.scales.x.title.text,"
                         "labels: c.data.labels}; })()")


def test_usage_chart_labels_every_day(page) -> None:
    page.set_viewport_size({"width": WIDE, "height": 900})
    for days in (7, 30):
        page.goto(f"/admin/usage?days={days}")
        chart = _usage_chart(page)
        assert len(chart["labels"]) == days and chart["title"] == "day (UTC)"
        assert chart["ticks"] == chart["labels"], chart  # at 1440 px every day has its label, today's too
        assert chart["labels"][0].split()[0].isalpha() and chart["labels"][-1].split()[-1].isdigit()
    page.set_viewport_size({"width": NARROW, "height": 900})
    page.goto("/admin/usage?days=30")
    chart = _usage_chart(page)
    assert 5 <= len(chart["ticks"]) < 30  # a phone shows every few days rather than overlapping labels


def test_audit_log_full_user_agent_and_no_none(page) -> None:
    page.set_viewport_size({"width": WIDE, "height": 900})
    page.goto("/admin/audit")
    user_agent = page.evaluate("navigator.userAgent")
    titles = page.eval_on_selector_all("#audit-table .ua", "els => els.map(e => e.title)")
    assert titles and user_agent in titles  # the whole string on hover, however long
    text = page.inner_text("#audit-table")
    assert "None" not in text and "key_create" in text
    assert "expires_at=—" in text and "max_concurrency=8" in text
