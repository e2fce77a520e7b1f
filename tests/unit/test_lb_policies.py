"""Each load-balancing policy's decision on a fake replica set (no engine)."""

from __future__ import annotations

import pytest

from app.replicas.load import ReplicaLoad
from app.replicas.policies import CacheAware, MinLatency, MinLoad, RoundRobin, Weighted, make_policy
from app.replicas.prefix_tree import PrefixTree
from engine.args import ArgsError, ServerArgs


def replicas(n: int = 2, weights: list[float] | None = None) -> list[ReplicaLoad]:
    return [ReplicaLoad(i, (weights or [1.0] * n)[i]) for i in range(n)]


def test_prefix_tree_matches_splits_and_evicts():
    t = PrefixTree(max_tokens=10)
    t.insert([1, 2, 3, 4])
    t.insert([1, 2, 9])
    assert t.match([1, 2, 3, 4, 5]) == 4
    assert t.match([1, 2, 9, 9]) == 3
    assert t.match([1, 7]) == 1
    assert t.match([5]) == 0
    assert t.size == 5  # [1,2] shared, [3,4] and [9]
    t.match([1, 2, 9])  # touch: [3,4] is now the least recently used leaf
    t.insert([6, 6, 6, 6, 6, 6])  # 11 tokens > 10: evict the LRU leaf
    assert t.match([1, 2, 3, 4]) == 2 and t.match([1, 2, 9]) == 3 and t.size == 9


def test_round_robin_cycles_and_skips_missing():
    rr, rs = RoundRobin(), replicas(3)
    assert [rr.choose(rs, [1]).index for _ in range(4)] == [0, 1, 2, 0]
    assert [rr.choose([rs[0], rs[2]], [1]).index for _ in range(3)] == [2, 0, 2]


def test_min_load_counts_prompt_and_remaining_tokens():
    rs = replicas(2)
    rs[0].begin("a", [1] * 100, 50)  # 150 outstanding
    rs[1].begin("b", [1] * 10, 100)  # 110 outstanding
    assert MinLoad().choose(rs, [1]).index == 1
    rs[1].progress("b", 0)  # prefilled: the prompt no longer counts -> 100
    rs[0].progress("a", 40)  # 10 left
    assert rs[0].outstanding_tokens == 10 and MinLoad().choose(rs, [1]).index == 0
    rs[0].end("a", ok=True)
    rs[1].end("b", ok=True)
    assert rs[0].outstanding_tokens == rs[1].outstanding_tokens == 0


def test_cache_aware_follows_prefix_and_falls_back():
    ca, rs = CacheAware(cache_threshold=0.5, balance_abs_threshold=100, balance_rel_threshold=1.5), replicas(2)
    p1, p2 = list(range(100, 140)), list(range(200, 240))
    first = ca.choose(rs, p1 + [1])  # no match anywhere: least loaded (index 0)
    assert first.index == 0
    first.begin("x", p1, 10)
    second = ca.choose(rs, p2 + [2])  # no match: least loaded is now 1
    assert second.index == 1
    second.begin("y", p2, 10)
    # Same prefixes again: each follows its tree regardless of the small load difference.
    assert ca.choose(rs, p1 + [3]).index == 0
    assert ca.choose(rs, p2 + [4]).index == 1
    # A short match (under the threshold) is not worth it: least loaded wins.
    rs[0].begin("z", [0] * 5, 0)
    assert ca.choose(rs, p1[:5] + list(range(500, 540))).index == 1
    # Overload: replica 0 far above replica 1 -> min-load even with a full match.
    rs[0].begin("big", [0] * 1000, 0)
    assert ca.imbalanced(rs) and ca.choose(rs, p1 + [5]).index == 1


def test_min_latency_prefers_fast_and_untried():
    rs = replicas(2)
    rs[0]._latencies.extend([0.5, 0.6, 0.4])
    assert MinLatency().choose(rs, [1]).index == 1  # no measurement yet counts as 0
    rs[1]._latencies.extend([2.0, 2.0, 2.0])
    assert MinLatency().choose(rs, [1]).index == 0


def test_weighted_follows_weights_smoothly():
    w, rs = Weighted(), replicas(2, [3.0, 1.0])
    picks = [w.choose(rs, [1]).index for _ in range(8)]
    assert picks.count(0) == 6 and picks.count(1) == 2
    assert picks[:4] == [0, 0, 1, 0]  # never more than 3 in a row for replica 0


def test_policy_flags():
    assert make_policy(ServerArgs(device="cpu", dp_size=2)).name == "cache-aware"
    for spelling, name in (("round-robin", "round_robin"), ("min_load", "min-load"), ("MIN-LATENCY", "min-latency"),
                           ("weighted", "weighted")):
        assert make_policy(ServerArgs(device="cpu", dp_size=2, load_balancing_policy=spelling)).name == name
    with pytest.raises(ArgsError, match="load-balancing-policy"):
        ServerArgs(device="cpu", load_balancing_policy="random")
    with pytest.raises(ArgsError, match="replica-weights"):
        ServerArgs(device="cpu", dp_size=2, replica_weights="1")
    assert ServerArgs(device="cpu", dp_size=3, tp_size=2).resolved_max_unhealthy_gpus == 4


def test_offline_engine_refuses_replicas_and_worker_nodes():
    from engine import Engine

    with pytest.raises(ArgsError, match="dp-size"):
        Engine(device="cpu", dp_size=2)
    with pytest.raises(ArgsError, match="node-rank"):
        Engine(device="cpu", tp_size=2, nnodes=2, node_rank=1, dist_init_addr="127.0.0.1:1")
