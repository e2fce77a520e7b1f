"""SGLang's native API on the real server, asserted field by field (DESIGN.md "Native API")."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import pytest

from tests.app.server_proc import ServerProc

GREEDY = {"max_new_tokens": 8, "temperature": 0, "ignore_eos": True}


def _post(server: ServerProc, path: str, body: Any, **kw: Any) -> httpx.Response:
    return httpx.post(server.base_url + path, json=body, timeout=60, **kw)


def _check_meta(meta: dict[str, Any], prompt_len: int, completion: int) -> None:
    assert isinstance(meta["id"], str) and meta["id"]
    assert meta["prompt_tokens"] == prompt_len
    assert meta["completion_tokens"] == completion
    assert isinstance(meta["cached_tokens"], int) and 0 <= meta["cached_tokens"] < prompt_len
    assert isinstance(meta["e2e_latency"], float) and meta["e2e_latency"] > 0


def _tokens(server: ServerProc, text: str) -> list[int]:
    return _post(server, "/v1/tokenize", {"prompt": text}).json()["tokens"]


def test_generate_text_single(server) -> None:
    r = _post(server, "/generate", {"text": "The quick brown fox", "sampling_params": GREEDY})
    assert r.status_code == 200
    out = r.json()
    assert set(out) >= {"text", "output_ids", "meta_info"}
    assert isinstance(out["text"], str) and len(out["output_ids"]) == 8
    _check_meta(out["meta_info"], len(_tokens(server, "The quick brown fox")), 8)
    assert out["meta_info"]["finish_reason"] == {"type": "length", "length": 8}


def test_generate_lists_in_lists_out(server) -> None:
    texts = ["The quick brown fox", "A list is"]
    out = _post(server, "/generate", {"text": texts, "sampling_params": GREEDY}).json()
    assert isinstance(out, list) and len(out) == 2
    singles = [_post(server, "/generate", {"text": t, "sampling_params": GREEDY}).json() for t in texts]
    assert [o["output_ids"] for o in out] == [s["output_ids"] for s in singles]
    ids = [_tokens(server, t) for t in texts]
    by_ids = _post(server, "/generate", {"input_ids": ids, "sampling_params": GREEDY}).json()
    assert [o["output_ids"] for o in by_ids] == [s["output_ids"] for s in singles]
    one = _post(server, "/generate", {"input_ids": ids[0], "sampling_params": GREEDY}).json()
    assert isinstance(one, dict) and one["output_ids"] == singles[0]["output_ids"]
    per_item = _post(server, "/generate", {"text": texts, "sampling_params": [GREEDY, {**GREEDY, "max_new_tokens": 3}]})
    assert [len(o["output_ids"]) for o in per_item.json()] == [8, 3]


def test_generate_n_samples(server) -> None:
    out = _post(server, "/generate", {"text": "Numbers are", "sampling_params": {
        "max_new_tokens": 4, "n": 3, "temperature": 1.0, "ignore_eos": True}}).json()
    assert isinstance(out, list) and len(out) == 3
    assert all(len(o["output_ids"]) == 4 for o in out)
    assert len({o["meta_info"]["id"] for o in out}) == 3


def test_prefill_only_caches_prefix(server) -> None:
    text = "In the beginning the engine reads the prompt, then it schedules a batch"
    n = len(_tokens(server, text))
    out = _post(server, "/generate", {"text": text, "sampling_params": {"max_new_tokens": 0}}).json()
    assert out["text"] == "" and out["output_ids"] == []
    assert out["meta_info"]["completion_tokens"] == 0
    assert out["meta_info"]["finish_reason"]["type"] == "length"
    again = _post(server, "/generate", {"text": text, "sampling_params": {"max_new_tokens": 1}}).json()
    assert again["meta_info"]["cached_tokens"] >= n - 1


def test_logprob_triples(server) -> None:
    text = "Tuples are immutable sequences"
    ids = _tokens(server, text)
    out = _post(server, "/generate", {"text": text, "sampling_params": GREEDY, "return_logprob": True,
                                      "logprob_start_len": 0, "top_logprobs_num": 2,
                                      "return_text_in_logprobs": True}).json()
    meta = out["meta_info"]
    inp, outp = meta["input_token_logprobs"], meta["output_token_logprobs"]
    assert [e[1] for e in inp] == ids
    assert inp[0][0] is None and all(isinstance(e[0], float) and e[0] <= 0 for e in inp[1:])
    assert all(isinstance(e[2], str) for e in inp + outp)
    assert [e[1] for e in outp] == out["output_ids"]
    assert len(meta["output_top_logprobs"]) == 8
    for top, chosen in zip(meta["output_top_logprobs"], outp, strict=True):
        assert len(top) == 2 and top[0][0] >= top[1][0]
        assert top[0][1] == chosen[1]  # greedy: the chosen token is the most likely one
    later = _post(server, "/generate", {"input_ids": ids, "sampling_params": GREEDY, "return_logprob": True,
                                        "logprob_start_len": 3}).json()["meta_info"]
    assert [e[1] for e in later["input_token_logprobs"]] == ids[3:]
    assert all(e[2] is None for e in later["input_token_logprobs"])
    for a, b in zip(later["input_token_logprobs"], inp[3:], strict=True):
        assert a[0] == pytest.approx(b[0], abs=1e-4)


def test_stream_is_cumulative_and_ends_with_done(server) -> None:
    body = {"text": "Strings can be indexed", "sampling_params": GREEDY, "stream": True}
    with httpx.stream("POST", server.base_url + "/generate", json=body, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[len("data: "):]) for line in lines[:-1]]
    full = _post(server, "/generate", {"text": "Strings can be indexed", "sampling_params": GREEDY}).json()
    prev = ""
    for c in chunks:
        assert c["text"].startswith(prev)
        prev = c["text"]
    assert [c["meta_info"]["finish_reason"] is not None for c in chunks].count(True) == 1
    assert chunks[-1]["text"] == full["text"] and chunks[-1]["output_ids"] == full["output_ids"]


def test_stop_string_and_stop_token(server) -> None:
    base = _post(server, "/generate", {"text": "The function returns", "sampling_params": {
        **GREEDY, "max_new_tokens": 16}}).json()
    ids = base["output_ids"]
    stop_id = ids[3]
    out = _post(server, "/generate", {"text": "The function returns", "sampling_params": {
        **GREEDY, "max_new_tokens": 16, "stop_token_ids": [stop_id]}}).json()
    assert out["meta_info"]["finish_reason"] == {"type": "stop", "matched": stop_id}
    assert out["output_ids"][: ids.index(stop_id)] == ids[: ids.index(stop_id)]
    text = base["text"]
    stop = next((text[i:i + 2] for i in range(2, len(text) - 2) if "\ufffd" not in text[i:i + 2]
                 and text[i:i + 2].strip()), None)
    # The model is fixed and decoding greedy, so this text is the same on every run.
    assert stop is not None, f"no 2-character stop string in {text!r}"
    out = _post(server, "/generate", {"text": "The function returns", "sampling_params": {
        **GREEDY, "max_new_tokens": 16, "stop": [stop]}}).json()
    assert out["meta_info"]["finish_reason"] == {"type": "stop", "matched": stop}
    assert out["text"] == text[: text.index(stop)]


def test_sglang_frontend_keys_accepted_when_off(server) -> None:
    body = {"text": "hello", "image_data": None, "lora_path": None, "modalities": [], "return_hidden_states": False,
            "sampling_params": {"max_new_tokens": 2, "min_new_tokens": 0, "n": 1, "stop": [], "stop_token_ids": [],
                                "stop_regex": None, "temperature": 0, "top_p": 1.0, "top_k": -1, "min_p": 0.0,
                                "frequency_penalty": 0.0, "presence_penalty": 0.0, "ignore_eos": False,
                                "regex": None, "json_schema": None, "skip_special_tokens": True,
                                "spaces_between_special_tokens": True},
            "return_logprob": False, "logprob_start_len": -1, "top_logprobs_num": 0, "return_text_in_logprobs": False}
    assert _post(server, "/generate", body).status_code == 200


@pytest.mark.parametrize("body,param", [
    ({"text": "x", "input_ids": [1]}, "text"),
    ({"sampling_params": {}}, "text"),
    ({"text": "x", "sampling_params": {"foo_bar": 1}}, "foo_bar"),
    ({"text": "x", "sampling_params": {"top_p": 1.5}}, "top_p"),
    ({"text": "x", "image_data": "http://example/x.png"}, "image_data"),
    ({"text": "x", "unknown_top_level": 1}, "unknown_top_level"),
    ({"input_ids": [10**6]}, "input_ids"),
    ({"text": "x" * 4000}, "text"),
])
def test_generate_errors(server, body, param) -> None:
    r = _post(server, "/generate", body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == param and err["message"]


def test_info_routes(server, model_name, tiny_llama) -> None:
    for path in ("/get_model_info", "/model_info"):
        info = httpx.get(server.base_url + path).json()
        assert info["model_path"] == tiny_llama and info["is_generation"] is True
        assert info["served_model_name"] == model_name
        assert info["max_context_length"] == 512
    for path in ("/get_server_info", "/server_info"):
        info = httpx.get(server.base_url + path).json()
        for key in ("num_running_reqs", "num_queued_reqs", "token_usage", "kv_used_tokens", "kv_total_tokens",
                    "cache_hit_rate", "gen_throughput", "engine_pids", "internal_states", "model_path",
                    "chunked_prefill_size"):
            assert key in info, key
        # Automatic settings are reported as the engine resolved them (a CPU engine: 8192-token chunks).
        assert info["chunked_prefill_size"] == 8192 and info["interleave_prefill_tokens"] == 1024, info
        assert "api_key" not in info and info["state"] == "ready" and info["engine_pids"]
    assert httpx.get(server.base_url + "/health").status_code == 200
    assert httpx.get(server.base_url + "/ready").status_code == 200
    assert httpx.get(server.base_url + "/health_generate", timeout=60).status_code == 200


def test_flush_cache_refused_while_running_and_abort(server) -> None:
    body = {"text": "A long story", "rid": "long-one", "stream": True,
            "sampling_params": {"max_new_tokens": 400, "ignore_eos": True}}
    chunks: list[dict[str, Any]] = []

    def consume() -> None:
        with httpx.stream("POST", server.base_url + "/generate", json=body, timeout=120) as r:
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    chunks.append(json.loads(line[6:]))

    worker = threading.Thread(target=consume)
    worker.start()
    deadline = time.monotonic() + 30
    while not chunks and time.monotonic() < deadline:
        time.sleep(0.05)
    r = httpx.post(server.base_url + "/flush_cache")
    assert r.status_code == 400 and "running" in r.json()["error"]["message"]
    assert _post(server, "/abort_request", {"rid": "long-one"}).status_code == 200
    worker.join(30)
    assert not worker.is_alive()
    assert chunks[-1]["meta_info"]["finish_reason"]["type"] == "abort"
    assert len(chunks[-1]["output_ids"]) < 400
    deadline = time.monotonic() + 10
    while httpx.post(server.base_url + "/flush_cache").status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_metrics(server, model_name) -> None:
    text = httpx.get(server.base_url + "/metrics").text
    for name in ("tessera_num_running_reqs", "tessera_num_queue_reqs", "tessera_token_usage",
                 "tessera_cache_hit_rate", "tessera_gen_throughput", "tessera_prompt_tokens_total",
                 "tessera_generation_tokens_total", "tessera_cached_tokens_total", "tessera_num_requests_total",
                 "tessera_time_to_first_token_seconds_bucket", "tessera_inter_token_latency_seconds_bucket",
                 "tessera_e2e_request_latency_seconds_bucket"):
        assert f"{name}{{" in text, name
    assert f'model_name="{model_name}"' in text


def _samples(server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(server.base_url + "/metrics").text
    return {(s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "model_name"))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_metric_values_after_known_traffic_and_engine_time_ttft(server) -> None:
    """Counters move by exactly what one request did; TTFT is when the first token came, not the end,
    also for a non-streaming request (its meta_info and the histogram agree)."""
    before = _samples(server)
    out = httpx.post(server.base_url + "/generate", timeout=120, json={
        "text": "Counting tokens", "sampling_params": {"max_new_tokens": 120, "ignore_eos": True}}).json()
    meta = out["meta_info"]
    after = _samples(server)

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert meta["completion_tokens"] == 120
    assert delta("tessera_generation_tokens_total") == 120
    assert delta("tessera_prompt_tokens_total") == meta["prompt_tokens"]
    assert delta("tessera_cached_tokens_total") == meta["cached_tokens"]
    assert delta("tessera_num_requests_total", finish_reason="length") == 1
    assert delta("tessera_http_requests_total", route="/generate", status="200") == 1
    assert delta("tessera_time_to_first_token_seconds_count") == 1
    assert delta("tessera_e2e_request_latency_seconds_count") == 1
    assert delta("tessera_inter_token_latency_seconds_count") == 119
    # 120 decode steps come after the first token: its time is a small part of the whole.
    assert 0 < meta["ttft"] < 0.5 * meta["e2e_latency"]
    assert 0 < delta("tessera_time_to_first_token_seconds_sum") < 0.5 * delta("tessera_e2e_request_latency_seconds_sum")


def test_error_shapes_everywhere(server) -> None:
    for method, path, kw in [("GET", "/nope", {}), ("POST", "/v1/chat/completions", {"content": b"{not json"}),
                             ("GET", "/generate", {}), ("POST", "/v1/completions", {"json": []})]:
        r = httpx.request(method, server.base_url + path, headers={"content-type": "application/json"}, **kw)
        assert 400 <= r.status_code < 500, (path, r.status_code)
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"} and err["message"]
