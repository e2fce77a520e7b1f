"""Hypothesis strategies for request bodies and the property every answer must have."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

from tests.app.app_harness import assert_openai_error

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
CHAT_KEYS = [*OPENAI_KEYS, "messages", "max_completion_tokens", "top_logprobs", "response_format", "tool_choice",
             "parallel_tool_calls", "chat_template_kwargs"]
SCHEMA = st.fixed_dictionaries({"type": st.sampled_from(["object", "string", "x"]),
                                "properties": st.dictionaries(st.sampled_from(["a", "b"]), JSON, max_size=2)}) | JSON
TOOL = st.fixed_dictionaries({"type": st.sampled_from(["function", "x"]), "function": st.fixed_dictionaries(
    {"name": st.sampled_from(["f", "g", "bad name"]), "parameters": SCHEMA})}) | JSON
TOOL_CALL_MESSAGE = st.fixed_dictionaries({"role": st.sampled_from(["assistant", "tool"]), "content": st.none(),
                                           "tool_call_id": st.text(max_size=4), "tool_calls": st.lists(
    st.fixed_dictionaries({"id": st.text(max_size=4), "type": st.just("function"), "function": st.fixed_dictionaries(
        {"name": st.text(max_size=4), "arguments": st.text(max_size=12) | JSON})}) | JSON, max_size=2)})
COMPLETION_KEYS = [*OPENAI_KEYS, "prompt", "echo", "best_of", "suffix"]
NATIVE_KEYS = ["text", "input_ids", "sampling_params", "rid", "return_logprob", "logprob_start_len",
               "top_logprobs_num", "return_text_in_logprobs", "stream", "image_data", "bogus"]


def value_for(key: str) -> st.SearchStrategy[Any]:
    special = {
        "messages": st.lists(MESSAGE | TOOL_CALL_MESSAGE, max_size=3) | JSON,
        "tools": st.lists(TOOL, max_size=2) | JSON,
        "tool_choice": st.sampled_from(["none", "auto", "required", {"type": "function", "function": {"name": "f"}}])
        | JSON,
        "prompt": st.text(max_size=20) | st.lists(st.integers(-2, 400), max_size=5) | JSON,
        "input_ids": st.lists(st.integers(-2, 400), max_size=5) | st.lists(st.lists(st.integers(0, 400), max_size=3),
                                                                          max_size=2) | JSON,
        "sampling_params": st.dictionaries(st.sampled_from(SAMPLING_KEYS), JSON | st.integers(0, 8), max_size=4)
        | JSON,
        "stream_options": st.fixed_dictionaries({"include_usage": JSON}) | JSON,
        "response_format": st.fixed_dictionaries({"type": st.sampled_from(["text", "json_object", "x"])})
        | st.fixed_dictionaries({"type": st.just("json_schema"), "json_schema": st.fixed_dictionaries(
            {"name": st.just("x"), "schema": SCHEMA})}) | JSON,
    }
    return special.get(key, JSON)


def bodies(base: dict[str, Any], keys: list[str]) -> st.SearchStrategy[Any]:
    overrides = st.lists(st.sampled_from(keys), max_size=4, unique=True).flatmap(
        lambda ks: st.fixed_dictionaries({k: value_for(k) for k in ks}))
    mutated = overrides.map(lambda o: {**base, **o})
    return mutated | JSON


def check_answer(resp: Any) -> None:
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
