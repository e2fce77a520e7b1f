"""Online serving benchmark: requests arrive as a Poisson process at fixed rates; reports TTFT, ITL
(gap between streamed chunks) and end-to-end latency, median and p99, plus throughput.

Works against any OpenAI-compatible server (`/v1/completions`, streaming) or the native SGLang-style
`/generate`, and in-process against `engine.Engine` (`run_engine_online`, used by run_suite.py):

    python bench/serving.py --base-url http://127.0.0.1:30000 --backend openai --request-rate 1 2 4
    python bench/serving.py --base-url http://127.0.0.1:30000 --backend native --request-rate 4
    python bench/serving.py --backend engine --model-path bench/models/llama-3.1-8b --request-rate 4

The default workload is the offline one (inputs uniform 256-1024 tokens, 256 out, ignore_eos), sent
as token ids; `--prompt-format text` sends random words for servers that take no token-id prompts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.workloads import offline_prompts, summarize_ms  # noqa: E402

WORDS = "the of and to in is you that it he was for on are as with his they at be this from".split()


@dataclass
class RequestRecord:
    ok: bool = False
    ttft_s: float = 0.0
    itl_s: list[float] = field(default_factory=list)
    e2e_s: float = 0.0
    output_tokens: int = 0
    error: str = ""


def summarize(records: list[RequestRecord], duration_s: float, rate: float) -> dict:
    ok = [r for r in records if r.ok]
    out_tokens = sum(r.output_tokens for r in ok)
    tpot = [(r.e2e_s - r.ttft_s) / (r.output_tokens - 1) for r in ok if r.output_tokens > 1]
    return {
        "request_rate": rate, "completed": len(ok), "failed": len(records) - len(ok),
        "duration_s": round(duration_s, 2), "request_throughput": round(len(ok) / duration_s, 3),
        "output_tok_s": round(out_tokens / duration_s, 1),
        "ttft": summarize_ms([r.ttft_s for r in ok]), "itl": summarize_ms([g for r in ok for g in r.itl_s]),
        "tpot": summarize_ms(tpot), "e2e": summarize_ms([r.e2e_s for r in ok]),
        "errors": sorted({r.error for r in records if not r.ok})[:3],
    }


async def _paced(prompts: list, rate: float, seed: int, send) -> tuple[list[RequestRecord], float]:
    """Starts send(prompt) at Poisson arrival times (rate req/s; inf = all at once)."""
    rng = random.Random(seed)
    tasks = []
    t0 = time.perf_counter()
    for prompt in prompts:
        tasks.append(asyncio.create_task(send(prompt)))
        if rate != float("inf"):
            await asyncio.sleep(rng.expovariate(rate))
    records = await asyncio.gather(*tasks)
    return list(records), time.perf_counter() - t0


class _Timeline:
    """Turns chunk arrival times into TTFT / ITL / E2E."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.last: float | None = None
        self.rec = RequestRecord()

    def chunk(self, num_tokens: int) -> None:
        if num_tokens <= 0:
            return
        now = time.perf_counter()
        if self.last is None:
            self.rec.ttft_s = now - self.start
        else:
            self.rec.itl_s.append(now - self.last)
        self.last = now
        self.rec.output_tokens += num_tokens

    def done(self, total_tokens: int | None = None) -> RequestRecord:
        self.rec.e2e_s = time.perf_counter() - self.start
        if total_tokens is not None:
            self.rec.output_tokens = total_tokens
        self.rec.ok = self.rec.output_tokens > 0
        return self.rec


# ---- HTTP backends ------------------------------------------------------------------------------
async def _sse_lines(response):
    async for line in response.aiter_lines():
        if line.startswith("data:"):
            data = line[5:].strip()
            if data == "[DONE]":
                return
            yield json.loads(data)


def _http_sender(client, base_url: str, backend: str, model: str, output_len: int):
    async def send(prompt) -> RequestRecord:
        tl = _Timeline()
        try:
            if backend == "openai":
                body = {"model": model, "prompt": prompt, "max_tokens": output_len, "temperature": 0,
                        "stream": True, "ignore_eos": True, "stream_options": {"include_usage": True}}
                url = f"{base_url}/v1/completions"
            else:
                key = "input_ids" if isinstance(prompt, list) else "text"
                body = {key: prompt, "stream": True,
                        "sampling_params": {"max_new_tokens": output_len, "temperature": 0, "ignore_eos": True}}
                url = f"{base_url}/generate"
            total = None
            seen = 0
            async with client.stream("POST", url, json=body) as response:
                if response.status_code != 200:
                    tl.rec.error = f"HTTP {response.status_code}: {(await response.aread())[:200]!r}"
                    return tl.rec
                async for event in _sse_lines(response):
                    if backend == "openai":
                        if event.get("usage"):
                            total = event["usage"].get("completion_tokens", total)
                        choices = event.get("choices") or []
                        tl.chunk(1 if choices and choices[0].get("text") else 0)
                    else:  # native: cumulative meta_info.completion_tokens
                        n = (event.get("meta_info") or {}).get("completion_tokens", seen)
                        tl.chunk(n - seen)
                        seen = n
            return tl.done(total)
        except Exception as exc:  # a failed request is counted, not fatal
            tl.rec.error = f"{type(exc).__name__}: {exc}"[:200]
            return tl.rec

    return send


