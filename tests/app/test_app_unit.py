"""Routes, validation and supervision in-process, with the fake engine (no model runs)."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time

import pytest

from app.admin.contracts import MetricsSourceProtocol, SupervisorProtocol
from engine.args import ArgsError
from tests.app.app_harness import assert_openai_error, running_app
from tests.app.fake_engine import FakeBehaviour

CHAT = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}


def test_503_while_starting_then_ready(tiny_llama) -> None:
    gate = threading.Event()
    with running_app(tiny_llama, FakeBehaviour(start_gate=gate), wait=False) as h:
        r = h.http.post("/v1/chat/completions", json={"model": tiny_llama, **CHAT})
        err = assert_openai_error(r, 503)
        assert "starting" in err["message"] and r.headers["retry-after"]
        # SGLang's probe contract: /health is 503 until a generation would be served; /live is the process.
        assert_openai_error(h.http.get("/health"), 503)
        assert_openai_error(h.http.get("/health_generate"), 503)
        assert_openai_error(h.http.get("/ready"), 503)
        assert h.http.get("/live").status_code == 200
        gate.set()
        h.wait_ready()
        assert h.http.get("/health").status_code == 200
        assert h.http.post("/v1/chat/completions", json={"model": tiny_llama, **CHAT}).status_code == 200


def test_static_api_key(tiny_llama) -> None:
    with running_app(tiny_llama, api_key="sekrit") as h:
        body = {"model": tiny_llama, **CHAT}
        assert_openai_error(h.http.post("/v1/chat/completions", json=body), 401)
        r = h.http.post("/v1/chat/completions", json=body, headers={"Authorization": "Bearer nope"})
        assert assert_openai_error(r, 401)["code"] == "invalid_api_key"
        assert_openai_error(h.http.get("/v1/models"), 401)
        assert_openai_error(h.http.post("/generate", json={"text": "x"}), 401)
        ok = {"Authorization": "Bearer sekrit"}
        assert h.http.post("/v1/chat/completions", json=body, headers=ok).status_code == 200
        assert h.http.get("/v1/models", headers=ok).status_code == 200
        for open_path in ("/health", "/ready", "/live", "/metrics"):
            assert h.http.get(open_path).status_code == 200


def test_validation_errors_name_the_parameter(tiny_llama) -> None:
    with running_app(tiny_llama) as h:
        cases = [
            ({"model": tiny_llama, **CHAT, "temperature": 3}, "temperature"),
            ({"model": tiny_llama, **CHAT, "functions": [{}]}, "functions"),
            ({"model": tiny_llama, **CHAT, "foo": 1}, "foo"),
            ({"model": tiny_llama, **CHAT, "min_tokens": 9}, "min_tokens"),
            ({"model": tiny_llama, **CHAT, "top_logprobs": 2}, "top_logprobs"),
            ({"model": tiny_llama, **CHAT, "continue_final_message": True}, "continue_final_message"),
            # the Responses API's tool_choice shape: the field is named, not the union member's model class
            ({"model": tiny_llama, **CHAT, "tools": [{"type": "function", "function": {"name": "f"}}],
              "tool_choice": {"type": "function", "name": "f"}}, "tool_choice.name"),
            ({"model": tiny_llama, "messages": [{"role": "function", "content": "x"}]}, "messages.0.role"),
            ({"model": tiny_llama, "messages": [{"role": "tool", "content": "x"}]}, "messages.0"),
            ({"model": tiny_llama, "messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
             "messages.0.content"),
            ({"model": tiny_llama, **CHAT, "max_tokens": 600}, "max_tokens"),
            ({"model": tiny_llama, **CHAT, "regex": "("}, "regex"),
            ({"model": tiny_llama, **CHAT, "tool_choice": "required"}, "tool_choice"),
            # wrong JSON types are refused, not coerced (OpenAI: "Invalid type for 'max_tokens'")
            ({"model": tiny_llama, **CHAT, "max_tokens": True}, "max_tokens"),
            ({"model": tiny_llama, **CHAT, "stream": "yes"}, "stream"),
            ({"model": tiny_llama, **CHAT, "temperature": "0.5"}, "temperature"),
            ({"model": tiny_llama, **CHAT, "n": 1.0}, "n"),
            ({"model": tiny_llama, "messages": [{"role": "user"}]}, "messages.0"),
            ({"model": tiny_llama, "messages": [{"role": "system", "content": None}, *CHAT["messages"]]},
             "messages.0"),
        ]
        for body, param in cases:
            err = assert_openai_error(h.http.post("/v1/chat/completions", json=body), 400)
            assert err["param"] == param, (body, err)
        err = assert_openai_error(h.http.post("/v1/chat/completions", json={**CHAT, "model": "gpt-4"}), 404)
        assert err["code"] == "model_not_found"
        err = assert_openai_error(h.http.post("/v1/completions", json={"model": tiny_llama, "prompt": "x",
                                                                        "max_tokens": 600}), 400)
        assert err["code"] == "context_length_exceeded" and "600" in err["message"] and "512" in err["message"]
        # A prompt as long as the context is refused before the engine even with max_tokens 0 (the engine keeps a
        # position for the next token): a 400 naming the prompt, on the OpenAI and the native routes alike.
        for path, body in (("/v1/completions", {"model": tiny_llama, "prompt": [5] * 512, "max_tokens": 0}),
                           ("/generate", {"input_ids": [5] * 512, "sampling_params": {"max_new_tokens": 0}})):
            err = assert_openai_error(h.http.post(path, json=body), 400)
            assert err["code"] == "context_length_exceeded" and err["param"] in ("prompt", "input_ids"), err
            assert "the prompt has 512 tokens" in err["message"], err
        err = assert_openai_error(h.http.post("/v1/completions", json={"model": tiny_llama, "prompt": "x",
                                                                        "suffix": "y"}), 400)
        assert err["message"] == "suffix: not supported" and err["param"] == "suffix"
        err = assert_openai_error(h.http.post("/v1/completions", json={"model": tiny_llama, "prompt": "x",
                                                                        "n": 2, "best_of": 3}), 400)
        assert err["message"] == "best_of: not supported (it may only equal n)" and err["param"] == "best_of"
        err = assert_openai_error(h.http.post("/v1/completions", json={"model": tiny_llama, "prompt": []}), 400)
        assert err["message"] == "prompt: must not be empty" and err["param"] == "prompt"
        assert h.http.post("/v1/completions", json={"model": tiny_llama, "prompt": "x", "max_tokens": 1, "n": 2,
                                                    "best_of": 2}).status_code == 200
        # an integer is a number (temperature 0), and only an assistant turn may leave its content out
        assert h.http.post("/v1/chat/completions", json={"model": tiny_llama, **CHAT, "temperature": 1,
                                                         "top_p": 1}).status_code == 200
        history = [*CHAT["messages"], {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                   {"role": "tool", "tool_call_id": "c1", "content": "42"}]
        assert h.http.post("/v1/chat/completions", json={"model": tiny_llama, "messages": history,
                                                         "max_tokens": 2}).status_code == 200
        # OpenAI's nullable parameters: null is the default (one choice, no stream, no logprobs, no echo)
        r = h.http.post("/v1/chat/completions", json={"model": tiny_llama, **CHAT, "n": None, "stream": None,
                                                      "logprobs": None, "ignore_eos": None})
        assert r.status_code == 200 and len(r.json()["choices"]) == 1 and r.json()["choices"][0]["logprobs"] is None
        r = h.http.post("/v1/completions", json={"model": tiny_llama, "prompt": "x", "max_tokens": 1, "echo": None,
                                                 "stream": None})
        assert r.status_code == 200 and r.json()["object"] == "text_completion"
        # null for an unimplemented OpenAI parameter is "not asking for it".
        assert h.http.post("/v1/chat/completions", json={"model": tiny_llama, **CHAT, "tools": None,
                                                         "user": "u1"}).status_code == 200


def test_routing_and_parse_errors_are_openai_shaped(tiny_llama) -> None:
    """404 / 405 and a body Starlette cannot parse: OpenAI's error object with a string `code` (never the status)."""
    with running_app(tiny_llama) as h:
        err = assert_openai_error(h.http.get("/v1/no-such-route"), 404)
        assert (err["type"], err["code"]) == ("not_found_error", "not_found")
        err = assert_openai_error(h.http.delete("/v1/chat/completions"), 405)
        assert err["code"] == "method_not_allowed"
        nested = "[" * 100_000 + "]" * 100_000
        err = assert_openai_error(h.http.post("/v1/completions", content=nested,
                                              headers={"content-type": "application/json"}), 400)
        assert err["message"].startswith("request body is not valid JSON") and err["code"] is None, err


