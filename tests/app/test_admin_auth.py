"""Admin console auth: bootstrap password, forced change, sessions, CSRF, throttling, logout, reset."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import httpx
import pytest
from fastapi.routing import APIRoute

from app.admin import _routers
from app.admin.cli import reset_password
from app.admin.demo import create_demo_app
from app.admin.fakes import login_with_new_password
from app.admin.sessions import SESSION_COOKIE

pytestmark = pytest.mark.asyncio
NEW_PASSWORD = "a-new-admin-password"


def client(app, base_url: str = "http://console") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)


def data_dir(app) -> str:
    return app.state.demo.ctx.data_dir


async def test_bootstrap_password_file_and_log_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="app.admin.bootstrap")
    d = tmp_path / "data"
    app1 = create_demo_app(str(d), fast_hashing=True)
    password = (d / "admin_password").read_text().strip()
    assert len(password) >= 16
    assert os.stat(d / "admin_password").st_mode & 0o777 == 0o600
    assert caplog.text.count(password) == 1
    app1.state.demo.ctx.close()
    caplog.clear()
    app2 = create_demo_app(str(d), fast_hashing=True)  # second start: same account, nothing logged, file untouched
    assert password not in caplog.text
    assert (d / "admin_password").read_text().strip() == password
    app2.state.demo.ctx.close()


async def test_env_password_and_forced_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TESSERA_ADMIN_PASSWORD", "from-the-environment")
    app = create_demo_app(str(tmp_path / "data"), fast_hashing=True)
    assert not (tmp_path / "data" / "admin_password").exists()
    async with client(app) as c:
        r = await c.post("/admin/api/login", json={"username": "admin", "password": "from-the-environment"})
        assert r.status_code == 200 and r.json()["must_change_password"] is True
        csrf = r.json()["csrf_token"]
        # Until the password is changed everything but the password change answers 403.
        r = await c.get("/admin/api/keys")
        assert r.status_code == 403 and r.json()["error"]["code"] == "password_change_required"
        r = await c.get("/admin/keys", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/admin/password"
        r = await c.post("/admin/api/password", json={"old_password": "wrong", "new_password": NEW_PASSWORD},
                         headers={"X-CSRF-Token": csrf})
        assert r.status_code == 400
        r = await c.post("/admin/api/password", json={"old_password": "from-the-environment", "new_password": "short"},
                         headers={"X-CSRF-Token": csrf})
        assert r.status_code == 400 and "10" in r.json()["error"]["message"]
        r = await c.post("/admin/api/password",
                         json={"old_password": "from-the-environment", "new_password": NEW_PASSWORD},
                         headers={"X-CSRF-Token": csrf})
        assert r.status_code == 200
        assert (await c.get("/admin/api/keys")).status_code == 200
    app.state.demo.ctx.close()


async def test_login_rules_and_cookie_flags(app) -> None:
    async with client(app) as c:
        await login_with_new_password(c, data_dir(app), NEW_PASSWORD)
        assert not Path(data_dir(app), "admin_password").exists()  # stale after the change
        r = await c.post("/admin/api/logout", headers={"X-CSRF-Token": (await c.get("/admin/api/session")).json()["csrf_token"]})
        assert r.status_code == 200
        assert (await c.get("/admin/api/keys")).status_code == 401
        r = await c.post("/admin/api/login", json={"username": "admin", "password": "not-it"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_credentials"
        r = await c.post("/admin/api/login", json={"username": "nobody", "password": NEW_PASSWORD})
        assert r.status_code == 401
        r = await c.post("/admin/api/login", json={"username": "admin", "password": NEW_PASSWORD})
        assert r.status_code == 200 and r.json()["must_change_password"] is False
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=lax" in cookie and "path=/admin" in cookie
        assert "secure" not in cookie
        # A form post (what a cross-site page could send) is not a JSON login.
        r = await c.post("/admin/api/login", data={"username": "admin", "password": NEW_PASSWORD})
        assert r.status_code == 400 and r.json()["error"]["type"] == "admin_error", r.text
    async with client(app, "https://console") as c:
        r = await c.post("/admin/api/login", json={"username": "admin", "password": NEW_PASSWORD})
        assert "secure" in r.headers["set-cookie"].lower()


async def test_session_token_is_not_stored_in_db(app) -> None:
    async with client(app) as c:
        await login_with_new_password(c, data_dir(app), NEW_PASSWORD)
        token = c.cookies.get(SESSION_COOKIE)
        assert token
        blob = b"".join(p.read_bytes() for p in Path(data_dir(app)).glob("tessera.db*"))
        assert token.encode() not in blob


async def test_unauthenticated_access(app) -> None:
    async with client(app) as c:
        for path in ("/admin/api/keys", "/admin/api/deployment", "/admin/api/metrics", "/admin/api/usage",
                     "/admin/api/audit", "/admin/api/settings"):
            r = await c.get(path)
            assert r.status_code == 401, path
            assert r.json()["error"]["code"] == "not_authenticated"
        for path in ("/admin/", "/admin/keys", "/admin/deployment", "/admin/usage", "/admin/audit"):
            r = await c.get(path, follow_redirects=False)
            assert r.status_code == 303 and r.headers["location"] == "/admin/login", path
        r = await c.get("/admin/login")
        assert r.status_code == 200 and "Log in" in r.text
        assert "script-src 'self'" in r.headers["content-security-policy"]


def _mutating_routes() -> list[tuple[str, str]]:
    out = []
    for router in _routers():
        for route in router.routes:
            path = "/admin" + route.path
            if isinstance(route, APIRoute) and path not in ("/admin/api/login", "/admin/login"):
                out.extend((m, path.replace("{key_id}", "1")) for m in route.methods - {"GET", "HEAD"})
    return out


async def test_every_mutating_route_needs_csrf(app) -> None:
    routes = _mutating_routes()
    assert len(routes) >= 12
    async with client(app) as c:
        csrf = await login_with_new_password(c, data_dir(app), NEW_PASSWORD)
        r = await c.post("/admin/api/keys", json={"name": "k"}, headers={"X-CSRF-Token": csrf})
        assert r.status_code == 201
        for method, path in routes:
            for headers in ({}, {"X-CSRF-Token": "forged"}):
                r = await c.request(method, path, json={}, headers=headers)
                assert r.status_code == 403, (method, path, r.text)
                assert r.json()["error"]["code"] == "csrf_failed"
        # Nothing changed: the key is still active.
        keys = (await c.get("/admin/api/keys")).json()["keys"]
        assert keys[0]["status"] == "active"


async def test_login_form_needs_its_double_submit_token(app) -> None:
    password = Path(data_dir(app), "admin_password").read_text().strip()
    async with client(app) as c:
        r = await c.post("/admin/login", data={"username": "admin", "password": password, "login_csrf": "x"})
        assert r.status_code == 403 and "expired" in r.text
        page = await c.get("/admin/login")
        token = page.text.split('name="login_csrf" value="')[1].split('"')[0]
        r = await c.post("/admin/login", data={"username": "admin", "password": password, "login_csrf": token},
                         follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/admin/password"


async def test_failed_login_throttling(app) -> None:
    password = Path(data_dir(app), "admin_password").read_text().strip()
    async with client(app) as c:
        for _ in range(5):
            r = await c.post("/admin/api/login", json={"username": "admin", "password": "guess"})
            assert r.status_code == 401
        # Locked now, even with the right password.
        r = await c.post("/admin/api/login", json={"username": "admin", "password": password})
        assert r.status_code == 429
        assert r.json()["error"]["code"] == "login_throttled"
        assert 1 <= int(r.headers["retry-after"]) <= 30
        audit = app.state.tessera_admin_runtime.db
        from app.admin.audit import query

        assert query(audit, action="login_failed")["total"] == 5
    # The lock is per username too: another client address is refused as well.
    rt = app.state.tessera_admin_runtime
    assert rt.throttle.retry_after("10.9.9.9", "admin") > 0
    assert rt.throttle.retry_after("10.9.9.9", "someone-else") == 0


async def test_reset_password_cli(app) -> None:
    d = data_dir(app)
    async with client(app) as c:
        await login_with_new_password(c, d, NEW_PASSWORD)
        new = reset_password(d, None)
        assert Path(d, "admin_password").read_text().strip() == new
        # Every session ended; the old password no longer works; the new one must be changed again.
        assert (await c.get("/admin/api/keys")).status_code == 401
        r = await c.post("/admin/api/login", json={"username": "admin", "password": NEW_PASSWORD})
        assert r.status_code == 401
        r = await c.post("/admin/api/login", json={"username": "admin", "password": new})
        assert r.status_code == 200 and r.json()["must_change_password"] is True


async def test_page_flow_password_change_and_logout(app) -> None:
    password = Path(data_dir(app), "admin_password").read_text().strip()
    async with client(app) as c:
        page = await c.get("/admin/login")
        token = page.text.split('name="login_csrf" value="')[1].split('"')[0]
        await c.post("/admin/login", data={"username": "admin", "password": password, "login_csrf": token})
        page = await c.get("/admin/password")
        csrf = page.text.split('"X-CSRF-Token": "')[1].split('"')[0]
        hx = {"HX-Request": "true", "X-CSRF-Token": csrf}
        r = await c.post("/admin/password", headers=hx, data={"old_password": password, "new_password": NEW_PASSWORD,
                                                             "confirm_password": "different-one"})
        assert "differ" in r.text and r.headers["hx-retarget"] == "#flash"
        r = await c.post("/admin/password", headers=hx, data={"old_password": password, "new_password": NEW_PASSWORD,
                                                             "confirm_password": NEW_PASSWORD})
        assert r.headers["hx-redirect"] == "/admin/"
        assert (await c.get("/admin/")).status_code == 200
        r = await c.post("/admin/logout", headers=hx)
        assert r.headers["hx-redirect"] == "/admin/login"
        assert (await c.get("/admin/", follow_redirects=False)).status_code == 303
