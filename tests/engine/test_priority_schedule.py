"""`--schedule-policy priority`: higher priority is admitted first, FCFS within a priority, and the aging
rule (one level per `--priority-aging-interval` seconds waited) keeps a low-priority request from starving.

One real engine (tiny Llama, one running request at a time so admission order is completion order)."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest

from engine.args import ServerArgs
from engine.client import EngineClient
from engine.sampling_params import SamplingParams
from engine.schedule_policy import order_waiting

AGING_S = 0.5


def test_order_waiting_priority_fcfs_and_aging():
    now = time.monotonic()

    def req(name: str, priority: int, arrival: int, waited: float = 0.0) -> SimpleNamespace:
        return SimpleNamespace(rid=name, priority=priority, arrival=arrival, arrival_time=now - waited)

    waiting = [req("a", 1, 1), req("b", 5, 2), req("c", 3, 3), req("d", 5, 4), req("e", 0, 5)]
    assert [r.rid for r in order_waiting(waiting, "priority", None, 1.0)] == ["b", "d", "c", "a", "e"]
    # fcfs ignores priorities.
    assert [r.rid for r in order_waiting(waiting, "fcfs", None, 1.0)] == ["a", "b", "c", "d", "e"]
    # Aging: priority 0 that has waited 6 s counts as 6 and passes a fresh 5.
    aged = [req("fresh", 5, 2), req("old", 0, 1, waited=6.0)]
    assert [r.rid for r in order_waiting(aged, "priority", None, 1.0)] == ["old", "fresh"]


@pytest.fixture(scope="module")
def client(tiny_llama):
    args = ServerArgs(model_path=tiny_llama, device="cpu", schedule_policy="priority", max_running_requests=1,
                      priority_aging_interval=AGING_S, context_length=256, random_seed=0)
    loop = asyncio.new_event_loop()
    c = EngineClient(args)
    loop.run_until_complete(c.start(timeout=180))
    yield SimpleNamespace(client=c, loop=loop)
    loop.run_until_complete(c.stop())
    loop.close()


def _sp(n: int) -> SamplingParams:
    return SamplingParams.from_dict({"max_new_tokens": n, "temperature": 0, "ignore_eos": True})


async def _run(c: EngineClient, rid: str, n: int, priority: int, done: list[str]) -> None:
    async for _ in c.generate([5, 6, 7, len(done) % 50 + 10], _sp(n), rid=rid, priority=priority):
        pass
    done.append(rid)


def test_higher_priority_first_fcfs_within(client):
    async def scenario() -> list[str]:
        done: list[str] = []
        # The blocker holds the single running slot while the others queue behind it. Priorities are
        # far apart so aging during the test (a few levels) cannot reorder them.
        tasks = [asyncio.create_task(_run(client.client, "blocker", 240, 1000, done))]
        await asyncio.sleep(0.02)
        for rid, prio in (("p100", 100), ("p500a", 500), ("p300", 300), ("p500b", 500), ("p0", 0)):
            tasks.append(asyncio.create_task(_run(client.client, rid, 4, prio, done)))
            await asyncio.sleep(0.002)  # all queued long before the 240-token blocker ends, even on an idle box
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
        return done

    assert client.loop.run_until_complete(scenario()) == ["blocker", "p500a", "p500b", "p300", "p100", "p0"]


def test_low_priority_is_not_starved(client):
    """A flood of priority-8 requests (always some waiting) and one priority-0 request: aging at 0.5 s per
    level lets it in after about 4 s, while the flood is still running."""

    async def scenario() -> tuple[list[str], float]:
        done: list[str] = []
        flood: list[asyncio.Task] = []
        i = 0
        # The flood goes first: a "low" that reached an idle engine would run at once, which is no test.
        while sum(not t.done() for t in flood) < 3:
            flood.append(asyncio.create_task(_run(client.client, f"high{i}", 40, 8, done)))
            i += 1
        await asyncio.sleep(0.02)
        t0 = time.monotonic()
        low = asyncio.create_task(_run(client.client, "low", 2, 0, done))
        while not low.done() and time.monotonic() - t0 < 40:
            while sum(not t.done() for t in flood) < 3:  # keep the queue full of higher priority
                flood.append(asyncio.create_task(_run(client.client, f"high{i}", 40, 8, done)))
                i += 1
            await asyncio.sleep(0.005)
        waited = time.monotonic() - t0
        for _ in range(2):  # the flood goes on after "low" finished
            flood.append(asyncio.create_task(_run(client.client, f"high{i}", 6, 8, done)))
            i += 1
        await asyncio.wait_for(asyncio.gather(low, *flood), 60)
        return done, waited

    done, waited = client.loop.run_until_complete(scenario())
    assert "low" in done and done.index("low") < len(done) - 2, done
    assert 8 * AGING_S * 0.9 <= waited < 30, waited  # aging, not luck, let it in
