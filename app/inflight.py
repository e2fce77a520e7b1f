"""Requests holding the engine, and the drain's wait for none: shared by Supervisor and ReplicaSet."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator


class InflightRequests:
    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """One request, for as long as it runs."""
        self.count += 1
        self._idle.clear()
        try:
            yield
        finally:
            self.count -= 1
            if self.count == 0:
                self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """True once none runs; False if some still run after `timeout` seconds."""
        if self.count == 0:
            return True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False
