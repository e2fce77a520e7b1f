"""Property-based fuzzing of request bodies: whatever a client sends, the answer is never a 5xx and
every error is an OpenAI error object. Runs in-process against the fake engine to stay fast."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.app.app_harness import assert_openai_error, running_app
from tests.app.fake_engine import FakeBehaviour

LEAF = (st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.integers(-3, 40)
        | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12))
JSON = st.recursive(LEAF, lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)
MESSAGE = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "tool", "x"]),
                                 "content": st.text(max_size=20) | JSON})

SAMPLING_KEYS = ["max_new_tokens", "min_new_tokens", "n", "stop", "stop_token_ids", "ignore_eos", "temperature",
                 "top_p", "top_k", "min_p", "frequency_penalty", "presence_penalty", "repetition_penalty",
                 "logit_bias", "sampling_seed", "regex", "json_schema", "ebnf", "skip_special_tokens", "bogus"]
OPENAI_KEYS = ["model", "n", "stream", "stream_options", "stop", "seed", "temperature", "top_p", "presence_penalty",
               "frequency_penalty", "logit_bias", "user", "top_k", "min_p", "ignore_eos", "stop_token_ids",
               "repetition_penalty", "min_tokens", "regex", "max_tokens", "logprobs", "tools", "bogus"]
CHAT_KEYS = [*OPENAI_KEYS, "messages", "max_completion_tokens", "top_logprobs", "response_format"]
COMPLETION_KEYS = [*OPENAI_KEYS, "prompt", "echo", "best_of", "suffix"]
NATIVE_KEYS = ["text", "input_ids", "sampling_params", "rid", "return_logprob", "logprob_start_len",
               "top_logprobs_num", "return_text_in_logprobs", "stream", "image_data", "bogus"]


def _value_for(key: str) -> st.SearchStrategy[Any]:
    special = {
        "messages": st.lists(MESSAGE, max_size=3) | JSON,
        "prompt": st.text(max_size=20) | st.lists(st.integers(-2, 400), max_size=5) | JSON,
        "input_ids": st.lists(st.integers(-2, 400), max_size=5) | st.lists(st.lists(st.integers(0, 400), max_size=3),
                                                                          max_size=2) | JSON,
        "sampling_params": st.dictionaries(st.sampled_from(SAMPLING_KEYS), JSON | st.integers(0, 8), max_size=4)
        | JSON,
        "stream_options": st.fixed_dictionaries({"include_usage": JSON}) | JSON,
        "response_format": st.fixed_dictionaries({"type": st.sampled_from(["text", "json_object", "x"])}) | JSON,
    }
    return special.get(key, JSON)


def _bodies(base: dict[str, Any], keys: list[str]) -> st.SearchStrategy[Any]:
    overrides = st.lists(st.sampled_from(keys), max_size=4, unique=True).flatmap(
        lambda ks: st.fixed_dictionaries({k: _value_for(k) for k in ks}))
    mutated = overrides.map(lambda o: {**base, **o})
    return mutated | JSON


@pytest.fixture(scope="module")
def fuzz_app(tiny_llama):
    # A short context keeps "valid" random requests cheap; no delay per token.
    with running_app(tiny_llama, FakeBehaviour(step_s=0.0, context_length=48)) as h:
        h.model = tiny_llama
        yield h


def _check(resp: Any) -> None:
    assert resp.status_code < 500, resp.text
    if resp.status_code >= 400:
        assert_openai_error(resp)
    elif resp.headers.get("content-type", "").startswith("text/event-stream"):
        assert resp.text.endswith("data: [DONE]\n\n")
        for line in resp.text.splitlines():
            if line.startswith("data: {"):
                payload = json.loads(line[6:])
                if "error" in payload:
                    assert payload["error"]["message"]
    else:
        resp.json()


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@FUZZ
@given(body=_bodies({"model": "MODEL", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}, CHAT_KEYS))
def test_fuzz_chat(fuzz_app, body) -> None:
    if isinstance(body, dict) and body.get("model") == "MODEL":
        body["model"] = fuzz_app.model
    _check(fuzz_app.http.post("/v1/chat/completions", json=body))


@FUZZ
@given(body=_bodies({"model": "MODEL", "prompt": "hello", "max_tokens": 3}, COMPLETION_KEYS))
def test_fuzz_completions(fuzz_app, body) -> None:
    if isinstance(body, dict) and body.get("model") == "MODEL":
        body["model"] = fuzz_app.model
    _check(fuzz_app.http.post("/v1/completions", json=body))


@FUZZ
@given(body=_bodies({"text": "hello", "sampling_params": {"max_new_tokens": 3}}, NATIVE_KEYS))
def test_fuzz_generate(fuzz_app, body) -> None:
    _check(fuzz_app.http.post("/generate", json=body))


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(raw=st.binary(max_size=40) | st.text(max_size=40).map(str.encode))
def test_fuzz_raw_bytes(fuzz_app, raw) -> None:
    for path in ("/v1/chat/completions", "/v1/completions", "/generate"):
        _check(fuzz_app.http.post(path, content=raw, headers={"content-type": "application/json"}))
