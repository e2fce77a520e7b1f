"""Ctrl-C and the drain timeout on the real server (issue 10, items 5 and 6).

The server runs in its own session, like a program in a terminal's foreground process group, and the
test sends SIGINT to that whole group, as a terminal's Ctrl-C does. With a drain timeout far shorter
than the running requests: the open stream ends with an OpenAI-shaped error event and `[DONE]`, the
non-streaming request gets a 503 body, their usage rows are written with status 503, the access log
shows how they really ended, nothing prints a traceback, the engine ranks are gone, and the exit code
is 0.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
import time

import httpx

from tests.app.proc_tree import TreeWatcher, assert_no_orphans
from tests.app.server_proc import ServerProc

LONG = {"max_tokens": 480, "ignore_eos": True, "temperature": 0}


def test_ctrl_c_drains_then_cuts_off_with_clean_answers(tiny_llama, tmp_path) -> None:
    data = tmp_path / "data"
    server = ServerProc(tiny_llama, tmp_path / "server.log", "--data-dir", str(data), "--drain-timeout", "0.05")
    server.start_background(start_new_session=True)
    server.wait_ready(240)
    watcher = TreeWatcher(server.proc.pid)
    url = server.base_url
    plain: dict = {}
    lines: list[str] = []
    streaming = threading.Event()

    def non_streaming() -> None:
        r = httpx.post(url + "/v1/completions", json={"model": tiny_llama, "prompt": "The list", **LONG}, timeout=120)
        plain.update(status=r.status_code, body=r.json())

    def stream() -> None:
        body = {"model": tiny_llama, "messages": [{"role": "user", "content": "Tell me"}], "stream": True, **LONG}
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=120) as r:
            for line in r.iter_lines():
                if line:
                    lines.append(line)
                    if '"content"' in line and '"content": ""' not in line:
                        streaming.set()
        streaming.set()

    workers = [threading.Thread(target=non_streaming), threading.Thread(target=stream)]
    for w in workers:
        w.start()
    assert streaming.wait(60), lines
    time.sleep(0.1)
    os.killpg(server.proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    for w in workers:
        w.join(60)
    assert server.proc.wait(60) == 0, server.log_tail()

    assert lines[-1] == "data: [DONE]", lines[-3:]
    error = json.loads(lines[-2].removeprefix("data: "))["error"]
    assert error["code"] == "server_shutting_down" and error["type"] == "service_unavailable", error
    assert plain["status"] == 503, plain
    assert plain["body"]["error"]["code"] == "server_shutting_down"

    log = server.log_path.read_text()
    for bad in ("Traceback", "CancelledError", "KeyboardInterrupt"):
        assert bad not in log, log[-3000:]
    assert "POST /v1/chat/completions 200 (ended 503 server_shutting_down)" in log
    assert "POST /v1/completions 503" in log
    assert_no_orphans(watcher.stop())
    with sqlite3.connect(data / "tessera.db") as db:
        statuses = [row[0] for row in db.execute("SELECT status_code FROM usage_records")]
    assert statuses.count(503) == 2, statuses
