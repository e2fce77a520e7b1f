"""What the load balancer knows about one replica: outstanding tokens, recent latencies, and the
approximate prefix tree. No engine here, so policies are tested on fake replica sets."""

from __future__ import annotations

import statistics
import time
from collections import deque
from collections.abc import Sequence

from app.replicas.prefix_tree import PrefixTree

LATENCY_WINDOW = 32


class ReplicaLoad:
    def __init__(self, index: int, weight: float = 1.0, max_tree_tokens: int = 1 << 20) -> None:
        self.index = index
        self.weight = weight
        self.tree = PrefixTree(max_tree_tokens)
        # rid -> [prompt tokens not yet prefilled, output tokens not yet generated]
        self._outstanding: dict[str, list[int]] = {}
        self._started: dict[str, float] = {}
        self._latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.dispatched = 0
        self.last_output_at = time.monotonic()

    # ---- accounting -------------------------------------------------------------------------
    def begin(self, rid: str, input_ids: Sequence[int], max_new_tokens: int) -> None:
        self._outstanding[rid] = [len(input_ids), max(0, max_new_tokens)]
        self._started[rid] = time.monotonic()
        self.dispatched += 1

    def progress(self, rid: str, new_tokens: int) -> None:
        self.last_output_at = time.monotonic()
        rec = self._outstanding.get(rid)
        if rec is not None:
            rec[0] = 0
            rec[1] = max(0, rec[1] - new_tokens)

    def end(self, rid: str, ok: bool) -> None:
        self._outstanding.pop(rid, None)
        started = self._started.pop(rid, None)
        if ok and started is not None:
            self._latencies.append(time.monotonic() - started)

    def reset(self) -> None:
        """The replica restarted: its cache is empty and its requests are gone."""
        self._outstanding.clear()
        self._started.clear()
        self.tree.clear()

    # ---- what the policies read -------------------------------------------------------------
    @property
    def outstanding_tokens(self) -> int:
        return sum(p + g for p, g in self._outstanding.values())

    @property
    def outstanding_requests(self) -> int:
        return len(self._outstanding)

    @property
    def median_latency(self) -> float | None:
        return statistics.median(self._latencies) if self._latencies else None
