"""The SGLang request contract, the served name, `/`, `/abort_request` and the access log, on the fake engine.

SGLang's own schema is the reference: every key of its `GenerateReqInput` (read from SGLang's source, whose
module needs torchvision to import) and of its OpenAI request models, at its default value, is accepted.
"""

from __future__ import annotations

import ast
import logging
import pathlib
from typing import Any

import pytest

from tests.app.app_harness import assert_openai_error, running_app

sglang = pytest.importorskip("sglang")


def _generate_req_defaults() -> dict[str, Any]:
    """GenerateReqInput's fields with literal defaults, from the source (`field(default=...)` included)."""
    src = pathlib.Path(sglang.__file__).parent / "srt" / "managers" / "io_struct.py"
    tree = ast.parse(src.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "GenerateReqInput")
    out: dict[str, Any] = {}
    for node in cls.body:
        if not isinstance(node, ast.AnnAssign) or not isinstance(node.target, ast.Name):
            continue
        value = node.value
        if isinstance(value, ast.Call) and getattr(value.func, "id", "") == "field":
            value = next((k.value for k in value.keywords if k.arg == "default"), None)
        if value is None:
            continue
        try:
            out[node.target.id] = ast.literal_eval(value)
        except ValueError:
            continue
    return out


def test_generate_accepts_every_sglang_key_at_its_default(tiny_llama) -> None:
    defaults = _generate_req_defaults()
    assert len(defaults) > 60 and "return_entropy" in defaults and "kv_hints" in defaults
    body = {**defaults, "text": "hello", "sampling_params": {"max_new_tokens": 3}, "model": None}
    with running_app(tiny_llama) as h:
        r = h.http.post("/generate", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["meta_info"]["completion_tokens"] == 3
        # A key that asks for something not built is a 400 naming it, never silently dropped.
        for key, value in (("return_entropy", True), ("lora_path", "adapter"), ("return_hidden_states", True),
                           ("cache_salt", "tenant-a"), ("routed_experts_start_len", 3)):
            err = assert_openai_error(h.http.post("/generate", json={**body, key: value}), 400)
            assert err["param"] == key and key in err["message"]
        # Bookkeeping keys change nothing, whatever their value.
        assert h.http.post("/generate", json={**body, "model": "anything", "log_metrics": False}).status_code == 200


def _openai_defaults(cls_name: str, **required: Any) -> dict[str, Any]:
    from sglang.srt.entrypoints.openai import protocol

    return getattr(protocol, cls_name)(**required).model_dump(mode="json")


def test_openai_routes_accept_sglang_request_models_at_defaults(tiny_llama) -> None:
    chat = _openai_defaults("ChatCompletionRequest", model="tiny", messages=[{"role": "user", "content": "hi"}])
    assert {"separate_reasoning", "stream_reasoning", "return_hidden_states", "tool_choice"} <= set(chat)
    chat["max_completion_tokens"] = 3
    completion = _openai_defaults("CompletionRequest", model="tiny", prompt="hi")
    completion["max_tokens"] = 3
    with running_app(tiny_llama) as h:
        name = h.app.state.ctx.model_name
        for path, body in (("/v1/chat/completions", chat), ("/v1/completions", completion)):
            body = {**body, "model": name}
            r = h.http.post(path, json=body)
            assert r.status_code == 200, (path, r.text)
            assert r.json()["usage"]["completion_tokens"] == 3
            for key, value in (("return_hidden_states", True), ("lora_path", "a"), ("return_token_ids", True)):
                err = assert_openai_error(h.http.post(path, json={**body, key: value}), 400)
                assert err["param"] == key
        # Tools are built: SGLang's tool fields are served, and a tool_choice naming no listed tool is a 400.
        tools = [{"type": "function", "function": {"name": "f"}}]
        r = h.http.post("/v1/chat/completions", json={**chat, "model": name, "tools": tools})
        assert r.status_code == 200, r.text
        err = assert_openai_error(h.http.post("/v1/chat/completions", json={
            **chat, "model": name, "tools": tools,
            "tool_choice": {"type": "function", "function": {"name": "g"}}}), 400)
        assert err["param"] == "tool_choice"
        # chat_template_kwargs reach the template; one that clashes with the renderer's own argument is a 400.
        err = assert_openai_error(h.http.post("/v1/chat/completions", json={
            **chat, "model": name, "chat_template_kwargs": {"tokenize": True}}), 400)
        assert err["param"] == "chat_template_kwargs"


def test_served_name_is_the_directory_name_and_the_path_still_works(tiny_llama) -> None:
    with running_app(tiny_llama) as h:
        short = pathlib.Path(tiny_llama).name
        assert [m["id"] for m in h.http.get("/v1/models").json()["data"]] == [short]
        for model in (short, tiny_llama, tiny_llama + "/"):
            r = h.http.post("/v1/completions", json={"model": model, "prompt": "x", "max_tokens": 1})
            assert r.status_code == 200 and r.json()["model"] == short
        assert f'model_name="{short}"' in h.http.get("/metrics").text
        assert tiny_llama not in h.http.get("/metrics").text
        assert h.http.get("/get_server_info").json()["served_model_name"] == short
    with running_app(tiny_llama, served_model_name="custom") as h:
        assert h.http.get("/v1/models").json()["data"][0]["id"] == "custom"


def test_landing_page_and_quiet_console_polling(tiny_llama, caplog) -> None:
    with running_app(tiny_llama) as h:
        r = h.http.get("/")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        for link in ('href="/docs"', 'href="/v1/models"', pathlib.Path(tiny_llama).name):
            assert link in r.text
        assert "--disable-admin" in r.text  # the harness runs without the console
        with caplog.at_level(logging.INFO, logger="tessera.access"):
            h.http.get("/admin/api/metrics")  # a console poll (404 here: no console) ...
            h.http.get("/v1/models")
        lines = [rec.getMessage() for rec in caplog.records if rec.name == "tessera.access"]
        assert any("/v1/models 200" in line for line in lines)
        assert any("/admin/api/metrics 404" in line for line in lines)  # ... errors stay visible


def test_polling_reads_log_at_debug(caplog) -> None:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from app.request_log import RequestLogMiddleware

    async def ok(_: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    inner = Starlette(routes=[Route(p, ok, methods=["GET", "POST"]) for p in
                              ("/admin/api/metrics/history", "/admin/deployment/status", "/admin/keys")])
    app = RequestLogMiddleware(inner, record=lambda *_: None, log_bodies=lambda: False)
    with caplog.at_level(logging.DEBUG, logger="tessera.access"), TestClient(app) as c:
        c.get("/admin/api/metrics/history?after=1")  # the dashboard's poll
        c.get("/admin/deployment/status?polling=1")  # the deployment page's poll while applying
        c.post("/admin/api/metrics/history")
        c.get("/admin/keys")  # a page view
    levels = [(rec.getMessage().split()[1], rec.getMessage().split()[2], rec.levelno)
              for rec in caplog.records if rec.name == "tessera.access"]
    assert levels == [("GET", "/admin/api/metrics/history", logging.DEBUG),
                      ("GET", "/admin/deployment/status", logging.DEBUG),
                      ("POST", "/admin/api/metrics/history", logging.INFO), ("GET", "/admin/keys", logging.INFO)]


def test_dashboard_ttft_median_covers_a_time_window() -> None:
    from app.metrics import TTFT_WINDOW_S, Metrics

    m = Metrics(lambda: "m", lambda: {}, enable_gpu=False)
    now = 10_000.0
    # An old burst of slow first tokens, then three recent fast ones.
    m._recent_ttft.extend([(now - TTFT_WINDOW_S - 5, 9.0)] * 50 + [(now - 10, 0.1), (now - 5, 0.3), (now, 0.2)])
    assert m.recent_ttfts(now) == [0.1, 0.3, 0.2]
    assert len(m._recent_ttft) == 3  # the old ones are dropped, so memory stays bounded by the window
