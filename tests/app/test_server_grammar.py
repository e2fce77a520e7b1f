"""Structured generation through the native /generate route of the real server: the spellings SGLang's
documents use, and the 400s for specs the engine cannot enforce."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import httpx
import pytest

from tests.app.server_proc import ServerProc


def _post(server: ServerProc, body: Any) -> httpx.Response:
    return httpx.post(server.base_url + "/generate", json=body, timeout=60)


def test_top_level_regex_alias_and_sampling_params_schema(server) -> None:
    pattern = r"(red|green|blue)-[0-9]{2}"
    r = _post(server, {"text": "Colour:", "regex": pattern, "sampling_params": {"max_new_tokens": 16,
                                                                                 "temperature": 0}})
    assert r.status_code == 200, r.text
    assert re.fullmatch(pattern, r.json()["text"])
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
              "additionalProperties": False}
    r = _post(server, {"text": ["a", "b"], "sampling_params": {"max_new_tokens": 16, "temperature": 0,
                                                                "json_schema": json.dumps(schema)}})
    assert r.status_code == 200, r.text
    assert all(json.loads(o["text"]) in ({"ok": True}, {"ok": False}) for o in r.json())


@pytest.mark.parametrize("body,param,fragment", [
    ({"sampling_params": {"json_schema": json.dumps({"type": "array", "uniqueItems": True})}}, "json_schema",
     "'uniqueItems' at '/uniqueItems'"),
    ({"sampling_params": {"regex": "(a"}}, "regex", "parenthesis is not closed"),
    ({"sampling_params": {"ebnf": "root ::= nope"}}, "ebnf", 'Rule "nope" is not defined'),
    ({"sampling_params": {"regex": "a", "json_schema": "{}"}}, "regex", "cannot be used together"),
    ({"regex": "a", "sampling_params": {"regex": "b"}}, "regex", "both at the top level"),
    ({"sampling_params": {"structural_tag": "[]"}}, "structural_tag", "invalid structural_tag"),
])
def test_bad_grammars_are_400s(server, body, param, fragment) -> None:
    r = _post(server, {"text": "x", **body})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and fragment in err["message"], err


def test_grammar_queue_metric(server) -> None:
    # Engine gauges come from the supervisor's cached stats poll (every second, 5 s timeout): on a loaded 2-core
    # CI box the copy a scrape sees can predate the last grammar request's finish, or the first poll. The
    # contract is that the gauge exists and drains to 0 once nothing waits for a grammar.
    pattern = re.compile(r"^tessera_num_grammar_queue_reqs\{[^}]*\} 0\.0$", re.M)
    deadline = time.monotonic() + 30
    while True:
        text = httpx.get(server.base_url + "/metrics").text
        if pattern.search(text) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    gauge = [line for line in text.splitlines() if "grammar_queue" in line]
    assert pattern.search(text), gauge or text[-2000:]
