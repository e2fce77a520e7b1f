"""Calls into a rate limiter from the event loop.

The in-memory limiter is a few dict operations and runs inline. The PostgreSQL one (several replicas) is a
database transaction: run inline it would stall every other request of this replica for its round trip,
so it runs on a worker thread. A request cancelled while its admission is in flight (the client went away)
must not leave a reservation behind: the admission finishes on its thread and is settled at zero.
"""

from __future__ import annotations

import asyncio
from typing import Any


def is_blocking(limiter: Any) -> bool:
    return bool(getattr(limiter, "blocking", False))


async def acquire(limiter: Any, key_id: int, limits: Any, reserve_tokens: int) -> Any:
    if not is_blocking(limiter):
        return limiter.try_acquire(key_id, limits, reserve_tokens)
    pending = asyncio.ensure_future(asyncio.to_thread(limiter.try_acquire, key_id, limits, reserve_tokens))
    try:
        return await asyncio.shield(pending)
    except asyncio.CancelledError:
        pending.add_done_callback(lambda done: _release_orphan(limiter, done))
        raise


def _release_orphan(limiter: Any, done: asyncio.Future) -> None:
    if done.cancelled() or done.exception() is not None:
        return
    ticket = done.result().ticket
    if ticket is not None:
        asyncio.get_running_loop().run_in_executor(None, limiter.settle, ticket, 0)


async def settle(limiter: Any, ticket: Any, actual_tokens: int) -> None:
    if not is_blocking(limiter):
        limiter.settle(ticket, actual_tokens)
        return
    # Shielded: a cancelled caller must not skip freeing the concurrency slot (the thread runs on anyway).
    await asyncio.shield(asyncio.to_thread(limiter.settle, ticket, actual_tokens))
