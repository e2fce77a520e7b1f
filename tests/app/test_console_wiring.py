"""The admin console plugged into the serving app: KeyGate on the routes, pages on /admin or --admin-port."""

from __future__ import annotations

from tests.app.app_harness import assert_openai_error, running_app


def test_console_mounted_with_key_gate(tiny_llama, tmp_path) -> None:
    with running_app(tiny_llama, disable_admin=False, data_dir=str(tmp_path)) as h:
        assert type(h.app.state.ctx.gate).__name__ == "KeyGate"
        assert h.http.get("/admin/", follow_redirects=False).status_code in (200, 303, 307)
        # No keys issued and no --api-key: requests are admitted anonymously.
        r = h.http.post("/v1/completions", json={"model": tiny_llama, "prompt": "x", "max_tokens": 2})
        assert r.status_code == 200


def test_console_gate_enforces_static_key(tiny_llama, tmp_path) -> None:
    with running_app(tiny_llama, disable_admin=False, data_dir=str(tmp_path), api_key="k1") as h:
        body = {"model": tiny_llama, "prompt": "x", "max_tokens": 2}
        assert_openai_error(h.http.post("/v1/completions", json=body), 401)
        ok = h.http.post("/v1/completions", json=body, headers={"Authorization": "Bearer k1"})
        assert ok.status_code == 200


def test_console_on_its_own_port(tiny_llama, tmp_path) -> None:
    with running_app(tiny_llama, disable_admin=False, data_dir=str(tmp_path), admin_port=30999) as h:
        admin = h.app.state.admin
        assert admin is not None and admin.app is not None
        assert_openai_error(h.http.get("/admin/"), 404)  # not on the API port
        admin.ctx.close()
