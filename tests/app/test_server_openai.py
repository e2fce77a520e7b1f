"""The real server through the official OpenAI SDK, checked against the offline `engine.Engine`."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import openai
import pytest

from tests.app.server_proc import ServerProc

PROMPTS = [f"The quick brown fox number {i} jumps over" for i in range(16)]


@pytest.fixture(scope="module")
def reference(tiny_llama) -> dict[str, list[int]]:
    """Greedy outputs of the offline engine for PROMPTS (12 tokens each, EOS ignored)."""
    from engine import Engine

    with Engine(model_path=tiny_llama, device="cpu") as eng:
        outs = eng.generate(PROMPTS, {"max_new_tokens": 12, "temperature": 0, "ignore_eos": True})
    return {p: o["output_ids"] for p, o in zip(PROMPTS, outs, strict=True)}


@pytest.fixture(scope="module")
def sdk(server: ServerProc) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0, timeout=60)


def _ids(server: ServerProc, text: str) -> list[int]:
    return httpx.post(server.base_url + "/v1/tokenize", json={"prompt": text}).json()["tokens"]


def test_completion_greedy_matches_engine(sdk, server, model_name, reference) -> None:
    for prompt in PROMPTS[:3]:
        out = sdk.completions.create(model=model_name, prompt=prompt, max_tokens=12, temperature=0,
                                     extra_body={"ignore_eos": True})
        choice = out.choices[0]
        assert choice.finish_reason == "length"
        assert out.usage.completion_tokens == 12
        assert out.usage.prompt_tokens == len(_ids(server, prompt))
        # Tokens of the HTTP text equal the engine's ids (decode → the same text).
        native = httpx.post(server.base_url + "/generate", json={
            "text": prompt, "sampling_params": {"max_new_tokens": 12, "temperature": 0, "ignore_eos": True}}).json()
        assert native["output_ids"] == reference[prompt]
        assert choice.text == native["text"]


def test_chat_non_streaming_and_usage(sdk, model_name) -> None:
    out = sdk.chat.completions.create(model=model_name, messages=[
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "hi"}, {"role": "user", "content": [{"type": "text", "text": "again"}]}],
        max_tokens=6, temperature=0)
    assert out.object == "chat.completion"
    assert out.model == model_name
    msg = out.choices[0].message
    assert msg.role == "assistant" and isinstance(msg.content, str)
    assert out.choices[0].finish_reason in ("stop", "length")
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens
    assert out.usage.prompt_tokens_details.cached_tokens >= 0


def test_chat_streaming_equals_non_streaming(sdk, model_name) -> None:
    kwargs = dict(model=model_name, messages=[{"role": "user", "content": "tell me about lists"}], max_tokens=10,
                  temperature=0, extra_body={"ignore_eos": True})
    full = sdk.chat.completions.create(**kwargs)
    chunks = list(sdk.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    assert chunks[0].choices[0].delta.role == "assistant"
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == 1 and not usage_chunks[0].choices
    assert usage_chunks[0].usage.completion_tokens == 10


def test_completion_streaming_n2_logprobs(sdk, model_name) -> None:
    stream = sdk.completions.create(model=model_name, prompt="Strings can be", max_tokens=5, n=2,
                                    temperature=0.8, seed=7, logprobs=2, stream=True,
                                    stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
    texts, finishes, num_lp = {0: "", 1: ""}, {0: 0, 1: 0}, {0: 0, 1: 0}
    usage = None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            texts[c.index] += c.text
            finishes[c.index] += c.finish_reason is not None
            if c.logprobs is not None:
                num_lp[c.index] += len(c.logprobs.tokens)
    assert finishes == {0: 1, 1: 1}
    assert num_lp == {0: 5, 1: 5}
    assert usage is not None and usage.completion_tokens == 10


def test_chat_n2_logprobs(sdk, model_name) -> None:
    out = sdk.chat.completions.create(model=model_name, messages=[{"role": "user", "content": "hi"}], n=2,
                                      max_tokens=4, logprobs=True, top_logprobs=3,
                                      extra_body={"ignore_eos": True})
    assert [c.index for c in out.choices] == [0, 1]
    for c in out.choices:
        content = c.logprobs.content
        assert len(content) == 4
        for entry in content:
            assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
            assert entry.top_logprobs[0].logprob >= entry.top_logprobs[-1].logprob
            assert bytes(entry.bytes).decode("utf-8", "replace") == entry.token
    assert out.usage.completion_tokens == 8


def test_completion_echo_logprobs_and_cached_tokens(sdk, server, model_name) -> None:
    prompt = "Caching a shared prefix saves time: requests that share a system prompt reuse keys."
    first = sdk.completions.create(model=model_name, prompt=prompt, max_tokens=2, temperature=0)
    second = sdk.completions.create(model=model_name, prompt=prompt, max_tokens=2, temperature=0)
    n_prompt = len(_ids(server, prompt))
    assert first.usage.prompt_tokens == n_prompt
    # The second request finds the prompt in the radix cache (all but the last token is reusable).
    assert second.usage.prompt_tokens_details.cached_tokens >= n_prompt - 2
    assert second.choices[0].text == first.choices[0].text
    # Prompt logprobs (echo) need every prompt position computed, so no cache reuse is expected here.
    echoed = sdk.completions.create(model=model_name, prompt=prompt, max_tokens=2, temperature=0, echo=True,
                                    logprobs=1)
    lp = echoed.choices[0].logprobs
    assert echoed.choices[0].text == prompt + first.choices[0].text
    assert len(lp.tokens) == n_prompt + 2
    assert lp.token_logprobs[0] is None and all(x is not None for x in lp.token_logprobs[1:])


def test_models_and_errors(sdk, model_name) -> None:
    assert [m.id for m in sdk.models.list()] == [model_name]
    with pytest.raises(openai.NotFoundError):
        sdk.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError) as err:
        sdk.chat.completions.create(model=model_name, messages=[{"role": "user", "content": "x"}], max_tokens=10**6)
    assert "maximum context length is 512" in str(err.value)
    with pytest.raises(openai.BadRequestError) as err:
        sdk.chat.completions.create(model=model_name, messages=[{"role": "user", "content": "x"}],
                                    tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
                                    tool_choice={"type": "function", "function": {"name": "g"}})
    assert err.value.body["param"] == "tool_choice"
    with pytest.raises(openai.BadRequestError) as err:
        sdk.chat.completions.create(model=model_name, messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}])
    assert "image_url" in err.value.body["message"]


async def _stream_one(client: httpx.AsyncClient, model: str, prompt: str) -> list[int]:
    body = {"model": model, "prompt": prompt, "max_tokens": 12, "temperature": 0, "ignore_eos": True, "stream": True}
    text, finishes = "", 0
    async with client.stream("POST", "/v1/completions", json=body) as resp:
        assert resp.status_code == 200
        lines = [line async for line in resp.aiter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    import json

    for line in lines[:-1]:
        choice = json.loads(line[6:])["choices"][0]
        text += choice["text"]
        finishes += choice["finish_reason"] is not None
    assert finishes == 1
    return text


def test_64_concurrent_streams(server, model_name, reference) -> None:
    tok = httpx.post(server.base_url + "/v1/detokenize", json={"tokens": reference[PROMPTS[0]]})
    assert tok.status_code == 200
    expected = {p: httpx.post(server.base_url + "/v1/detokenize", json={"tokens": ids, "skip_special_tokens": True}).json()["text"]
                for p, ids in reference.items()}

    async def run() -> list[str]:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=180, limits=limits) as client:
            return await asyncio.gather(*(_stream_one(client, model_name, PROMPTS[i % len(PROMPTS)])
                                          for i in range(64)))

    t0 = time.monotonic()
    texts = asyncio.run(run())
    assert len(texts) == 64
    for i, text in enumerate(texts):
        assert text == expected[PROMPTS[i % len(PROMPTS)]], i
    assert time.monotonic() - t0 < 120


def test_server_info_reports_the_attention_backend_in_use(server) -> None:
    # --attention-backend is unset: the engine's choice (torch_native on the CPU) is reported, not null.
    assert httpx.get(server.base_url + "/get_server_info").json()["attention_backend"] == "torch_native"


def test_disconnect_mid_stream_frees_kv(server, model_name) -> None:
    def held() -> tuple[int, int]:
        info = httpx.get(server.base_url + "/get_server_info").json()
        return info["num_running_reqs"], info["kv_used_tokens"] - info["kv_evictable_tokens"]

    baseline = held()
    assert baseline[0] == 0
    body = {"model": model_name, "prompt": "A list is a mutable sequence", "max_tokens": 400,
            "ignore_eos": True, "stream": True}
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        with client.stream("POST", "/v1/completions", json=body) as resp:
            # Keep the line iterator referenced: dropping it would already close the connection.
            lines = resp.iter_lines()
            seen = 0
            while seen < 3:
                seen += next(lines).startswith("data: ")
            running = held()
            assert running[0] == 1 and running[1] > baseline[1]
            resp.close()
    deadline = time.monotonic() + 10
    while held() != baseline and time.monotonic() < deadline:
        time.sleep(0.1)
    assert held() == baseline
    assert httpx.post(server.base_url + "/flush_cache").status_code == 200


def test_disconnect_non_streaming_aborts(server, model_name) -> None:
    body = {"model": model_name, "prompt": "Dictionaries map keys to values", "max_tokens": 450, "ignore_eos": True}
    before = httpx.get(server.base_url + "/get_server_info").json()["num_generated_tokens"]
    # 450 decode steps take well over 0.2 s on any CPU, so the client gives up mid-generation.
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.base_url + "/v1/completions", json=body, timeout=0.2)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        info = httpx.get(server.base_url + "/get_server_info").json()
        if info["num_running_reqs"] == 0 and info["num_inflight_http_requests"] == 0:
            break
        time.sleep(0.05)
    # Only an abort stops the request before its 450 tokens.
    assert info["num_generated_tokens"] - before < 450
    assert info["num_running_reqs"] == 0 and info["num_inflight_http_requests"] == 0


def _stop_case(server, model_name) -> tuple[str, str, str]:
    """A prompt, a stop string taken from the middle of its greedy continuation, and the text before it."""
    prompt = "The quick brown fox number 3 jumps over"
    full = httpx.post(server.base_url + "/v1/completions", timeout=60, json={
        "model": model_name, "prompt": prompt, "max_tokens": 16, "temperature": 0, "ignore_eos": True}).json()
    text = full["choices"][0]["text"]
    stop = text[6:9]
    assert len(text) > 12 and stop.strip(), text
    return prompt, stop, text[: text.index(stop)]


def test_stop_strings_on_the_real_server(server, model_name) -> None:
    prompt, stop, before = _stop_case(server, model_name)
    sdk = openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0, timeout=60)
    kwargs = dict(model=model_name, prompt=prompt, max_tokens=16, temperature=0, extra_body={"ignore_eos": True})
    out = sdk.completions.create(**kwargs, stop=[stop, "never-there"])
    assert out.choices[0].text == before and out.choices[0].finish_reason == "stop"
    chunks = list(sdk.completions.create(**kwargs, stop=stop, stream=True))
    pieces = [c.choices[0].text for c in chunks if c.choices]
    assert "".join(pieces) == before and stop not in "".join(pieces)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    # Chat streams trim the same way.
    chat = dict(model=model_name, messages=[{"role": "user", "content": "hi"}], max_tokens=16, temperature=0,
                extra_body={"ignore_eos": True})
    full = sdk.chat.completions.create(**chat).choices[0].message.content
    chat_stop = full[5:8]
    if chat_stop.strip():
        streamed = list(sdk.chat.completions.create(**chat, stop=chat_stop, stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == full[: full.index(chat_stop)]
        assert [c.choices[0].finish_reason for c in streamed if c.choices][-1] == "stop"
    # Native streaming: cumulative text never shows the stop string; the final chunk names it.
    with httpx.stream("POST", server.base_url + "/generate", timeout=60, json={
            "text": prompt, "stream": True,
            "sampling_params": {"max_new_tokens": 16, "temperature": 0, "ignore_eos": True, "stop": stop}}) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    assert all(stop not in e["text"] for e in events)
    assert events[-1]["text"] == before
    assert events[-1]["meta_info"]["finish_reason"] == {"type": "stop", "matched": stop}
