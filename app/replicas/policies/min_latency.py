"""min-latency: the replica with the lowest median end-to-end latency over its last requests
(`app.replicas.load.LATENCY_WINDOW`). A replica with no finished request yet counts as 0 s, so new and
restarted replicas get traffic and a measurement; ties go to the least-loaded."""

from __future__ import annotations

from collections.abc import Sequence

from app.replicas.load import ReplicaLoad


class MinLatency:
    name = "min-latency"

    def choose(self, replicas: Sequence[ReplicaLoad], input_ids: Sequence[int]) -> ReplicaLoad:
        return min(replicas, key=lambda r: (r.median_latency or 0.0, r.outstanding_tokens, r.index))
