"""API keys: shown once, stored as HMAC only, listed by prefix + last four, expiry, revoke, rotate with
grace, allow-lists, and the enforcement rules of KeyGate on a generation route."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update

from app.admin.demo import create_demo_app
from app.admin.fakes import login_with_new_password
from app.db.clock import utcnow
from app.db.models import ApiKey

pytestmark = pytest.mark.asyncio


@pytest.fixture
def demo_api_key() -> str:
    return "static-secret-key"


async def chat(c: httpx.AsyncClient, key: str | None, model: str = "tiny-llama", max_tokens: int = 16) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return await c.post("/v1/chat/completions", headers=headers,
                        json={"model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": "hi"}]})


async def test_anonymous_until_first_key(tmp_path: Path) -> None:
    app = create_demo_app(str(tmp_path / "data"), fast_hashing=True)  # no static key
    ctx = app.state.demo.ctx
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await chat(c, None)
        assert r.status_code == 200
        ctx.runtime.usage.flush()
        csrf = await login_with_new_password(c, ctx.data_dir)
        usage = (await c.get("/admin/api/usage")).json()
        assert usage["rows"][0]["key_id"] is None and usage["rows"][0]["requests"] == 1
        r = await c.post("/admin/api/keys", json={"name": "first"}, headers={"X-CSRF-Token": csrf})
        key = r.json()["key"]
        assert (await chat(c, None)).status_code == 401
        # Revoking the only key does not reopen the server.
        await c.delete(f"/admin/api/keys/{r.json()['id']}", headers={"X-CSRF-Token": csrf})
        assert (await chat(c, None)).status_code == 401
        assert (await chat(c, key)).status_code == 401
    ctx.close()


async def test_create_list_and_auth_rules(console, app) -> None:
    c, h = console
    assert (await chat(c, "static-secret-key")).status_code == 200  # --api-key always works
    r = await c.post("/admin/api/keys", headers=h, json={
        "name": "svc", "rpm": 100, "tpm": None, "max_concurrency": 4, "models": ["tiny-llama"], "expires_at": None})
    assert r.status_code == 201
    created = r.json()
    secret = created["key"]
    assert secret.startswith("tsk-") and len(secret) > 40
    assert created["prefix"] == secret[:8] and created["last_four"] == secret[-4:]
    listed = (await c.get("/admin/api/keys")).json()["keys"]
    assert len(listed) == 1 and "key" not in listed[0] and secret not in str(listed)
    assert listed[0]["display"] == f"{secret[:8]}…{secret[-4:]}" and listed[0]["last_used_at"] is None

    r = await chat(c, None)
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
    r = await chat(c, secret[:-1] + ("x" if secret[-1] != "x" else "y"))
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    r = await c.post("/v1/chat/completions", headers={"Authorization": f"Basic {secret}"}, json={"model": "tiny-llama"})
    assert r.status_code == 401
    r = await chat(c, secret, model="other-model")
    assert r.status_code == 403 and r.json()["error"]["code"] == "model_not_allowed"
    r = await chat(c, secret)
    assert r.status_code == 200 and r.headers["x-ratelimit-remaining-requests"] == "99"  # the 403 did not count
    app.state.demo.ctx.runtime.usage.flush()
    listed = (await c.get("/admin/api/keys")).json()["keys"]
    assert listed[0]["last_used_at"] is not None

    r = await c.delete(f"/admin/api/keys/{created['id']}", headers=h)
    assert r.status_code == 200 and r.json()["status"] == "revoked"
    r = await chat(c, secret)
    assert r.status_code == 401 and r.json()["error"]["code"] == "revoked_api_key"
    assert (await c.delete("/admin/api/keys/999", headers=h)).status_code == 404


async def test_validation_of_key_requests(console) -> None:
    c, h = console
    bad = [{"name": ""}, {"name": "x", "rpm": 0}, {"name": "x", "tpm": -5}, {"name": "x", "models": []},
           {"name": "x", "expires_at": "yesterday"}, {"name": "x", "expires_at": "2001-01-01T00:00:00Z"},
           {"name": "x", "rpm": 10**20}, {"name": "x", "max_concurrency": 2**63}]  # past SQLite's 64-bit INTEGER
    for body in bad:
        r = await c.post("/admin/api/keys", headers=h, json=body)
        assert r.status_code in (400, 422), body
    r = await c.post("/admin/api/keys", headers=h, json={"name": "x", "tpm": 10**13})
    assert r.status_code == 400 and r.json()["error"]["message"] == "tpm must be at most 1000000000000 (null: unlimited)"
    # Wrong types and path ids come back in the console's error shape too, with the field named.
    r = await c.post("/admin/api/keys", headers=h, json={"name": "x", "rpm": "lots"})
    err = r.json()["error"]
    assert r.status_code == 400 and (err["type"], err["code"]) == ("admin_error", "invalid_request"), err
    assert list(err["fields"]) == ["rpm"] and err["message"].startswith("rpm: "), err
    r = await c.get("/admin/api/keys/abc")
    assert r.status_code == 400 and r.json()["error"]["type"] == "admin_error", r.text
    assert (await c.get("/admin/api/keys")).json()["keys"] == []


async def test_expiry(console, app) -> None:
    c, h = console
    soon = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    r = await c.post("/admin/api/keys", headers=h, json={"name": "temp", "expires_at": soon})
    key, key_id = r.json()["key"], r.json()["id"]
    assert r.json()["expires_at"].endswith("Z")
    assert (await chat(c, key)).status_code == 200
    rt = app.state.demo.ctx.runtime
    with rt.db.session() as s:  # time passes
        s.execute(update(ApiKey).where(ApiKey.id == key_id).values(expires_at=utcnow() - timedelta(seconds=1)))
    rt.gate.invalidate()
    r = await chat(c, key)
    assert r.status_code == 401 and r.json()["error"]["code"] == "expired_api_key"
    assert (await c.get(f"/admin/api/keys/{key_id}")).json()["status"] == "expired"


async def test_rotate_with_grace(console, app) -> None:
    c, h = console
    created = (await c.post("/admin/api/keys", headers=h, json={"name": "rot", "rpm": 50})).json()
    key_id, secret0 = created["id"], created["key"]
    r = await c.post(f"/admin/api/keys/{key_id}/rotate", headers=h, json={"grace_seconds": 3600})
    assert r.status_code == 200
    secret1 = r.json()["key"]
    assert secret1 != secret0 and r.json()["last_four"] == secret1[-4:] and r.json()["id"] == key_id
    assert r.json()["previous_valid_until"] is not None
    assert (await chat(c, secret0)).status_code == 200  # old secret, within grace
    assert (await chat(c, secret1)).status_code == 200
    rt = app.state.demo.ctx.runtime
    with rt.db.session() as s:  # the grace period runs out
        s.execute(update(ApiKey).where(ApiKey.id == key_id).values(prev_valid_until=utcnow() - timedelta(seconds=1)))
    rt.gate.invalidate()
    assert (await chat(c, secret0)).status_code == 401
    assert (await chat(c, secret1)).status_code == 200
    # Grace 0: the old secret stops at once. Limits and the key id carry over.
    secret2 = (await c.post(f"/admin/api/keys/{key_id}/rotate", headers=h, json={"grace_seconds": 0})).json()["key"]
    assert (await chat(c, secret1)).status_code == 401
    r = await chat(c, secret2)
    assert r.status_code == 200 and r.headers["x-ratelimit-limit-requests"] == "50"
    # Revoking also ends the grace of a rotated-out secret; revoked keys cannot be rotated.
    secret3 = (await c.post(f"/admin/api/keys/{key_id}/rotate", headers=h, json={"grace_seconds": 3600})).json()["key"]
    await c.delete(f"/admin/api/keys/{key_id}", headers=h)
    assert (await chat(c, secret2)).status_code == 401
    assert (await chat(c, secret3)).status_code == 401
    assert (await c.post(f"/admin/api/keys/{key_id}/rotate", headers=h, json={})).status_code == 400
    assert (await c.post(f"/admin/api/keys/{key_id}/rotate", headers=h, json={"grace_seconds": -1})).status_code == 400


async def test_secret_never_in_db_or_logs(console, app, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    c, h = console
    secrets = []
    r = await c.post("/admin/api/keys", headers=h, json={"name": "hidden", "models": ["tiny-llama"], "rpm": 3})
    secrets.append(r.json()["key"])
    for _ in range(4):  # success, then 429s
        await chat(c, secrets[0])
    await chat(c, secrets[0], model="nope")
    r = await c.post(f"/admin/api/keys/{r.json()['id']}/rotate", headers=h, json={"grace_seconds": 60})
    secrets.append(r.json()["key"])
    await chat(c, secrets[1])
    rt = app.state.demo.ctx.runtime
    rt.usage.flush()
    rt.db.engine.dispose()  # close connections so the WAL is as complete as it gets
    blob = b"".join(p.read_bytes() for p in Path(rt.ctx.data_dir).glob("tessera.db*"))
    digest = rt.hasher.digest(secrets[1])
    assert digest.encode() in blob  # sanity: we are looking at the right bytes
    for secret in secrets:
        assert secret.encode() not in blob
        assert secret[4:].encode() not in blob  # not even without the prefix
        assert secret not in caplog.text
    audit = (await c.get("/admin/api/audit")).json()
    for secret in secrets:
        assert secret not in str(audit)


async def test_keys_page_shows_secret_once(console) -> None:
    c, h = console
    hx = {**h, "HX-Request": "true"}
    r = await c.post("/admin/keys", headers=hx, data={"name": "page-key", "rpm": "5", "tpm": "", "max_concurrency": "",
                                                      "models": "tiny-llama, tiny-qwen3", "expires_at": "2099-01-01T10:00"})
    assert r.status_code == 200 and r.headers["hx-trigger"] == "keys-changed"
    secret = r.text.split('id="new-key-secret">')[1].split("<")[0]
    assert secret.startswith("tsk-")
    page = await c.get("/admin/keys")
    assert secret not in page.text and f"{secret[:8]}…{secret[-4:]}" in page.text
    key = (await c.get("/admin/api/keys")).json()["keys"][0]
    assert key["models"] == ["tiny-llama", "tiny-qwen3"] and key["expires_at"] == "2099-01-01T10:00:00Z"
    r = await c.post("/admin/keys", headers=hx, data={"name": "", "rpm": "abc"})
    assert r.headers.get("hx-retarget") == "#flash" and "flash error" in r.text
    r = await c.post(f"/admin/keys/{key['id']}/revoke", headers=hx)
    assert "Revoked" in r.text
    assert (await c.get(f"/admin/api/keys/{key['id']}")).json()["status"] == "revoked"
