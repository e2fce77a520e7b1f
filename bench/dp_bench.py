"""Data-parallel load balancing on CPU: 2 replicas of the demo model, a shared-prefix workload (8 prefixes
x 16 questions, interleaved: one question of every prefix per round, 16 rounds, the prefix order shuffled
per round with a fixed seed — a strictly periodic order would pin each prefix to one replica under
round_robin by accident), one server per policy. Each replica's KV cache holds about 5 of the 8 prefixes
(--max-total-tokens), the situation where routing by prefix matters: a replica that sees every prefix
evicts and recomputes them.

    python bench/dp_bench.py                      # round_robin, min-load, cache-aware; prints JSON lines
    python bench/dp_bench.py --router             # also: sglang-router (cache_aware) in front of two
                                                  # single-replica `tessera serve` workers

Hit rate = prompt tokens served from the replicas' radix caches / prompt tokens (the engines' own counters,
summed over replicas, this run only). Throughput = output tokens / wall time. Requests go out with at
most --concurrency in flight, in workload order.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time
from typing import Any

import httpx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def workload(num_prefixes: int, questions: int, prefix_len: int, question_len: int, vocab: int,
             seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    prefixes = [[rng.randrange(10, vocab) for _ in range(prefix_len)] for _ in range(num_prefixes)]
    out = []
    for _round in range(questions):  # interleaved: every prefix once per round, in a shuffled order
        for i in rng.sample(range(num_prefixes), num_prefixes):
            out.append(prefixes[i] + [rng.randrange(10, vocab) for _ in range(question_len)])
    return out


def start_server(model: str, log_path: str, *flags: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "app.cli", "serve", "--model-path", model, "--device", "cpu", "--port", str(port),
           "--disable-admin", *flags]
    log = open(log_path, "w")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, proc, "/ready")
    return proc, url


def wait_ready(url: str, proc: subprocess.Popen, path: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited with {proc.returncode}")
        try:
            if httpx.get(url + path, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} not ready")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()


def cache_counters(urls: list[str]) -> tuple[int, int]:
    queried = hits = 0
    for url in urls:
        info = httpx.get(url + "/get_server_info", timeout=30).json()
        queried += int(info.get("cache_query_tokens", 0))
        hits += int(info.get("cache_hit_tokens", 0))
    return queried, hits


async def drive(url: str, prompts: list[list[int]], output_len: int, concurrency: int) -> int:
    sem = asyncio.Semaphore(concurrency)
    params = {"max_new_tokens": output_len, "temperature": 0, "ignore_eos": True}
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        async def one(ids: list[int]) -> int:
            async with sem:
                r = await client.post("/generate", json={"input_ids": ids, "sampling_params": params})
                r.raise_for_status()
                return len(r.json()["output_ids"])

        tasks = []
        for ids in prompts:  # submitted in workload order, so the dispatch order is the workload's
            tasks.append(asyncio.create_task(one(ids)))
            await asyncio.sleep(0)
        return sum(await asyncio.gather(*tasks))


def measure(url: str, engine_urls: list[str], prompts: list[list[int]], args: argparse.Namespace) -> dict[str, Any]:
    for u in engine_urls:
        httpx.post(u + "/flush_cache", timeout=60)
    q0, h0 = cache_counters(engine_urls)
    t0 = time.perf_counter()
    out_tokens = asyncio.run(drive(url, prompts, args.output_len, args.concurrency))
    elapsed = time.perf_counter() - t0
    q1, h1 = cache_counters(engine_urls)
    return {"requests": len(prompts), "elapsed_s": round(elapsed, 2), "output_tok_s": round(out_tokens / elapsed, 1),
            "hit_rate": round((h1 - h0) / (q1 - q0), 4) if q1 > q0 else 0.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-path", default=os.path.join(ROOT, "models", "demo"))
    ap.add_argument("--policies", default="round_robin,min-load,cache-aware")
    ap.add_argument("--prefixes", type=int, default=8)
    ap.add_argument("--questions", type=int, default=16)
    ap.add_argument("--prefix-len", type=int, default=512)
    ap.add_argument("--max-total-tokens", type=int, default=3072, help="KV cache tokens per replica")
    ap.add_argument("--question-len", type=int, default=16)
    ap.add_argument("--output-len", type=int, default=16)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--router", action="store_true", help="also run sglang-router in front of two workers")
    ap.add_argument("--log-dir", default="/tmp")
    args = ap.parse_args()
    vocab = json.load(open(os.path.join(args.model_path, "config.json")))["vocab_size"]
    prompts = workload(args.prefixes, args.questions, args.prefix_len, args.question_len, vocab)
    results = []
    for policy in args.policies.split(","):
        proc, url = start_server(args.model_path, os.path.join(args.log_dir, f"dp_bench_{policy}.log"),
                                 "--dp-size", "2", "--load-balancing-policy", policy, "--skip-tokenizer-init",
                                 "--max-total-tokens", str(args.max_total_tokens))
        try:
            row = {"setup": f"--dp-size 2 --load-balancing-policy {policy}", **measure(url, [url], prompts, args)}
        finally:
            stop(proc)
        print(json.dumps(row), flush=True)
        results.append(row)
    if args.router:
        results.append(run_router(args, prompts))
    print(json.dumps({"results": results}))


def run_router(args: argparse.Namespace, prompts: list[list[int]]) -> dict[str, Any]:
    workers = [start_server(args.model_path, os.path.join(args.log_dir, f"dp_bench_worker{i}.log"),
                            "--skip-tokenizer-init", "--max-total-tokens", str(args.max_total_tokens))
               for i in range(2)]
    port = free_port()
    log = open(os.path.join(args.log_dir, "dp_bench_router.log"), "w")  # noqa: SIM115
    router = subprocess.Popen([sys.executable, "-m", "sglang_router.launch_router", "--host", "127.0.0.1", "--port",
                               str(port), "--worker-urls", *[u for _, u in workers], "--policy", "cache_aware"],
                              stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, router, "/v1/models", timeout=60)
        time.sleep(2)  # both workers registered
        row = {"setup": "sglang-router --policy cache_aware, 2 x tessera serve",
               **measure(url, [u for _, u in workers], prompts, args)}
    finally:
        stop(router)
        for proc, _ in workers:
            stop(proc)
    print(json.dumps(row), flush=True)
    return row


if __name__ == "__main__":
    main()
