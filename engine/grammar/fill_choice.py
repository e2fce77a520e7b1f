"""Chooses between filling a batch's masks on one thread and on xgrammar's thread pool, by measuring.

Neither wins everywhere (H200 host, 16 cores, 64 rows of a JSON schema, bench/NOTES.md 2026-12-02):
with a real 131 K BPE vocabulary one row costs ~10 us and the pool's hand-off dominates (0.47 ms on
one thread vs 2.5 ms on 8), while a vocabulary whose tokens straddle JSON punctuation makes some
rows cost milliseconds and the pool halves the mean (11.1 ms vs 4.9 ms). So both are timed: the
cheaper one (per row, moving average) is used, and the other is retried now and then so a change
of workload (longer strings, another schema) is noticed.
"""

from __future__ import annotations

import time
from collections.abc import Callable

SINGLE, POOL = 0, 1


class FillChoice:
    def __init__(self, retry_every: int = 50, smoothing: float = 0.2,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.retry_every = retry_every
        self.smoothing = smoothing
        self.cost_per_row: list[float | None] = [None, None]  # seconds, moving average per strategy
        self.calls = 0
        self.uses = [0, 0]

    def pick(self) -> int:
        self.calls += 1
        single, pool = self.cost_per_row
        if single is None:
            return SINGLE
        if pool is None:
            return POOL
        best = SINGLE if single <= pool else POOL
        # The loser gets one call in `retry_every`, so its estimate does not go stale.
        return 1 - best if self.calls % self.retry_every == 0 else best

    def run(self, rows: int, single: Callable[[], None], pool: Callable[[], None]) -> None:
        choice = self.pick()
        t0 = self.clock()
        (single if choice == SINGLE else pool)()
        per_row = (self.clock() - t0) / max(rows, 1)
        old = self.cost_per_row[choice]
        self.cost_per_row[choice] = per_row if old is None else old + self.smoothing * (per_row - old)
        self.uses[choice] += 1
