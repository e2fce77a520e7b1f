"""KVManager: ties the request rows, the KV slot allocator and the radix cache together.

It owns the rule for who frees what: slots below `req.tree_owned_len` belong to the radix tree
(shared, locked while the request runs); slots above belong to the request until they are
inserted into the tree or freed. With the radix cache disabled nothing is ever shared.
"""

from __future__ import annotations

import torch

from engine.mem.kv_pool import KVPool
from engine.mem.req_to_token import ReqToTokenPool
from engine.radix_cache import RadixCache
from engine.req import Req


def extend_slot_run(run: tuple[int, int] | None, kv_len: int, slots: torch.Tensor) -> tuple[int, int] | None:
    """The row's slot run after appending host `slots` at position `kv_len`: None unless `run` covers
    exactly the first `kv_len` positions and `slots` continue it one by one."""
    if run is None or run[1] != kv_len:
        return None  # unknown, or the row grew by other means (decode steps, speculative verifies)
    n = int(slots.numel())
    if n == 0:
        return run
    first = int(slots[0])
    if (run[1] and first != run[0] + run[1]) or int(slots[-1]) - first != n - 1:
        return None
    if n > 2 and not bool((slots[1:] - slots[:-1] == 1).all()):
        return None
    return (run[0] if run[1] else first, run[1] + n)


class KVManager:
    def __init__(self, kv_pool: KVPool, req_pool: ReqToTokenPool, disable_radix_cache: bool) -> None:
        self.kv_pool = kv_pool
        self.req_pool = req_pool
        self.allocator = kv_pool.allocator
        self.tree = RadixCache(self.allocator, disable=disable_radix_cache)

    # ---- capacity -------------------------------------------------------------------------
    @property
    def available(self) -> int:
        """Slots obtainable now: free ones plus those eviction could reclaim."""
        return self.allocator.num_free + self.tree.evictable_size

    @property
    def used_tokens(self) -> int:
        return self.kv_pool.size - self.allocator.num_free

    def alloc(self, n: int) -> torch.Tensor | None:
        slots = self.allocator.alloc(n)
        if slots is None:
            self.tree.evict(n - self.allocator.num_free)
            slots = self.allocator.alloc(n)
        return slots

    # ---- request lifecycle ----------------------------------------------------------------
    def match(self, req: Req) -> int:
        """Looks up req's cached prefix (without admitting it); returns its length."""
        return int(self.tree.match_prefix(req.fill_ids[: req.max_prefix_len], record_stats=False).indices.numel())

    def admit(self, req: Req) -> bool:
        """Gives req a row and its cached prefix (locked). False if no row is free."""
        row = self.req_pool.alloc()
        if row is None:
            return False
        match = self.tree.match_prefix(req.fill_ids[: req.max_prefix_len])
        self.tree.inc_lock_ref(match.last_node)
        req.req_pool_idx, req.last_node = row, match.last_node
        req.kv_len = req.tree_owned_len = int(match.indices.numel())
        # A cached prefix's slots live on the device: whether they form a run is unknown without a sync.
        req.kv_run = (0, 0) if req.kv_len == 0 else None
        self.req_pool.write(row, 0, match.indices)
        if not req.is_admitted_once:
            req.cached_tokens = req.kv_len
            req.is_admitted_once = True
        return True

    def extend(self, req: Req, num_tokens: int) -> torch.Tensor | None:
        """New KV slots for req's next num_tokens positions, written into its row."""
        slots = self.alloc(num_tokens)
        if slots is not None:
            req.kv_run = extend_slot_run(req.kv_run, req.kv_len, slots)
            self.req_pool.write(req.req_pool_idx, req.kv_len, slots)
        return slots

    def cache_unfinished(self, req: Req) -> None:
        """Inserts req's computed tokens into the tree (after a prefill chunk) and relocks."""
        if self.tree.disable:
            return
        key = req.fill_ids[: req.kv_len]
        slots = self.req_pool.read(req.req_pool_idx, req.kv_len)
        already = self.tree.insert(key, slots)
        self.allocator.free(slots[req.tree_owned_len:already])  # duplicates of tree entries
        if already > req.tree_owned_len:
            req.kv_run = None  # the row takes the tree's slots for those duplicates
        match = self.tree.match_prefix(key, record_stats=False)
        self.req_pool.write(req.req_pool_idx, 0, match.indices)
        self.tree.dec_lock_ref(req.last_node)
        self.tree.inc_lock_ref(match.last_node)
        req.last_node, req.tree_owned_len = match.last_node, req.kv_len

    def release(self, req: Req) -> None:
        """Ends req's hold on KV: computed tokens go to the tree (or are freed), the row is freed."""
        if req.req_pool_idx is None:
            return
        slots = self.req_pool.read(req.req_pool_idx, req.kv_len)
        if self.tree.disable:
            self.allocator.free(slots[req.tree_owned_len:])
        else:
            already = self.tree.insert(req.fill_ids[: req.kv_len], slots)
            self.allocator.free(slots[req.tree_owned_len:already])
            self.tree.dec_lock_ref(req.last_node)
        self.req_pool.free(req.req_pool_idx)
        req.req_pool_idx, req.last_node, req.kv_run = None, None, None
        req.kv_len = req.tree_owned_len = 0

    def discard(self, req: Req) -> None:
        """Ends a failed request's hold on KV without sharing it: its slots may be half-written, so
        they are freed instead of entering the radix tree."""
        if req.req_pool_idx is None:
            return
        slots = self.req_pool.read(req.req_pool_idx, req.kv_len)
        self.allocator.free(slots[req.tree_owned_len:])
        if not self.tree.disable:
            self.tree.dec_lock_ref(req.last_node)
        self.req_pool.free(req.req_pool_idx)
        req.req_pool_idx, req.last_node, req.kv_run = None, None, None
        req.kv_len = req.tree_owned_len = 0

    def flush(self) -> bool:
        return self.tree.flush()
