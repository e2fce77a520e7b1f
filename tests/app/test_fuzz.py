"""Property-based fuzzing of request bodies: whatever a client sends, the answer is never a 5xx and
every error is an OpenAI error object. Runs in-process against the fake engine to stay fast."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.app.app_harness import running_app
from tests.app.fake_engine import FakeBehaviour
from tests.app.fuzz_bodies import CHAT_KEYS, COMPLETION_KEYS, NATIVE_KEYS, bodies, check_answer


@pytest.fixture(scope="module")
def fuzz_app(tiny_llama):
    # A short context keeps "valid" random requests cheap; no delay per token.
    with running_app(tiny_llama, FakeBehaviour(step_s=0.0, context_length=48)) as h:
        h.model = tiny_llama
        yield h


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@FUZZ
@given(body=bodies({"model": "MODEL", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}, CHAT_KEYS))
def test_fuzz_chat(fuzz_app, body) -> None:
    if isinstance(body, dict) and body.get("model") == "MODEL":
        body["model"] = fuzz_app.model
    check_answer(fuzz_app.http.post("/v1/chat/completions", json=body))


@FUZZ
@given(body=bodies({"model": "MODEL", "prompt": "hello", "max_tokens": 3}, COMPLETION_KEYS))
def test_fuzz_completions(fuzz_app, body) -> None:
    if isinstance(body, dict) and body.get("model") == "MODEL":
        body["model"] = fuzz_app.model
    check_answer(fuzz_app.http.post("/v1/completions", json=body))


@FUZZ
@given(body=bodies({"text": "hello", "sampling_params": {"max_new_tokens": 3}}, NATIVE_KEYS))
def test_fuzz_generate(fuzz_app, body) -> None:
    check_answer(fuzz_app.http.post("/generate", json=body))


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(raw=st.binary(max_size=40) | st.text(max_size=40).map(str.encode))
def test_fuzz_raw_bytes(fuzz_app, raw) -> None:
    for path in ("/v1/chat/completions", "/v1/completions", "/generate"):
        check_answer(fuzz_app.http.post(path, content=raw, headers={"content-type": "application/json"}))