def test_streaming_keeps_multibyte_characters_whole(tiny_llama) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    text = "café 東京 🙂 naïve"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > len(text.split())  # some characters span several byte-level tokens
    with running_app(tiny_llama, FakeBehaviour(script=ids)) as h:
        body = {"model": tiny_llama, "prompt": "x", "max_tokens": len(ids), "stream": True}
        r = h.http.post("/v1/completions", json=body)
        chunks = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
        pieces = [c["choices"][0]["text"] for c in chunks]
        assert all("\ufffd" not in p for p in pieces)
        assert "".join(pieces) == text
        assert [c["choices"][0]["finish_reason"] for c in chunks].count("length") == 1
        native = h.http.post("/generate", json={"text": "x", "stream": True,
                                                "sampling_params": {"max_new_tokens": len(ids)}})
        texts = [json.loads(line[6:])["text"] for line in native.text.splitlines() if line.startswith("data: {")]
        assert all("\ufffd" not in t for t in texts) and texts[-1] == text


def test_stop_string_trimmed_in_stream(tiny_llama) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    ids = tok("The quick brown fox jumps", add_special_tokens=False)["input_ids"]
    with running_app(tiny_llama, FakeBehaviour(script=ids)) as h:
        body = {"model": tiny_llama, "prompt": "x", "max_tokens": len(ids), "stop": ["brown"], "stream": True}
        r = h.http.post("/v1/completions", json=body)
        text = "".join(json.loads(line[6:])["choices"][0]["text"] for line in r.text.splitlines()
                       if line.startswith("data: {"))
        assert text == "The quick "


