"""`priority` on the native and OpenAI routes: passed to the engine with --schedule-policy priority, a 400
naming it otherwise (never silently ignored)."""

from __future__ import annotations

from typing import Any

from tests.app.app_harness import assert_openai_error, running_app


def _record(h: Any) -> list[int]:
    seen: list[int] = []
    client = h.clients[-1]
    original = client.generate

    def generate(*args: Any, priority: int = 0, **kwargs: Any) -> Any:
        seen.append(priority)
        return original(*args, priority=priority, **kwargs)

    client.generate = generate
    return seen


def test_priority_reaches_the_engine(tiny_llama):
    with running_app(tiny_llama, schedule_policy="priority") as h:
        seen = _record(h)
        body = {"text": "hi", "sampling_params": {"max_new_tokens": 2}}
        assert h.http.post("/generate", json={**body, "priority": 7}).status_code == 200
        assert h.http.post("/generate", json={"text": ["a", "b"], "sampling_params": {"max_new_tokens": 2},
                                              "priority": [3, 4]}).status_code == 200
        r = h.http.post("/v1/completions", json={"model": h.supervisor.model_name, "prompt": "x", "max_tokens": 2,
                                                 "priority": 9})
        assert r.status_code == 200, r.text
        r = h.http.post("/v1/chat/completions", json={"model": h.supervisor.model_name, "max_tokens": 2,
                                                      "messages": [{"role": "user", "content": "x"}], "priority": -2})
        assert r.status_code == 200, r.text
        assert seen == [7, 3, 4, 9, -2]
        err = assert_openai_error(h.http.post("/generate", json={**body, "priority": "high"}), 400)
        assert "priority" in (err["param"] or err["message"])


def test_priority_without_the_policy_is_a_400(tiny_llama):
    with running_app(tiny_llama) as h:
        body = {"text": "hi", "sampling_params": {"max_new_tokens": 2}}
        assert h.http.post("/generate", json={**body, "priority": 0}).status_code == 200
        err = assert_openai_error(h.http.post("/generate", json={**body, "priority": 2}), 400)
        assert err["param"] == "priority" and "--schedule-policy priority" in err["message"]
        r = h.http.post("/v1/completions", json={"model": h.supervisor.model_name, "prompt": "x", "max_tokens": 2,
                                                 "priority": 1})
        assert assert_openai_error(r, 400)["param"] == "priority"
