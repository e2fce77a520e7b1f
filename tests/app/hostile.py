"""Hostile request bodies for the chaos suite: the values that used to crash or hang the server
(lone surrogates, integers past 64 bits, NaN/inf, out-of-vocabulary ids, enormous strings and lists,
wrong types at every level), placed into schema-shaped bodies so they reach deep validation.

Grammar keys (regex, json_schema, ebnf) are left out on purpose: structured generation accepts valid
specs, and its own tests own the invalid ones.
"""

from __future__ import annotations

import json
import random
from typing import Any

from hypothesis import strategies as st

NASTY_SCALARS = [2**64, 2**63, -(2**63) - 1, 10**30, -99999, 10**9, float("nan"), float("inf"), float("-inf"),
                 "x\ud800y", "\udfff", "-1", "99999", "1e400", "", True, None, 0, -1, 1.5]
BIG_STRING = "The list is a mutable sequence. " * 7000  # ~220 kB: under the body limit, past the context
HUGE_STRING = "A" * 300_000  # past the chaos server's 256 kB body limit
LEAF = (st.sampled_from(NASTY_SCALARS) | st.integers(-3, 400) | st.booleans() | st.none()
        | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=10)
        | st.sampled_from([BIG_STRING, HUGE_STRING, list(range(5000)), [2**64] * 3]))
JSON = st.recursive(LEAF, lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=6) | st.sampled_from(["\ud800", "5", "-3"]), inner,
                                      max_size=3), max_leaves=6)

SAMPLING_KEYS = ["max_new_tokens", "min_new_tokens", "n", "stop", "stop_token_ids", "ignore_eos", "temperature",
                 "top_p", "top_k", "min_p", "frequency_penalty", "presence_penalty", "repetition_penalty",
                 "logit_bias", "sampling_seed", "skip_special_tokens", "no_stop_trim", "bogus"]
OPENAI_KEYS = ["model", "n", "stream", "stream_options", "stop", "seed", "temperature", "top_p", "presence_penalty",
               "frequency_penalty", "logit_bias", "user", "top_k", "min_p", "ignore_eos", "stop_token_ids",
               "repetition_penalty", "min_tokens", "max_tokens", "logprobs", "rid", "bogus"]
CHAT_KEYS = [*OPENAI_KEYS, "messages", "max_completion_tokens", "top_logprobs"]
COMPLETION_KEYS = [*OPENAI_KEYS, "prompt", "echo"]
NATIVE_KEYS = ["text", "input_ids", "sampling_params", "rid", "return_logprob", "logprob_start_len",
               "top_logprobs_num", "return_text_in_logprobs", "stream", "bogus"]
KEY_CREATE_KEYS = ["name", "rpm", "tpm", "max_concurrency", "models", "expires_at", "bogus"]
SETTINGS_KEYS = ["usage_retention_days", "rollup_retention_days", "bogus"]
LOGIN_KEYS = ["username", "password", "bogus"]

_SPECIAL = {
    "messages": st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "x"]), "content": JSON}),
                         max_size=3) | JSON,
    "prompt": JSON | st.lists(st.sampled_from([0, 5, 383, 384, 10**9, 2**64, -1]), min_size=1, max_size=4),
    "input_ids": JSON | st.lists(st.sampled_from([0, 5, 383, 384, 10**9, 2**64, -1]), min_size=1, max_size=4),
    "sampling_params": st.dictionaries(st.sampled_from(SAMPLING_KEYS), JSON, max_size=4) | JSON,
    "logit_bias": st.dictionaries(st.sampled_from(["5", "-99999", "384", "18446744073709551616", "x"]), LEAF,
                                  max_size=2) | JSON,
    "stream": st.booleans() | JSON,
}


def body_for(base: dict[str, Any], keys: list[str]) -> st.SearchStrategy[Any]:
    """`base` with up to four keys set to hostile values (nested where the schema nests), or any JSON."""
    overrides = st.lists(st.sampled_from(keys), max_size=4, unique=True).flatmap(
        lambda ks: st.fixed_dictionaries({k: _SPECIAL.get(k, JSON) for k in ks}))
    return overrides.map(lambda o: {**base, **o}) | JSON


def encode(body: Any, rng: random.Random) -> bytes:
    """JSON text as a hostile client writes it: NaN/Infinity literals and \\udXXX escapes allowed, and
    sometimes raw invalid UTF-8 bytes spliced into a string."""
    data = json.dumps(body).encode()
    if rng.random() < 0.1 and b'"' in data:
        at = data.index(b'"') + 1
        data = data[:at] + rng.choice([b"\xed\xa0\x80", b"\xff", b"\xc3"]) + data[at:]
    return data
