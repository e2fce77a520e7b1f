"""weighted: static weights per replica (`--replica-weights 3,1`), smooth weighted round robin: each
pick adds every available replica's weight to its credit, the richest wins and pays the total.
Over any window the shares follow the weights, without bursts to one replica."""

from __future__ import annotations

from collections.abc import Sequence

from app.replicas.load import ReplicaLoad


class Weighted:
    name = "weighted"

    def __init__(self) -> None:
        self._credit: dict[int, float] = {}

    def choose(self, replicas: Sequence[ReplicaLoad], input_ids: Sequence[int]) -> ReplicaLoad:
        for r in replicas:
            self._credit[r.index] = self._credit.get(r.index, 0.0) + r.weight
        pick = max(replicas, key=lambda r: (self._credit[r.index], -r.index))
        self._credit[pick.index] -= sum(r.weight for r in replicas)
        return pick
