"""API-key limits and usage through the real generation routes with a real engine process.

One server (admin on, its own data dir) for the module. The key's live window
(`GET /admin/api/keys` → `window`) and the usage rows in the server's SQLite file are checked
against the token counts the responses report.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.app.server_proc import ServerProc


class Console:
    def __init__(self, base_url: str, data_dir: Path) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=60)
        self.data_dir = data_dir
        initial = (data_dir / "admin_password").read_text().strip()
        r = self.http.post("/admin/api/login", json={"username": "admin", "password": initial})
        r.raise_for_status()
        self.csrf = {"X-CSRF-Token": r.json()["csrf_token"]}
        self.http.post("/admin/api/password", headers=self.csrf,
                       json={"old_password": initial, "new_password": "a-new-admin-password"}).raise_for_status()

    def new_key(self, name: str, **limits: Any) -> tuple[int, str]:
        r = self.http.post("/admin/api/keys", headers=self.csrf, json={"name": name, **limits})
        assert r.status_code == 201, r.text
        return r.json()["id"], r.json()["key"]

    def window(self, key_id: int, settled: bool = True) -> dict[str, int]:
        """The key's 60 s window; with `settled`, waits until nothing of the key is in flight."""
        deadline = time.monotonic() + 20
        while True:
            keys = self.http.get("/admin/api/keys").json()["keys"]
            win = next(k["window"] for k in keys if k["id"] == key_id)
            if not settled or win["in_flight"] == 0 or time.monotonic() > deadline:
                return win
            time.sleep(0.05)

    def rows(self, key_id: int, count: int) -> list[tuple[int, int, int]]:
        """(status, prompt_tokens, completion_tokens) of the key's usage rows, oldest first."""
        deadline = time.monotonic() + 20
        while True:
            with sqlite3.connect(self.data_dir / "tessera.db") as db:
                rows = db.execute("SELECT status_code, prompt_tokens, completion_tokens FROM usage_records "
                                  "WHERE key_id = ? ORDER BY id", (key_id,)).fetchall()
            if len(rows) >= count or time.monotonic() > deadline:
                return rows
            time.sleep(0.1)


@pytest.fixture(scope="module")
def admin_server(tiny_llama, tmp_path_factory) -> ServerProc:
    tmp = tmp_path_factory.mktemp("limits")
    proc = ServerProc(tiny_llama, tmp / "server.log", "--data-dir", str(tmp / "data")).start()
    proc.data_dir = tmp / "data"
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def console(admin_server) -> Console:
    return Console(admin_server.base_url, admin_server.data_dir)


def _auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def test_tpm_settles_to_the_real_count_on_every_route(admin_server, console, model_name) -> None:
    key_id, secret = console.new_key("tpm", tpm=100_000)
    sdk = openai.OpenAI(base_url=admin_server.base_url + "/v1", api_key=secret, max_retries=0, timeout=60)
    chat = sdk.chat.completions.create(model=model_name, messages=[{"role": "user", "content": "hi"}], max_tokens=7,
                                       extra_body={"ignore_eos": True})
    comp = sdk.completions.create(model=model_name, prompt=["one two", "three"], max_tokens=5, n=2,
                                  extra_body={"ignore_eos": True})
    native = httpx.post(admin_server.base_url + "/generate", headers=_auth(secret), timeout=60, json={
        "text": "Tuples are", "sampling_params": {"max_new_tokens": 9, "ignore_eos": True}}).json()
    assert chat.usage.completion_tokens == 7 and comp.usage.completion_tokens == 20
    assert native["meta_info"]["completion_tokens"] == 9
    spent = [chat.usage.total_tokens, comp.usage.total_tokens,
             native["meta_info"]["prompt_tokens"] + native["meta_info"]["completion_tokens"]]
    win = console.window(key_id)
    assert win == {"requests": 3, "tokens": sum(spent), "in_flight": 0}
    rows = console.rows(key_id, 3)
    assert [r[0] for r in rows] == [200, 200, 200]
    assert [r[1] + r[2] for r in rows] == spent


def test_chat_without_max_tokens_fits_a_small_tpm_and_settles(admin_server, console, model_name) -> None:
    # Context 512: reserving the whole context (the old behaviour) would refuse this key at once.
    key_id, secret = console.new_key("chatty", tpm=400)
    sdk = openai.OpenAI(base_url=admin_server.base_url + "/v1", api_key=secret, max_retries=0, timeout=120)
    out = sdk.chat.completions.create(model=model_name, messages=[{"role": "user", "content": "hi"}])
    assert console.window(key_id)["tokens"] == out.usage.total_tokens


