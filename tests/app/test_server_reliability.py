"""Issue 9's reproductions against the shared real server, each request exactly as the issue writes it:
every one is a 400 naming the parameter, the engine never restarts, and no rid is left "in flight".
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.app.proc_tree import rss_mb

JSON_HEADERS = {"content-type": "application/json"}


def _raw(body: dict, **literals: str) -> str:
    """The JSON text of `body` with ASCII escapes (so a lone surrogate is written as \\udXXX), each "@name"
    string replaced by a bare literal such as NaN."""
    text = json.dumps(body)
    for name, literal in literals.items():
        text = text.replace(f'"@{name}"', literal)
    return text


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        yield client


def _restarts(http: httpx.Client) -> int:
    return int(http.get("/get_server_info").json()["restarts"])


def _metric(http: httpx.Client, name: str, **labels: str) -> float:
    total = 0.0
    for line in http.get("/metrics").text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _assert_400(resp: httpx.Response, param: str) -> None:
    assert resp.status_code == 400, resp.text
    err = resp.json()["error"]
    assert err["param"] == param and err["type"] == "invalid_request_error", err


def _generate(extra: dict, sampling: dict | None = None) -> dict:
    return {"text": "The list", "sampling_params": {"max_new_tokens": 2, **(sampling or {})}, **extra}


def _completion(model: str, **extra) -> dict:
    return {"model": model, "prompt": "The list", "max_tokens": 2, **extra}


def test_values_that_killed_the_engine_are_400s(http, model_name) -> None:
    before = _restarts(http)
    rejected = _metric(http, "tessera_rejected_requests_total", reason="invalid_request")
    _assert_400(http.post("/generate", json=_generate({"return_logprob": True, "top_logprobs_num": 5000})),
                "top_logprobs_num")
    _assert_400(http.post("/generate", json=_generate({}, {"logit_bias": {"-99999": 1}})), "logit_bias")
    _assert_400(http.post("/generate", json=_generate({}, {"logit_bias": {"99999": 1}})), "logit_bias")
    _assert_400(http.post("/generate", json=_generate({}, {"stop_token_ids": [1000000000]})), "stop_token_ids")
    _assert_400(http.post("/v1/completions", json=_completion(model_name, stop_token_ids=[1000000000])),
                "stop_token_ids")
    _assert_400(http.post("/generate", json={"input_ids": [1, -5, 2], "sampling_params": {"max_new_tokens": 1}}),
                "input_ids")
    _assert_400(http.post("/v1/completions", json=_completion(model_name, prompt=[5, 10**9], echo=True)), "prompt")
    assert _restarts(http) == before
    assert _metric(http, "tessera_rejected_requests_total", reason="invalid_request") >= rejected + 7


def test_invalid_unicode_is_a_400_naming_the_field(http, model_name) -> None:
    # A lone surrogate as a JSON escape (the body itself is plain ASCII).
    body = _raw({"model": model_name, "prompt": "x\ud800y", "max_tokens": 2})
    assert "\\ud800" in body
    _assert_400(http.post("/v1/completions", content=body, headers=JSON_HEADERS), "prompt")
    body = _raw({"text": "x\ud800y", "sampling_params": {"max_new_tokens": 2}})
    _assert_400(http.post("/generate", content=body, headers=JSON_HEADERS), "text")
    body = _raw({"model": model_name, "messages": [{"role": "user", "content": "x\ud800y"}], "max_tokens": 2})
    _assert_400(http.post("/v1/chat/completions", content=body, headers=JSON_HEADERS), "messages.0.content")
    # Raw bytes ED A0 80 (a UTF-8-encoded surrogate, invalid UTF-8) inside a string.
    raw = b'{"model": "%s", "prompt": "x\xed\xa0\x80y", "max_tokens": 2}' % model_name.encode()
    _assert_400(http.post("/v1/completions", content=raw, headers=JSON_HEADERS), "prompt")
    raw = b'{"text": "x\xed\xa0\x80y", "sampling_params": {"max_new_tokens": 2, "stop": ["\xff"]}}'
    _assert_400(http.post("/generate", content=raw, headers=JSON_HEADERS), "text")
    # A surrogate pair is a real character (U+1F642) and must still work.
    ok = http.post("/generate", content='{"text": "x\\ud83d\\ude42y", "sampling_params": {"max_new_tokens": 1}}',
                   headers=JSON_HEADERS)
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("field,param", [("seed", "seed"), ("top_k", "top_k")])
def test_integers_past_64_bits_are_400s_and_leave_no_ghost_request(http, model_name, field, param) -> None:
    body = _completion(model_name, **{field: 18446744073709551616})
    _assert_400(http.post("/v1/completions", json=body), param)
    _assert_400(http.post("/v1/completions", json=_completion(model_name, stop_token_ids=[18446744073709551616])),
                "stop_token_ids")
    _assert_400(http.post("/generate", json=_generate({}, {"sampling_seed": 18446744073709551616})), "sampling_seed")
    _assert_400(http.post("/generate", json=_generate({"logprob_start_len": 18446744073709551616})),
                "logprob_start_len")
    # Before the fix these left rids in the client's in-flight table: /flush_cache said "3 request(s) are running".
    r = http.post("/flush_cache")
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_floats_are_400s(http, model_name, literal) -> None:
    for key in ("temperature", "top_p", "repetition_penalty"):
        body = _raw({"text": "x", "sampling_params": {"max_new_tokens": 2, key: "@v"}}, v=literal)
        _assert_400(http.post("/generate", content=body, headers=JSON_HEADERS), key)
    body = _raw({"text": "x", "sampling_params": {"max_new_tokens": 2, "logit_bias": {"5": "@v"}}}, v=literal)
    _assert_400(http.post("/generate", content=body, headers=JSON_HEADERS), "logit_bias")
    body = _raw({"model": model_name, "prompt": "x", "max_tokens": 2, "temperature": "@v"}, v=literal)
    _assert_400(http.post("/v1/completions", content=body, headers=JSON_HEADERS), "temperature")


def test_prompt_past_the_context_is_refused_without_tokenizing_it_all(server, http, model_name) -> None:
    # ~1 MB of text: refused as a context overflow from a bounded prefix (the body is under the 8 MiB limit).
    text = "The list is a mutable sequence. " * 32768
    cases = [("/generate", {"text": text, "sampling_params": {"max_new_tokens": 1}}, "text"),
             ("/v1/completions", _completion(model_name, prompt=text), "prompt"),
             ("/v1/chat/completions", {"model": model_name, "messages": [{"role": "user", "content": text}]},
              "messages")]
    before = rss_mb(server.proc.pid)

    def one(i: int) -> httpx.Response:
        path, body, _ = cases[i % 3]
        return http.post(path, json=body)

    with ThreadPoolExecutor(6) as pool:  # the case: six 1 MB prompts at once, twice over
        for i, r in enumerate(pool.map(one, range(12))):
            _assert_400(r, cases[i % 3][2])
            assert r.json()["error"]["code"] == "context_length_exceeded"
    after = rss_mb(server.proc.pid)
    print(f"\nRSS of the server tree, twelve 1 MB prompts: {before:.0f} MB -> {after:.0f} MB")
    assert after - before < 150, (before, after)  # it was +740 MB for six before the prompt was bounded
    assert _metric(http, "tessera_rejected_requests_total", reason="context_length") >= 12


def test_probes_and_restart_metric(http) -> None:
    assert http.get("/live").json()["status"] == "alive"
    assert http.get("/health").status_code == 200
    assert http.get("/ready").status_code == 200
    assert "tessera_engine_restarts_total" in http.get("/metrics").text


def test_a_batch_may_not_expand_into_unbounded_work(http, model_name) -> None:
    _assert_400(http.post("/generate", json={"text": ["x"] * 4097, "sampling_params": {"max_new_tokens": 1}}), "text")
    _assert_400(http.post("/generate", json={"input_ids": [[1, 2]] * 40, "sampling_params": {"max_new_tokens": 1,
                                                                                           "n": 128}}), "input_ids")
    _assert_400(http.post("/v1/completions", json=_completion(model_name, prompt=["x"] * 40, n=128)), "prompt")


def test_a_stream_the_client_leaves_is_counted_as_aborted(server, http) -> None:
    aborted = _metric(http, "tessera_num_requests_total", finish_reason="abort")
    body = {"text": "The list", "stream": True, "sampling_params": {"max_new_tokens": 400, "ignore_eos": True}}
    with httpx.stream("POST", server.base_url + "/generate", json=body, timeout=60) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                break  # hang up mid-stream
    deadline = time.monotonic() + 30
    while _metric(http, "tessera_num_requests_total", finish_reason="abort") < aborted + 1:
        assert time.monotonic() < deadline, "the abandoned request never ended in the metrics"
        time.sleep(0.1)
    while http.get("/get_server_info").json().get("num_running_reqs"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