async def _wait_ready(client, base_url: str, timeout_s: float) -> None:
    """Servers answer 503 while their engine starts; wait for /health to say 200."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if (await client.get(f"{base_url}/health")).status_code == 200:
                return
        except Exception:  # not listening yet
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{base_url}/health did not answer 200 within {timeout_s:.0f}s")
        await asyncio.sleep(1.0)


async def run_http(base_url: str, backend: str, prompts: list, rate: float, output_len: int, model: str | None,
                   api_key: str | None, seed: int, wait_ready_s: float = 300.0) -> dict:
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(timeout=None, headers=headers, limits=limits) as client:
        await _wait_ready(client, base_url, wait_ready_s)
        if backend == "openai" and not model:
            model = (await client.get(f"{base_url}/v1/models")).json()["data"][0]["id"]
        records, duration = await _paced(prompts, rate, seed, _http_sender(client, base_url, backend, model or "",
                                                                           output_len))
    return summarize(records, duration, rate)


# ---- in-process backend -------------------------------------------------------------------------
def run_engine_online(engine, prompts: list[list[int]], rate: float, output_len: int, seed: int = 0) -> dict:
    """The same client logic against an in-process Engine (no HTTP, no tokenizer): the engine's own
    latencies. Engine's async API lives on its private event loop, so the run is submitted there."""
    params = {"max_new_tokens": output_len, "temperature": 0, "ignore_eos": True}

    async def send(prompt: list[int]) -> RequestRecord:
        tl = _Timeline()
        try:
            stream = await engine.async_generate(input_ids=prompt, sampling_params=params, stream=True)
            async for chunk in stream:
                tl.chunk(len(chunk["output_ids"]))
            return tl.done()
        except Exception as exc:
            tl.rec.error = f"{type(exc).__name__}: {exc}"[:200]
            return tl.rec

    async def main() -> dict:
        records, duration = await _paced(prompts, rate, seed, send)
        return summarize(records, duration, rate)

    return asyncio.run_coroutine_threadsafe(main(), engine._loop).result()


def summary_line(result: dict, label: str = "") -> str:
    """The numbers a tail-latency comparison reads, on one line."""
    return (f"SUMMARY {label} rate {result['request_rate']}: ITL median {result['itl']['median_ms']} / p99 "
            f"{result['itl']['p99_ms']} ms, TTFT median {result['ttft']['median_ms']} / p99 {result['ttft']['p99_ms']} ms, "
            f"output {result['output_tok_s']} tok/s ({result['completed']} done, {result['failed']} failed)")


def _text_prompts(prompts: list[list[int]], seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in p) for p in prompts]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["openai", "native", "engine"], default="openai")
    parser.add_argument("--base-url", default="http://127.0.0.1:30000")
    parser.add_argument("--model", default=None, help="OpenAI model name (default: the first of /v1/models)")
    parser.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"))
    parser.add_argument("--request-rate", type=float, nargs="+", default=[4.0], help="req/s; inf = all at once")
    parser.add_argument("--num-prompts", type=int, default=200)
    parser.add_argument("--min-input", type=int, default=256)
    parser.add_argument("--max-input", type=int, default=1024)
    parser.add_argument("--output-len", type=int, default=256)
    parser.add_argument("--vocab-size", type=int, default=128256, help="token-id range of the random prompts")
    parser.add_argument("--prompt-format", choices=["ids", "text"], default="ids")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--wait-ready", type=float, default=300.0, help="seconds to wait for /health = 200")
    parser.add_argument("--model-path", default="bench/models/llama-3.1-8b", help="engine backend only")
    parser.add_argument("--engine-args", default="{}", help="engine backend: JSON of extra ServerArgs fields")
    ns = parser.parse_args()

    prompts = offline_prompts(ns.num_prompts, ns.min_input, ns.max_input, ns.vocab_size, ns.seed)
    if ns.backend == "engine":
        from engine import Engine

        with Engine(model_path=ns.model_path, load_format="dummy", skip_tokenizer_init=True,
                    **json.loads(ns.engine_args)) as engine:
            # Warm-up: kernels compile (prefill shapes, mixed batches) before any latency is recorded.
            engine.generate(input_ids=prompts[:8], sampling_params={"max_new_tokens": 8, "ignore_eos": True})
            engine.flush_cache()
            for rate in ns.request_rate:
                result = run_engine_online(engine, prompts, rate, ns.output_len, ns.seed)
                print(json.dumps(result))
                print(summary_line(result, ns.engine_args), flush=True)
        return
    send_prompts = _text_prompts(prompts, ns.seed) if ns.prompt_format == "text" else prompts
    for rate in ns.request_rate:
        print(json.dumps(asyncio.run(run_http(ns.base_url.rstrip("/"), ns.backend, send_prompts, rate,
                                              ns.output_len, ns.model, ns.api_key, ns.seed, ns.wait_ready))))


if __name__ == "__main__":
    main()
