"""The real server with `--dp-size 2` on CPU: kill one replica's engine under 64 concurrent clients.
Every request ends 200 or 503 (none hangs), the survivor keeps serving, /health is 503 while a replica is
out (`--max-unhealthy-gpus 0`), and the dead replica restarts and rejoins."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import httpx
import pytest

from tests.app.server_proc import ServerProc


@pytest.fixture(scope="module")
def dp_server(tiny_llama, tmp_path_factory) -> ServerProc:
    log = tmp_path_factory.mktemp("dp") / "server.log"
    proc = ServerProc(tiny_llama, log, "--dp-size", "2", "--max-unhealthy-gpus", "0", "--health-check-interval",
                      "5", "--load-balancing-policy", "round_robin").start()
    yield proc
    proc.stop()


async def _one(client: httpx.AsyncClient, i: int) -> int:
    body = {"text": f"Request number {i} says", "sampling_params": {"max_new_tokens": 24, "ignore_eos": True}}
    if i % 4 == 0:  # some streams: a stream cut after its first chunk ends with an error event, not a hang
        async with client.stream("POST", "/generate", json={**body, "stream": True}) as r:
            lines = [line async for line in r.aiter_lines() if line]
            assert lines[-1] == "data: [DONE]"
            return 503 if '"engine_unavailable"' in lines[-2] else r.status_code
    r = await client.post("/generate", json=body)
    return r.status_code


async def _load_and_kill(server: ServerProc, victim_pid: int) -> tuple[list[int], list[int]]:
    health: list[int] = []
    async with httpx.AsyncClient(base_url=server.base_url, timeout=120) as client:
        tasks = [asyncio.create_task(_one(client, i)) for i in range(64)]
        await asyncio.sleep(0.5)
        os.kill(victim_pid, signal.SIGKILL)
        for _ in range(20):  # the watchdog notices within 0.25 s
            await asyncio.sleep(0.1)
            health.append((await client.get("/health")).status_code)
            if health[-1] == 503:
                break
        done = await asyncio.wait_for(asyncio.gather(*tasks), 110)
    return list(done), health


def test_replica_killed_under_load(dp_server):
    server = dp_server
    info = httpx.get(server.base_url + "/get_server_info", timeout=10).json()
    states = info["internal_states"]
    assert [s["replica"] for s in states] == [0, 1] and all(s["health"] == "healthy" for s in states)
    victim = states[0]["engine_pids"][0]
    t0 = time.monotonic()
    statuses, health = asyncio.run(_load_and_kill(server, victim))
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(200) >= 48, statuses  # non-streamed requests are retried on the survivor
    assert 503 in health, health
    # The survivor serves while replica 0 restarts.
    r = httpx.post(server.base_url + "/generate", json={"text": "still here", "sampling_params": {"max_new_tokens": 2}},
                   timeout=30)
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 50
    while True:
        states = httpx.get(server.base_url + "/get_server_info", timeout=10).json()["internal_states"]
        if all(s["health"] == "healthy" for s in states) and states[0]["restarts"] == 1:
            break
        assert time.monotonic() < deadline, states
        time.sleep(0.25)
    assert victim not in states[0]["engine_pids"]
    assert httpx.get(server.base_url + "/health", timeout=10).status_code == 200
    assert "replica 0: healthy -> unhealthy" in server.log_path.read_text()
    assert time.monotonic() - t0 < 60
