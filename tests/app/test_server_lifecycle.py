"""Operator-facing behaviour of the real server process: engine crash recovery and SIGTERM drain.

One server for the module; the crash test runs first, then the drain test shuts the server down.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from typing import Any

import httpx
import pytest

from tests.app.server_proc import ServerProc


@pytest.fixture(scope="module")
def lifecycle_server(tiny_llama, tmp_path_factory) -> ServerProc:
    log = tmp_path_factory.mktemp("lifecycle") / "server.log"
    proc = ServerProc(tiny_llama, log, "--drain-timeout", "60").start()
    yield proc
    proc.stop()


def _stream_lines(server: ServerProc, body: dict[str, Any], out: list[str], started: threading.Event) -> None:
    with httpx.stream("POST", server.base_url + "/generate", json={**body, "stream": True}, timeout=120) as r:
        out.append(f"status {r.status_code}")
        for line in r.iter_lines():
            if line:
                out.append(line)
                started.set()
    started.set()


def test_engine_death_gives_503_then_recovers(lifecycle_server) -> None:
    server = lifecycle_server
    pids = httpx.get(server.base_url + "/get_server_info").json()["engine_pids"]
    assert pids
    lines: list[str] = []
    started = threading.Event()
    body = {"text": "A long story", "sampling_params": {"max_new_tokens": 400, "ignore_eos": True}}
    worker = threading.Thread(target=_stream_lines, args=(server, body, lines, started))
    worker.start()
    assert started.wait(60)
    os.kill(pids[0], signal.SIGKILL)
    worker.join(30)
    assert not worker.is_alive(), "the in-flight stream must end, not hang"
    assert lines[-1] == "data: [DONE]"
    error = json.loads(lines[-2][len("data: "):])["error"]
    assert error["type"] == "service_unavailable" and "retry" in error["message"]
    # While the engine restarts, requests get a clean 503 (never a hang or a 500).
    r = httpx.post(server.base_url + "/generate", json={"text": "x", "sampling_params": {"max_new_tokens": 1}},
                   timeout=30)
    assert r.status_code == 503, r.text
    assert r.json()["error"]["type"] == "service_unavailable" and r.headers.get("retry-after")
    server.wait_ready(180)
    info = httpx.get(server.base_url + "/get_server_info").json()
    assert info["restarts"] >= 1 and info["engine_pids"] and info["engine_pids"] != pids
    r = httpx.post(server.base_url + "/generate", json={"text": "x", "sampling_params": {"max_new_tokens": 2}},
                   timeout=60)
    assert r.status_code == 200 and r.json()["meta_info"]["completion_tokens"] == 2


def test_sigterm_drains_in_flight_then_exits_zero(lifecycle_server) -> None:
    server = lifecycle_server
    lines: list[str] = []
    started = threading.Event()
    # Long enough (hundreds of decode steps) that the drain is still running when we probe it.
    body = {"text": "Drain me", "sampling_params": {"max_new_tokens": 450, "ignore_eos": True}}
    worker = threading.Thread(target=_stream_lines, args=(server, body, lines, started))
    worker.start()
    assert started.wait(60)
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.05)
    r = httpx.post(server.base_url + "/generate", json={"text": "x"}, timeout=30)
    assert r.status_code == 503 and "shutting down" in r.json()["error"]["message"]
    worker.join(120)
    assert lines[-1] == "data: [DONE]"
    final = json.loads(lines[-2][len("data: "):])
    assert final["meta_info"]["finish_reason"] == {"type": "length", "length": 450}
    assert server.proc.wait(60) == 0, server.log_tail()