def test_engine_death_in_flight_is_503_and_recovers(tiny_llama) -> None:
    with running_app(tiny_llama, FakeBehaviour(step_s=0.02)) as h:
        first = h.clients[-1]
        result: dict[str, object] = {}

        def slow() -> None:
            result["r"] = h.http.post("/v1/completions", json={"model": tiny_llama, "prompt": "x", "max_tokens": 200})

        worker = threading.Thread(target=slow)
        worker.start()
        deadline = time.monotonic() + 10
        while not first.num_inflight and time.monotonic() < deadline:
            time.sleep(0.01)
        h.http.portal.call(first.die)  # type: ignore[union-attr]
        worker.join(10)
        err = assert_openai_error(result["r"], 503)
        assert err["code"] == "engine_unavailable"
        h.wait_ready()
        assert len(h.clients) == 2 and h.supervisor.restarts == 1
        assert h.http.post("/v1/completions", json={"model": tiny_llama, "prompt": "x",
                                                    "max_tokens": 2}).status_code == 200


def test_apply_restarts_and_rolls_back(tiny_llama) -> None:
    with running_app(tiny_llama) as h:
        sup = h.supervisor
        assert isinstance(sup, SupervisorProtocol)
        assert isinstance(h.app.state.ctx.metrics, MetricsSourceProtocol)
        h.http.portal.call(sup.apply, {"served_model_name": "renamed"})  # type: ignore[union-attr]
        assert sup.status()["state"] == "ready" and sup.status()["model_name"] == "renamed"
        assert any("engine ready" in line for line in sup.status()["progress"])
        assert [m["id"] for m in h.http.get("/v1/models").json()["data"]] == ["renamed"]
        with pytest.raises(ArgsError):
            h.http.portal.call(sup.apply, {"tp_size": 0})  # type: ignore[union-attr]
        assert sup.state == "ready" and len(h.clients) == 2
        # Both the new start and the restore fail: the error says so and the state is "failed".
        h.behaviour.fail_start = True
        with pytest.raises(RuntimeError, match="restoring the previous settings failed"):
            h.http.portal.call(sup.apply, {"served_model_name": "broken"})  # type: ignore[union-attr]
        assert sup.status()["state"] == "failed" and sup.status()["error"]
        assert_openai_error(h.http.post("/generate", json={"text": "x"}), 503)


def test_apply_failure_restores_previous_settings(tiny_llama) -> None:
    calls = {"n": 0}
    with running_app(tiny_llama) as h:
        sup = h.supervisor
        real_factory = sup._factory

        def flaky(args):  # the first start with the new settings fails, the restore works
            calls["n"] += 1
            client = real_factory(args)
            client.behaviour = FakeBehaviour(fail_start=args.served_model_name == "bad")
            return client

        sup._factory = flaky
        with pytest.raises(Exception, match="refused"):
            h.http.portal.call(sup.apply, {"served_model_name": "bad"})  # type: ignore[union-attr]
        assert sup.state == "ready" and sup.current_args()["served_model_name"] is None
        assert calls["n"] == 2
        assert any("restoring previous settings" in line for line in sup.status()["progress"])
        assert h.http.get("/ready").status_code == 200


