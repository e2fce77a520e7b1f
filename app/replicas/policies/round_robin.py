"""round_robin: replicas in turn, skipping the unavailable ones."""

from __future__ import annotations

from collections.abc import Sequence

from app.replicas.load import ReplicaLoad


class RoundRobin:
    name = "round_robin"

    def __init__(self) -> None:
        self._next = 0

    def choose(self, replicas: Sequence[ReplicaLoad], input_ids: Sequence[int]) -> ReplicaLoad:
        # Keyed on replica index, not list position, so a replica dropping out does not shift the turn.
        ordered = sorted(replicas, key=lambda r: r.index)
        pick = next((r for r in ordered if r.index >= self._next), ordered[0])
        self._next = pick.index + 1
        return pick
