"""A database-backed limiter runs off the event loop, and a request cancelled mid-admission leaves no
reservation behind."""

import asyncio
import threading
from dataclasses import dataclass

from app.admin import limiter_calls


@dataclass
class FakeDecision:
    ticket: object | None


class BlockingLimiter:
    """try_acquire blocks its thread until `release` is set, like a transaction waiting on the database."""

    blocking = True

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.settled: list[tuple[object, int]] = []
        self.settled_event = threading.Event()

    def try_acquire(self, key_id, limits, reserve_tokens):
        self.entered.set()
        assert self.release.wait(10), "never released"
        return FakeDecision(ticket=("ticket", key_id))

    def settle(self, ticket, actual_tokens):
        self.settled.append((ticket, actual_tokens))
        self.settled_event.set()


def test_acquire_does_not_block_the_event_loop():
    limiter = BlockingLimiter()

    async def main():
        admit = asyncio.create_task(limiter_calls.acquire(limiter, 7, None, 100))
        # Runs only if the loop is free while try_acquire blocks its thread (inline it would deadlock).
        await asyncio.to_thread(limiter.entered.wait, 10)
        limiter.release.set()
        return await asyncio.wait_for(admit, 10)

    assert asyncio.run(main()).ticket == ("ticket", 7)


def test_cancelled_admission_is_settled_at_zero():
    limiter = BlockingLimiter()

    async def main():
        admit = asyncio.create_task(limiter_calls.acquire(limiter, 3, None, 50))
        await asyncio.to_thread(limiter.entered.wait, 10)
        admit.cancel()  # the client went away while the transaction ran
        await asyncio.sleep(0)
        limiter.release.set()
        try:
            await admit
        except asyncio.CancelledError:
            pass
        assert await asyncio.to_thread(limiter.settled_event.wait, 10)

    asyncio.run(main())
    assert limiter.settled == [(("ticket", 3), 0)]


def test_in_memory_limiter_runs_inline():
    calls = []

    class Inline:
        def try_acquire(self, key_id, limits, reserve_tokens):
            calls.append(threading.get_ident())
            return FakeDecision(ticket=None)

    asyncio.run(limiter_calls.acquire(Inline(), 1, None, 1))
    assert calls == [threading.get_ident()]
