"""The load-balancing policy interface: pick one of the available replicas for a prompt."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from app.replicas.load import ReplicaLoad


class Policy(Protocol):
    name: str

    def choose(self, replicas: Sequence[ReplicaLoad], input_ids: Sequence[int]) -> ReplicaLoad:
        """`replicas` is non-empty and holds only replicas that can take work now."""
        ...


def least_loaded(replicas: Sequence[ReplicaLoad]) -> ReplicaLoad:
    """Fewest outstanding tokens; ties go to fewer requests, then the lower index (deterministic)."""
    return min(replicas, key=lambda r: (r.outstanding_tokens, r.outstanding_requests, r.index))