def test_checks_before_limits_and_too_large_is_not_retried(admin_server, console, model_name) -> None:
    key_id, secret = console.new_key("rpm", rpm=2, tpm=300)
    base = admin_server.base_url
    over_context = {"model": model_name, "prompt": "x", "max_tokens": 10_000}
    # A request that can never succeed is a 400, and costs no RPM.
    for _ in range(3):
        r = httpx.post(base + "/v1/completions", headers=_auth(secret), json=over_context, timeout=60)
        assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    # Larger than the whole TPM limit: refused at once, with an error the SDK does not retry.
    sdk = openai.OpenAI(base_url=base + "/v1", api_key=secret, max_retries=3, timeout=60)
    started = time.monotonic()
    with pytest.raises(openai.BadRequestError) as err:
        sdk.completions.create(model=model_name, prompt="x", max_tokens=350)
    assert time.monotonic() - started < 5  # no retry back-off
    assert err.value.code == "request_too_large" and "retry-after" not in err.value.response.headers
    assert console.window(key_id)["requests"] == 0
    for _ in range(2):
        assert httpx.post(base + "/generate", headers=_auth(secret), timeout=60, json={
            "text": "a", "sampling_params": {"max_new_tokens": 2}}).status_code == 200
    r = httpx.post(base + "/generate", headers=_auth(secret), json={"text": "a"}, timeout=60)
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    # Still a 400 while rate limited: validity is checked first.
    r = httpx.post(base + "/v1/completions", headers=_auth(secret), json=over_context, timeout=60)
    assert r.status_code == 400
    statuses = [row[0] for row in console.rows(key_id, 8)]
    assert sorted(statuses) == [200, 200, 400, 400, 400, 400, 400, 429], statuses


def test_concurrency_limit_on_a_stream(admin_server, console, model_name) -> None:
    key_id, secret = console.new_key("one-at-a-time", max_concurrency=1)
    base = admin_server.base_url
    body = {"model": model_name, "messages": [{"role": "user", "content": "go"}], "max_tokens": 60,
            "ignore_eos": True, "stream": True}
    with httpx.Client(base_url=base, timeout=60, headers=_auth(secret)) as client:
        with client.stream("POST", "/v1/chat/completions", json=body) as resp:
            lines = resp.iter_lines()
            assert next(lines).startswith("data: ")
            second = client.post("/v1/chat/completions", json={**body, "stream": False})
            assert second.status_code == 429 and second.json()["error"]["type"] == "concurrency"
            rest = list(lines)
        assert rest[-1] == "data: [DONE]" or rest[-2] == "data: [DONE]"
        assert client.post("/v1/chat/completions", json={**body, "stream": False}).status_code == 200


def test_client_leaving_mid_stream_is_settled_to_the_tokens_produced(admin_server, console, model_name) -> None:
    key_id, secret = console.new_key("leaver", tpm=100_000)
    body = {"model": model_name, "prompt": "A list is a mutable sequence", "max_tokens": 400, "ignore_eos": True,
            "stream": True}
    received = 0
    with httpx.Client(base_url=admin_server.base_url, timeout=60, headers=_auth(secret)) as client:
        prompt_tokens = len(client.post("/v1/tokenize", json={"prompt": body["prompt"]}).json()["tokens"])
        with client.stream("POST", "/v1/completions", json=body) as resp:
            lines = resp.iter_lines()
            while received < 20:
                received += next(lines).startswith("data: {")
            resp.close()
    status, prompt, completion = console.rows(key_id, 1)[0]
    assert status == 499 and prompt == prompt_tokens
    assert received <= completion < 400  # what the engine produced before the abort, not 0
    assert console.window(key_id)["tokens"] == prompt + completion


def test_non_streaming_disconnect_recorded_without_traceback(admin_server, console, model_name) -> None:
    key_id, secret = console.new_key("impatient", tpm=100_000)
    # Four sequences of 450 tokens: long enough that an idle machine cannot finish them in the timeout.
    body = {"text": "Dictionaries map keys to values",
            "sampling_params": {"max_new_tokens": 450, "ignore_eos": True, "n": 4}}
    try:
        r = httpx.post(admin_server.base_url + "/generate", headers=_auth(secret), json=body, timeout=0.4)
        pytest.fail(f"the request ended within the client's timeout: {r.status_code} {r.text[:300]}")
    except httpx.ReadTimeout:
        pass  # the client hung up mid-generation, as intended
    status, prompt, completion = console.rows(key_id, 1)[0]
    assert status == 499 and prompt > 0
    assert 0 < completion < 4 * 450
    assert console.window(key_id)["tokens"] == prompt + completion
    log = Path(admin_server.log_path).read_text()
    assert "Traceback" not in log and " 500 " not in log
