"""Browser test of the admin console against the REAL server: `python -m app.cli serve` with a real engine.

One module-scoped server (`--device cpu`, a tmp `--data-dir`, a tmp `--models-dir` holding two tiny random
models: tiny-llama, served at start, and tiny-qwen3) and one browser page, driven like an operator's first
session: bootstrap login and forced password change, the live dashboard, an API key used with the official
`openai` SDK, the usage page, revoking the key, switching the deployment to the other model through the
engine supervisor, and the audit log. Unlike tests/e2e/test_console_flow.py (fake supervisor and engine),
every request here goes through the KeyGate into the real engine. The tests run in file order and share
state; screenshots land in tests/artifacts/real-console-NN-<name>.png (git-ignored).
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.app.server_proc import ServerProc
from tests.e2e.test_console_flow import (
    ARTIFACTS,
    CHROMIUM,
    IN_CI,
    NO_CHROMIUM,
    finish_forced_password_change,
    open_page,
    wait_js,
)

NEW_PASSWORD = "real-server-operator-pw"
KEY_NAME = "e2e-real-app"
DEPLOY_KEY_NAME = "e2e-real-deploy"

pytestmark = pytest.mark.skipif(CHROMIUM is None and not IN_CI, reason=NO_CHROMIUM)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_model_factory) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("real_console")
    models_dir, data_dir = root / "models", root / "data"
    # Copies of the session's cached tiny models, under the names the deployment page lists.
    shutil.copytree(tiny_model_factory("llama"), models_dir / "tiny-llama")
    shutil.copytree(tiny_model_factory("qwen3"), models_dir / "tiny-qwen3")
    proc = ServerProc(str(models_dir / "tiny-llama"), root / "server.log",
                      "--data-dir", str(data_dir), "--models-dir", str(models_dir))
    with pytest.MonkeyPatch.context() as mp:
        # The bootstrap password must come from <data-dir>/admin_password; the DB from the data dir.
        mp.delenv("TESSERA_ADMIN_PASSWORD", raising=False)
        mp.delenv("DATABASE_URL", raising=False)
        mp.delenv("MODEL_PATH", raising=False)
        proc.start(timeout=120)
    try:
        yield {"url": proc.base_url, "data_dir": data_dir, "models_dir": models_dir, "proc": proc,
               "secrets": {}}
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def page(server: dict, browser):
    with open_page(browser, server["url"]) as pg:
        yield pg


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"real-console-{name}.png"), full_page=True)


def served_models(server: dict, key: str | None = None) -> list[str]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    r = httpx.get(f"{server['url']}/v1/models", headers=headers, timeout=10)
    assert r.status_code == 200, r.text
    return [m["id"] for m in r.json()["data"]]


def sdk(server: dict, key: str | None):
    """The official SDK client; key None sends no Authorization header at all (the SDK insists on a key,
    so an httpx request hook drops the header)."""
    import openai

    hooks = {} if key else {"request": [lambda request: request.headers.pop("Authorization", None)]}
    return openai.OpenAI(base_url=f"{server['url']}/v1", api_key=key or "unused", max_retries=0, timeout=30,
                         http_client=httpx.Client(event_hooks=hooks))


def chat(client, model: str, text: str):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}],
                                          max_tokens=8)


def create_key(page, name: str, rpm: str | None = None) -> str:
    """Creates a key through the form on /admin/keys and returns the one-time secret shown on the page."""
    page.goto("/admin/keys")
    page.fill("#k-name", name)
    if rpm is not None:
        page.fill("#k-rpm", rpm)
    page.click("form[hx-post$='/keys'] button[type=submit]")
    page.wait_for_selector(f"#key-created:has-text('{name}') #new-key-secret")
    page.wait_for_selector(f"#key-table td:has-text('{name}')")  # the table refreshes on keys-changed
    secret = page.inner_text("#new-key-secret").strip()
    assert secret.startswith("tsk-"), secret
    return secret


def test_01_first_login_forces_password_change(server: dict, page) -> None:
    page.goto("/admin/")
    page.wait_for_url("**/admin/login")
    shot(page, "01-login")
    bootstrap = (server["data_dir"] / "admin_password").read_text().strip()
    assert bootstrap
    assert page.input_value("#username") == "admin"
    page.fill("#password", bootstrap)
    page.click("button[type=submit]")
    finish_forced_password_change(page, server["data_dir"], bootstrap, NEW_PASSWORD, shot)


def test_02_dashboard_charts_render_and_update(server: dict, page) -> None:
    model = served_models(server)[0]  # no keys yet and no --api-key: anonymous access
    assert model.endswith("tiny-llama")
    page.goto("/admin/")
    wait_js(page, "!!(window.tesseraCharts && window.tesseraCharts.tps.data.labels.length >= 2)")
    assert page.inner_text("#engine-state") == "ready"
    # The CPU box: a clear "no GPU" state and the GPU charts hidden; the engine charts are drawn.
    page.wait_for_selector("#no-gpu", state="visible")
    assert "No GPU" in page.inner_text("#no-gpu")
    assert not page.is_visible("#c-gpu-util")
    for chart in ("cache", "reqs", "tps", "ttft"):
        box = page.locator(f"canvas[data-chart='{chart}']").bounding_box()
        assert box and box["width"] > 50 and box["height"] > 50, (chart, box)
    start = page.evaluate("window.tesseraCharts.tps.data.labels.length")
    kv_before = page.inner_text("#t-kv-tokens")

    # A few real generations while the dashboard polls (every 1.5 s): the charts gain points and the
    # tokens/s series gets a non-zero sample after the requests started; the KV token count moves.
    errors: list[BaseException] = []

    def traffic() -> None:
        try:
            with httpx.Client(base_url=server["url"], timeout=30) as http:
                for i in range(4):
                    r = http.post("/v1/chat/completions", json={
                        "model": model, "max_tokens": 16,
                        "messages": [{"role": "user", "content": f"dashboard request {i}: the quick brown fox"}]})
                    r.raise_for_status()
        except BaseException as exc:  # reported in the test thread
            errors.append(exc)

    sender = threading.Thread(target=traffic)
    sender.start()
    try:
        wait_js(page, f"window.tesseraCharts.tps.data.labels.length >= {start + 2} && "
                      f"window.tesseraCharts.tps.data.datasets[0].data.slice({start}).some(v => v > 0)",
                timeout_s=15)
    finally:
        sender.join(60)
    assert not errors, errors
    wait_js(page, f"document.getElementById('t-kv-tokens').textContent !== {kv_before!r}", timeout_s=5)
    assert page.evaluate("window.tesseraCharts.reqs.data.datasets.length") == 2  # running / queued
    assert float(page.inner_text("#t-tps").replace(",", "")) >= 0  # the unit is in the tile's label
    assert "tok/s" in page.inner_text("#t-tps-tile").lower()
    assert page.inner_text("#t-ttft").endswith("ms")
    assert page.inner_text("#model-name").endswith("tiny-llama")
    shot(page, "03-dashboard")


def test_03_key_with_rpm_used_with_openai_sdk(server: dict, page) -> None:
    import openai

    secret = create_key(page, KEY_NAME, rpm="30")
    server["secrets"][KEY_NAME] = secret
    row = page.locator("#key-table tr", has_text=KEY_NAME)
    assert "RPM 30" in row.inner_text() and "active" in row.inner_text()
    shot(page, "04-key-created")
    assert secret not in page.inner_text("#key-table")  # listed by prefix + last four only

    model = served_models(server, secret)[0]
    reply = chat(sdk(server, secret), model, "Hello there")
    assert reply.choices[0].message.content is not None and reply.usage.prompt_tokens > 0
    assert reply.usage.completion_tokens >= 1

    # Keys exist now: enforcement is on.
    with pytest.raises(openai.AuthenticationError) as wrong:
        chat(sdk(server, "tsk-not-a-real-key"), model, "Hello there")
    assert wrong.value.status_code == 401
    with pytest.raises(openai.AuthenticationError) as missing:
        chat(sdk(server, None), model, "Hello there")
    assert missing.value.status_code == 401
    assert httpx.get(f"{server['url']}/v1/models").status_code == 401


def test_04_usage_page_shows_the_call(page) -> None:
    # Usage rows are written in batches: reload until the key's row shows up.
    deadline = time.monotonic() + 15
    while True:
        page.goto("/admin/usage?days=1")
        row = page.locator("#usage-table tbody tr", has_text=KEY_NAME)
        if row.count() == 1 and int(row.locator("td").nth(2).inner_text().replace(",", "")) >= 1:
            break
        if time.monotonic() > deadline:
            raise AssertionError("the key's call never showed on the usage page:\n" + page.inner_text("main"))
        page.wait_for_timeout(500)
    cells = row.locator("td")
    assert cells.nth(1).inner_text() == KEY_NAME
    assert int(cells.nth(4).inner_text().replace(",", "")) > 0  # prompt tokens
    assert int(cells.nth(5).inner_text().replace(",", "")) >= 1  # completion tokens
    assert int(page.inner_text("#u-requests").replace(",", "")) >= 1
    wait_js(page, "!!(window.tesseraUsageChart && window.tesseraUsageChart.data.datasets.length >= 1)")
    assert KEY_NAME in page.evaluate("window.tesseraUsageChart.data.datasets.map(d => d.label).join(' ')")
    box = page.locator("#usage-chart").bounding_box()
    assert box and box["width"] > 50 and box["height"] > 50
    shot(page, "05-usage")


def test_05_revoke_in_ui_then_sdk_gets_401(server: dict, page) -> None:
    import openai

    secret = server["secrets"][KEY_NAME]
    page.goto("/admin/keys")
    row = page.locator("#key-table tr", has_text=KEY_NAME)
    # The last-used time is written with the usage batch that test_04 waited for.
    assert "never" not in row.inner_text() and "RPM 30" in row.inner_text()
    row.locator("button", has_text="Revoke").click()  # hx-confirm: accepted by open_page's dialog handler
    page.wait_for_selector(f"#key-table tr:has-text('{KEY_NAME}') .badge:has-text('revoked')")
    shot(page, "06-key-revoked")
    with pytest.raises(openai.AuthenticationError) as exc:
        chat(sdk(server, secret), "any", "again")
    assert exc.value.status_code == 401


def test_06_deployment_switch_restarts_engine(server: dict, page) -> None:
    # A second key (from the UI) for the API: enforcement stays on once keys exist.
    key = create_key(page, DEPLOY_KEY_NAME)
    server["secrets"][DEPLOY_KEY_NAME] = key
    old = served_models(server, key)
    assert len(old) == 1 and old[0].endswith("tiny-llama")

    page.goto("/admin/deployment")
    assert page.inner_text("#source-badge") == "flags / environment"
    main = page.inner_text("main")
    assert "tiny-llama" in main and "tiny-qwen3" in main and "Qwen3ForCausalLM" in main
    assert "no GPU" in main
    # The Running column shows what the engine resolved for the automatic settings, not "auto".
    max_ctx = json.loads((server["models_dir"] / "tiny-llama" / "config.json").read_text())["max_position_embeddings"]
    running_ctx = page.inner_text("#running-table td[data-field=context_length]")
    assert running_ctx == f"{max_ctx:,} (auto)", running_ctx
    running_max = page.inner_text("#running-table td[data-field=max_running_requests]")
    assert running_max.endswith(" (auto)") and int(running_max.split()[0].replace(",", "")) >= 1, running_max
    shot(page, "07-deployment")
    qwen_path = str(server["models_dir"] / "tiny-qwen3")
    page.select_option("#f-model", value=qwen_path)
    page.click("#apply-button")
    # Live progress while the engine restarts, then the result (the page polls every second). The answer
    # to the POST itself can still show the old engine's state and log (the restart task has not run yet),
    # so wait for this restart's own progress lines.
    page.wait_for_selector("#deploy-log:has-text('applying new settings'), #deploy-result", timeout=30000)
    if page.locator("#deploy-state").count():
        assert page.inner_text("#deploy-state") in ("restarting", "ready"), page.inner_text("#deploy-status")
        shot(page, "08-deployment-progress")
    page.wait_for_selector("#deploy-result", timeout=90000)
    result = page.inner_text("#deploy-result")
    assert "is running" in result and "tiny-qwen3" in result, result
    page.wait_for_selector("#source-badge:has-text('saved in console')")
    log = page.inner_text("#deploy-log")
    assert "tiny-qwen3" in log and "engine ready" in log, log
    shot(page, "09-deployment-applied")

    state = httpx.get(f"{server['url']}/admin/api/deployment", cookies=_cookies(page), timeout=10).json()
    assert state["supervisor"]["state"] == "ready" and state["current"]["model_path"] == qwen_path
    new = served_models(server, key)
    assert len(new) == 1 and new[0].endswith("tiny-qwen3"), new
    reply = chat(sdk(server, key), new[0], "Hello qwen")
    assert reply.model == new[0] and reply.usage.completion_tokens >= 1

    # Reloaded, the models table marks the new model as the running one.
    page.reload()
    assert page.locator("tr", has_text="tiny-qwen3").locator(".badge", has_text="running").count() == 1
    assert page.locator("tr", has_text="tiny-llama").locator(".badge", has_text="running").count() == 0


def _cookies(page) -> dict[str, str]:
    return {c["name"]: c["value"] for c in page.context.cookies()}


def test_07_audit_log_lists_the_session(page) -> None:
    page.goto("/admin/audit")
    text = page.inner_text("#audit-table")
    for action in ("admin_bootstrap", "login", "password_change", "key_create", "key_revoke",
                   "deployment_apply", "deployment_ready"):
        assert action in text, action
    assert f"{KEY_NAME}" in text and "127.0.0.1" in text
    shot(page, "10-audit")
    page.click("button:has-text('Log out')")
    page.wait_for_url("**/admin/login")

