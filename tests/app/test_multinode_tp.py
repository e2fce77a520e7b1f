"""Multi-node tensor parallelism with two "nodes" on one machine: two `tessera serve` processes
(`--tp-size 2 --nnodes 2 --node-rank 0/1 --dist-init-addr 127.0.0.1:PORT`, gloo on CPU).

Greedy output equals HF's (and so TP=1's); node 1 serves no HTTP; a dying rank on node 1 makes rank 0
answer its in-flight request with a 503 (no hang) and both nodes restart and serve again; stopping node 0
makes node 1 exit 0."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.app.server_proc import REPO, ServerProc, free_port
from tests.engine.hf_reference import hf_greedy

PROMPT = [1, 15, 27, 99, 4, 61]


@pytest.fixture(scope="module")
def nodes(tiny_llama, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multinode")
    addr = f"127.0.0.1:{free_port()}"
    flags = ("--tp-size", "2", "--nnodes", "2", "--dist-init-addr", addr, "--random-seed", "0")
    node1_port = free_port()
    log1 = open(tmp / "node1.log", "w")  # noqa: SIM115 - closed below
    node1 = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--model-path", tiny_llama, "--device", "cpu",
                              "--port", str(node1_port), "--disable-admin", *flags, "--node-rank", "1"],
                             cwd=REPO, stdout=log1, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    node0 = ServerProc(tiny_llama, tmp / "node0.log", *flags, "--node-rank", "0")
    try:
        node0.start(timeout=240)
        yield node0, node1, node1_port, tmp / "node1.log"
    finally:
        node0.stop()
        if node1.poll() is None:
            node1.send_signal(signal.SIGTERM)
            try:
                node1.wait(30)
            except subprocess.TimeoutExpired:
                node1.kill()
        log1.close()


def _greedy(server: ServerProc, n: int) -> list[int]:
    r = httpx.post(server.base_url + "/generate", json={"input_ids": PROMPT, "sampling_params": {
        "max_new_tokens": n, "temperature": 0, "ignore_eos": True}}, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()["output_ids"]


def _node1_rank_pids(node1: subprocess.Popen) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(node1.pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _node1_rank_pid(node1: subprocess.Popen) -> int:
    pids = _node1_rank_pids(node1)
    assert len(pids) == 1, pids
    return pids[0]


def test_greedy_matches_hf_and_node1_has_no_http(nodes, tiny_llama):
    node0, node1, node1_port, _ = nodes
    assert _greedy(node0, 12) == hf_greedy(tiny_llama, PROMPT, 12)
    assert node1.poll() is None
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", node1_port)) != 0, "node 1 must not serve HTTP"
    assert httpx.get(node0.base_url + "/get_server_info", timeout=10).json()["nnodes"] == 2


def test_dying_node_gives_503_then_both_restart(nodes, tiny_llama):
    node0, node1, _, log1 = nodes
    result: dict = {}

    def long_request() -> None:
        result["r"] = httpx.post(node0.base_url + "/generate", json={"input_ids": PROMPT, "sampling_params": {
            "max_new_tokens": 800, "ignore_eos": True}}, timeout=120)

    t = threading.Thread(target=long_request)
    t.start()
    time.sleep(1.0)
    os.kill(_node1_rank_pid(node1), signal.SIGKILL)
    t.join(60)
    assert not t.is_alive(), "the in-flight request must end, not hang"
    assert result["r"].status_code == 503, result["r"].text
    node0.wait_ready(180)  # rank 0 restarted and node 1's new rank joined it
    assert _greedy(node0, 12) == hf_greedy(tiny_llama, PROMPT, 12)
    assert node1.poll() is None and "restarting this node's ranks" in log1.read_text()


def _wait_settled(node0: ServerProc, node1: subprocess.Popen, timeout: float = 180) -> None:
    """Until node 0 answers a generation and node 1's rank has stayed the same process for a few seconds: a rank
    that rejoined after a restart can still fail and rejoin once more (the supervisor's backoff), and a node 0 that
    stops meanwhile leaves that rank waiting at the rendezvous, not connected to be told to exit."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = _node1_rank_pids(node1)
        try:
            served = httpx.post(node0.base_url + "/generate", json={"input_ids": PROMPT, "sampling_params": {
                "max_new_tokens": 2, "temperature": 0}}, timeout=30).status_code == 200
        except httpx.HTTPError:
            served = False
        time.sleep(3)
        if served and len(children) == 1 and _node1_rank_pids(node1) == children:
            return
    pytest.fail("the two nodes did not settle: node 1's rank kept restarting")


def test_node1_exits_when_node0_stops(nodes):
    node0, node1, _, log1 = nodes
    _wait_settled(node0, node1)
    assert node0.terminate(60) == 0
    assert node1.wait(60) == 0
    assert "rank 0 stopped the engine; exiting" in log1.read_text()
