"""cache-aware (the default, as sglang-router's): the replica whose approximate prefix tree matches
the longest part of the prompt, unless

- the best match covers less than `cache_threshold` of the prompt (nothing worth reusing), or
- the load is imbalanced: max - min outstanding tokens > `balance_abs_threshold` AND
  max > min * `balance_rel_threshold`;

then the least-loaded replica takes it (among equally loaded ones, the smallest tree: the replica
with the most cache room, so idle replicas still spread distinct prefixes). Either way the prompt is added to the chosen replica's tree.
"""

from __future__ import annotations

from collections.abc import Sequence

from app.replicas.load import ReplicaLoad
from app.replicas.policies.base import least_loaded


class CacheAware:
    name = "cache-aware"

    def __init__(self, cache_threshold: float = 0.5, balance_abs_threshold: int = 4096,
                 balance_rel_threshold: float = 1.5) -> None:
        self.cache_threshold = cache_threshold
        self.balance_abs_threshold = balance_abs_threshold
        self.balance_rel_threshold = balance_rel_threshold

    def imbalanced(self, replicas: Sequence[ReplicaLoad]) -> bool:
        loads = [r.outstanding_tokens for r in replicas]
        hi, lo = max(loads), min(loads)
        return hi - lo > self.balance_abs_threshold and hi > lo * self.balance_rel_threshold

    def choose(self, replicas: Sequence[ReplicaLoad], input_ids: Sequence[int]) -> ReplicaLoad:
        if len(replicas) == 1:
            pick = replicas[0]
        elif self.imbalanced(replicas):
            pick = least_loaded(replicas)
        else:
            matches = {r.index: r.tree.match(input_ids) for r in replicas}
            best = max(replicas, key=lambda r: (matches[r.index], -r.outstanding_tokens, -r.index))
            if input_ids and matches[best.index] / len(input_ids) >= self.cache_threshold:
                pick = best
            else:
                pick = min(replicas, key=lambda r: (r.outstanding_tokens, r.tree.size, r.index))
        pick.tree.insert(input_ids)
        return pick
