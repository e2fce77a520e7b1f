"""Which requests run next: prefill admission under token/row budgets, and retraction when the
decode batch cannot get KV slots. The whole policy fits on one screen."""

from __future__ import annotations

import time
from dataclasses import dataclass

from engine.kv_manager import KVManager
from engine.req import Req

# A new request that shares this many uncached tokens with one already in the batch waits one
# step: the other request's prefill puts them in the radix cache, so it is computed once.
IN_BATCH_PREFIX_THRESHOLD = 32


# A prompt's chunks pay a fixed cost each (one more pass over the weights, attention tails): 100k tokens
# prefilled in 16384-token chunks took 6,466 ms on an H200 against 6,529 ms in 8192-token ones (bench/RESULTS.md,
# ninth session). Smaller GPUs keep the smaller chunk: its activations are what the KV budget leaves room for.
LARGE_CHUNK_GPU_BYTES = 120 * 1024**3
LARGE_GPU_CHUNK = 16384
DEFAULT_CHUNK = 8192


def default_chunked_prefill_size(total_gpu_bytes: int) -> int:
    """Prompt tokens per prefill step when --chunked-prefill-size is not given (0 bytes: not a GPU)."""
    return LARGE_GPU_CHUNK if total_gpu_bytes >= LARGE_CHUNK_GPU_BYTES else DEFAULT_CHUNK


def chunk_limit(chunked_prefill_size: int) -> int:
    """Prompt tokens one prefill step may compute at most; `chunked_prefill_size` -1 means unchunked."""
    return chunked_prefill_size if chunked_prefill_size > 0 else 1 << 62


def _common_prefix_len(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


@dataclass
class PrefillPlan:
    reqs: list[Req]  # in batch order; each has req.extend_len set
    chunked: Req | None  # a request whose prompt continues in a later step


def effective_priority(req: Req, now: float, aging_s: float) -> int:
    """The aging rule of `--schedule-policy priority`: a waiting request gains one level per `aging_s`
    seconds it has waited, so a flood of higher-priority requests delays a low one by at most
    (difference in priority) x aging_s, never forever."""
    return req.priority + int((now - req.arrival_time) / aging_s)


def order_waiting(waiting: list[Req], policy: str, kv: KVManager, priority_aging_s: float = 1.0) -> list[Req]:
    if policy == "priority" and len(waiting) > 1:
        # Highest (aged) priority first; equal priority keeps arrival order (FCFS).
        now = time.monotonic()
        return sorted(waiting, key=lambda r: (-effective_priority(r, now, priority_aging_s), r.arrival))
    if policy == "lpm" and len(waiting) > 1:
        # Longest cached prefix first: it needs the fewest new tokens and keeps hot prefixes hot.
        lens = {id(r): kv.match(r) for r in waiting}
        return sorted(waiting, key=lambda r: (-lens[id(r)], r.arrival))
    return sorted(waiting, key=lambda r: r.arrival)


def plan_prefill(waiting: list[Req], chunked: Req | None, num_running: int, kv: KVManager, policy: str,
                 max_running: int, chunk_size: int, headroom_per_req: int,
                 priority_aging_s: float = 1.0) -> PrefillPlan:
    """Admits requests while rows, the token budget and KV slots allow. Each admitted request
    gets its row, cached prefix and KV slots for `extend_len` tokens."""
    budget = chunk_limit(chunk_size)
    plan = PrefillPlan(reqs=[], chunked=None)
    candidates = ([chunked] if chunked is not None else []) + order_waiting(waiting, policy, kv, priority_aging_s)
    for req in candidates:
        if budget <= 0:
            break
        is_new = req.req_pool_idx is None
        if is_new and num_running + len(plan.reqs) >= max_running:
            break
        if is_new:
            cached = kv.match(req)
            if plan.reqs and not kv.tree.disable and any(
                    _common_prefix_len(req.fill_ids, other.fill_ids) - cached >= IN_BATCH_PREFIX_THRESHOLD
                    for other in plan.reqs):
                continue
            # Leave room for running requests to keep decoding, or the new one only causes retractions.
            need = min(req.fill_len - cached, budget) + headroom_per_req * num_running
            if kv.available < need or not kv.admit(req):
                break
        remaining = req.fill_len - req.kv_len
        extend = min(remaining, budget)
        slots = kv.extend(req, extend)
        if slots is None:
            if is_new:
                kv.release(req)
            break
        req.extend_len = extend
        plan.reqs.append(req)
        budget -= extend
        if extend < remaining:
            plan.chunked = req
            break
    return plan


def pick_retractions(running: list[Req], kv: KVManager) -> list[Req]:
    """Decode needs one slot per request; retract the requests with the least progress (cheapest to
    redo) until the rest fit. Never retracts the last request."""
    order = sorted(running, key=lambda r: (len(r.output_ids), -len(r.origin_input_ids)))
    retracted: list[Req] = []
    while kv.available < len(running) - len(retracted) and len(retracted) < len(running) - 1:
        victim = order[len(retracted)]
        retracted.append(victim)
        kv.release(victim)
    return retracted
