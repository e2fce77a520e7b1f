"""Load-balancing policies for `--dp-size` replicas; `make_policy` maps the flag to one."""

from __future__ import annotations

from app.replicas.policies.base import Policy
from app.replicas.policies.cache_aware import CacheAware
from app.replicas.policies.min_latency import MinLatency
from app.replicas.policies.min_load import MinLoad
from app.replicas.policies.round_robin import RoundRobin
from app.replicas.policies.weighted import Weighted
from engine.args import ServerArgs


def make_policy(args: ServerArgs) -> Policy:
    name = args.normalized_lb_policy
    if name == "cache-aware":
        return CacheAware(args.cache_threshold, args.balance_abs_threshold, args.balance_rel_threshold)
    return {"round_robin": RoundRobin, "min-load": MinLoad, "min-latency": MinLatency,
            "weighted": Weighted}[name]()


__all__ = ["CacheAware", "MinLatency", "MinLoad", "Policy", "RoundRobin", "Weighted", "make_policy"]
