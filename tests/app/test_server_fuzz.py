"""A short fuzz of the real server: random sampling settings must reach the engine without a 5xx
(a crashed engine rank would show up here as 503s). Lengths are clamped so each example is cheap."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings

from tests.app.fuzz_bodies import CHAT_KEYS, COMPLETION_KEYS, NATIVE_KEYS, bodies, check_answer

LIMITS = {"max_tokens": 4, "max_completion_tokens": 4, "max_new_tokens": 4, "n": 3, "top_logprobs": 3,
          "logprobs": 3, "top_logprobs_num": 3, "min_tokens": 2, "min_new_tokens": 2}


def _clamp(body: Any) -> Any:
    if isinstance(body, dict):
        out = {}
        for k, v in body.items():
            if k in LIMITS and isinstance(v, int) and not isinstance(v, bool) and v > LIMITS[k]:
                v = LIMITS[k]
            out[k] = _clamp(v)
        if "sampling_params" in out and isinstance(out["sampling_params"], dict):
            out["sampling_params"].setdefault("max_new_tokens", 4)
        if "prompt" in out or "messages" in out:
            out.setdefault("max_tokens", 4)
        return out
    if isinstance(body, list):
        return [_clamp(v) for v in body[:4]]
    return body


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        yield client


REAL = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@REAL
@given(body=bodies({"model": "MODEL", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}, CHAT_KEYS))
def test_real_fuzz_chat(http, model_name, body) -> None:
    body = _clamp(body)
    if isinstance(body, dict) and body.get("model") == "MODEL":
        body["model"] = model_name
    check_answer(http.post("/v1/chat/completions", json=body))


@REAL
@given(body=bodies({"model": "MODEL", "prompt": "hello", "max_tokens": 3}, COMPLETION_KEYS))
def test_real_fuzz_completions(http, model_name, body) -> None:
    body = _clamp(body)
    if isinstance(body, dict) and body.get("model") == "MODEL":
        body["model"] = model_name
    check_answer(http.post("/v1/completions", json=body))


@REAL
@given(body=bodies({"text": "hello", "sampling_params": {"max_new_tokens": 3}}, NATIVE_KEYS))
def test_real_fuzz_generate(http, body) -> None:
    check_answer(http.post("/generate", json=_clamp(body)))
