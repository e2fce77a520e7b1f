"""`--dp-size 2` in process with the fake engine: dispatch, per-replica info and metrics, failover
(retry before the first chunk, 503 after it), hang detection, --max-unhealthy-gpus and rejoin."""

from __future__ import annotations

import json
import time
from typing import Any

from tests.app.app_harness import Harness, running_app
from tests.app.fake_engine import FakeBehaviour


def _wait(cond: Any, timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _gen(h: Harness, text: str, n: int = 3, **extra: Any) -> Any:
    return h.http.post("/generate", json={"text": text, "sampling_params": {"max_new_tokens": n}, **extra})


def _current(h: Harness, index: int) -> Any:
    return h.supervisor.replicas[index].client


def _kill(h: Harness, index: int, reason: str) -> None:
    """The replica's engine dies (called on the app's event loop, as the engine watchdog would)."""
    h.http.portal.call(_current(h, index).die, reason)  # type: ignore[union-attr]


def test_round_robin_dispatch_info_and_metrics(tiny_llama):
    with running_app(tiny_llama, dp_size=2, load_balancing_policy="round_robin", health_check_interval=60) as h:
        for i in range(4):
            assert _gen(h, f"hello {i}").status_code == 200
        assert [len(_current(h, i)._seen) for i in range(2)] == [2, 2]
        info = h.http.get("/get_server_info").json()
        assert info["dp_size"] == 2 and info["load_balancing_policy"] == "round_robin"
        states = info["internal_states"]
        assert [s["replica"] for s in states] == [0, 1] and all(s["health"] == "healthy" for s in states)
        assert [s["dispatched"] for s in states] == [2, 2]
        assert len(info["engine_pids"]) == 2
        text = h.http.get("/metrics").text
        assert 'tessera_replica_healthy{model_name=' in text and 'replica="1"} 1.0' in text
        assert h.http.post("/flush_cache").json()["success"] is True


def test_cache_aware_keeps_a_prefix_on_one_replica(tiny_llama):
    with running_app(tiny_llama, dp_size=2, health_check_interval=60) as h:
        prefixes = ["The quick brown fox jumps over the lazy dog " * 3, "Lorem ipsum dolor sit amet consectetur " * 3]
        for q in range(3):
            for p in prefixes:
                assert _gen(h, p + f"question {q}?").status_code == 200
        seen = [[s for s in _current(h, i)._seen] for i in range(2)]
        assert sorted(len(s) for s in seen) == [3, 3]
        for s in seen:  # each replica saw one prefix only
            assert len({ids[:20] for ids in s}) == 1


def test_retry_before_output_and_503_after(tiny_llama):
    behaviour = FakeBehaviour(step_s=0.05)
    with running_app(tiny_llama, behaviour, dp_size=2, load_balancing_policy="round_robin",
                     health_check_interval=60) as h:
        import threading

        result: dict[str, Any] = {}
        t = threading.Thread(target=lambda: result.update(r=_gen(h, "retry me", n=10)))
        t.start()
        _wait(lambda: _current(h, 0).num_inflight == 1, what="request on replica 0")
        _kill(h, 0, "killed by the test")
        t.join(30)
        r = result["r"]
        assert r.status_code == 200 and r.json()["meta_info"]["completion_tokens"] == 10
        assert h.supervisor.dispatch.retries == 1
        _wait(lambda: h.supervisor.replicas[0].health == "healthy", what="replica 0 rejoins")

        # A stream whose first chunk went out cannot be replayed: it ends with a 503 error event.
        lines: list[str] = []

        def stream() -> None:
            with h.http.stream("POST", "/generate", json={"text": "stream me", "stream": True,
                                                          "sampling_params": {"max_new_tokens": 40}}) as resp:
                lines.append(str(resp.status_code))
                for line in resp.iter_lines():
                    if line:
                        lines.append(line)

        t = threading.Thread(target=stream)
        t.start()
        _wait(lambda: len(lines) >= 3, what="streamed chunks")
        victim = next(i for i in range(2) if _current(h, i).num_inflight)
        _kill(h, victim, "killed mid-stream")
        t.join(30)
        assert lines[0] == "200" and lines[-1] == "data: [DONE]"
        err = json.loads(lines[-2][len("data: "):])["error"]
        assert err["code"] == "engine_unavailable"


def test_hung_replica_is_removed_restarted_and_rejoins(tiny_llama):
    behaviour = FakeBehaviour()
    with running_app(tiny_llama, behaviour, dp_size=2, load_balancing_policy="round_robin",
                     health_check_interval=0.3) as h:
        transitions: list[tuple] = []
        h.supervisor.on_transition.append(lambda *t: transitions.append(t))
        behaviour.start_delay_s = 1.0  # the restart takes a while
        hung = _current(h, 0)
        hung.behaviour = FakeBehaviour(step_s=30.0)  # only this engine stops producing tokens
        _wait(lambda: h.supervisor.replicas[0].health == "unhealthy", 5, "hang detected")
        # While replica 0 is out, everything goes to replica 1.
        for i in range(3):
            assert _gen(h, f"during {i}").status_code == 200
        _wait(lambda: h.supervisor.replicas[0].health == "healthy" and _current(h, 0) is not hung, 10, "rejoin")
        assert transitions[0][:3] == (0, "healthy", "unhealthy") and "hung" in transitions[0][3]
        assert transitions[-1][:3] == (0, "unhealthy", "healthy")
        assert len(transitions) == 2  # each transition reported once
        assert h.supervisor.replicas[0].sup.restarts == 1


def test_max_unhealthy_gpus_zero_turns_health_red(tiny_llama):
    behaviour = FakeBehaviour()
    with running_app(tiny_llama, behaviour, dp_size=2, max_unhealthy_gpus=0, health_check_interval=60) as h:
        assert h.http.get("/health").status_code == 200
        behaviour.start_delay_s = 1.5  # the restart takes a while
        _kill(h, 1, "GPU fell off the bus")
        r = h.http.get("/health")
        assert r.status_code == 503 and "1 GPU(s)" in r.json()["error"]["message"], r.text
        assert _gen(h, "still served").status_code == 200  # the survivor keeps serving
        _wait(lambda: h.http.get("/health").status_code == 200, 10, "rejoin")


def test_default_allows_all_but_one_replica_out(tiny_llama):
    behaviour = FakeBehaviour()
    with running_app(tiny_llama, behaviour, dp_size=2, health_check_interval=60) as h:
        behaviour.start_delay_s = 1.0
        _kill(h, 0, "lost")
        assert h.http.get("/health").status_code == 200
        _wait(lambda: h.supervisor.replicas[0].health == "healthy", 10, "rejoin")