def test_draining_refuses_new_requests(tiny_llama) -> None:
    with running_app(tiny_llama) as h:
        h.supervisor.begin_drain()
        err = assert_openai_error(h.http.post("/generate", json={"text": "x"}), 503)
        assert "shutting down" in err["message"]


def test_flush_cache_refused_while_running(tiny_llama) -> None:
    with running_app(tiny_llama, FakeBehaviour(step_s=0.02)) as h:
        worker = threading.Thread(target=lambda: h.http.post("/generate", json={
            "text": "x", "rid": "r1", "sampling_params": {"max_new_tokens": 300}}))
        worker.start()
        deadline = time.monotonic() + 10
        while not h.clients[-1].num_inflight and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "running" in assert_openai_error(h.http.post("/flush_cache"), 400)["message"]
        assert h.http.post("/abort_request", json={"rid": "r1"}).json()["aborted"] == ["r1"]
        worker.join(10)
        # An unknown (or finished) rid: SGLang's 200, with a body that says nothing was aborted.
        r = h.http.post("/abort_request", json={"rid": "r1", "abort_message": None})
        assert r.status_code == 200 and r.json()["success"] is False and r.json()["aborted"] == []
        assert "r1" in r.json()["message"]
        assert h.http.post("/flush_cache").status_code == 200


def test_metrics_registry_per_app_and_snapshot(tiny_llama) -> None:
    with running_app(tiny_llama) as a, running_app(tiny_llama, served_model_name="other") as b:
        assert 'model_name="other"' in b.http.get("/metrics").text
        assert 'model_name="other"' not in a.http.get("/metrics").text
        snap = a.app.state.ctx.metrics.snapshot()
        assert set(snap) >= {"num_running_reqs", "num_queued_reqs", "token_usage", "kv_used_tokens",
                             "kv_total_tokens", "cache_hit_rate", "gen_throughput", "ttft_median_s", "model_name"}


def test_request_log_has_no_prompt_unless_asked(tiny_llama, caplog) -> None:
    secret = "my-secret-prompt-text"
    with caplog.at_level(logging.INFO):
        with running_app(tiny_llama) as h:
            h.http.post("/v1/completions", json={"model": tiny_llama, "prompt": secret, "max_tokens": 2})
        assert "/v1/completions 200" in caplog.text and secret not in caplog.text
        caplog.clear()
        with running_app(tiny_llama, log_requests=True) as h:
            h.http.post("/v1/completions", json={"model": tiny_llama, "prompt": secret, "max_tokens": 2})
        assert secret in caplog.text


def test_tokenize_detokenize_roundtrip(tiny_llama) -> None:
    with running_app(tiny_llama) as h:
        r = h.http.post("/v1/tokenize", json={"model": tiny_llama, "prompt": "hello world",
                                              "add_special_tokens": False}).json()
        assert r["count"] == len(r["tokens"]) and r["max_model_len"] == 512
        back = h.http.post("/v1/detokenize", json={"model": tiny_llama, "tokens": r["tokens"]}).json()
        assert back["text"] == "hello world"
        assert_openai_error(h.http.post("/v1/detokenize", json={"tokens": [10**6]}), 400)


def test_abort_on_disconnect_helper() -> None:
    from app.generation import ClientDisconnected, abort_on_disconnect

    class _GoneRequest:
        method, url = "POST", type("U", (), {"path": "/x"})()

        async def is_disconnected(self) -> bool:
            return True

    cancelled = asyncio.Event()

    async def work() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def main() -> None:
        with pytest.raises(ClientDisconnected):
            await abort_on_disconnect(_GoneRequest(), work())  # type: ignore[arg-type]
        assert cancelled.is_set()

    asyncio.run(main())


def test_speculative_gauges_follow_engine_stats() -> None:
    from prometheus_client import generate_latest

    from app.metrics import Metrics

    info = {"spec_accept_rate": 0.625, "spec_accept_length": 2.5, "spec_num_draft_tokens": 80,
            "spec_num_accepted_tokens": 50}
    text = generate_latest(Metrics(lambda: "m", lambda: info, enable_gpu=False).registry).decode()
    assert 'tessera_spec_accept_rate{model_name="m"} 0.625' in text
    assert 'tessera_spec_accept_length{model_name="m"} 2.5' in text
    assert 'tessera_spec_draft_tokens{model_name="m"} 80.0' in text
    assert 'tessera_spec_accepted_tokens{model_name="m"} 50.0' in text
    off = generate_latest(Metrics(lambda: "m", lambda: {}, enable_gpu=False).registry).decode()
    assert 'tessera_spec_accept_rate{' not in off  # no sample while speculation is off
