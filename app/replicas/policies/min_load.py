"""min-load: fewest outstanding tokens (queued + running: prompt not yet prefilled plus the max
tokens still to generate)."""

from __future__ import annotations

from collections.abc import Sequence

from app.replicas.load import ReplicaLoad
from app.replicas.policies.base import least_loaded


class MinLoad:
    name = "min-load"

    def choose(self, replicas: Sequence[ReplicaLoad], input_ids: Sequence[int]) -> ReplicaLoad:
        return least_loaded(replicas)
