"""RadixCache against a naive reference under random insert / match / lock / evict sequences."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.mem.kv_pool import SlotAllocator
from engine.radix_cache import RadixCache

POOL = 400


def _naive_match(entries: dict[tuple[int, ...], list[int]], key: list[int]) -> int:
    """Longest prefix of key that some inserted, not-yet-evicted sequence starts with."""
    best = 0
    for seq in entries:
        n = 0
        while n < min(len(seq), len(key)) and seq[n] == key[n]:
            n += 1
        best = max(best, n)
    return best


def _check_invariants(cache: RadixCache, alloc: SlotAllocator) -> None:
    values = cache.all_values()
    assert values.numel() == cache.total_size
    assert len(set(values.tolist())) == values.numel(), "a slot is owned twice"
    assert cache.total_size + alloc.num_free == POOL, "slots leaked"
    assert cache.evictable_size >= 0 and cache.protected_size >= 0


ops = st.lists(
    st.one_of(
        st.tuples(st.just("insert"), st.lists(st.integers(0, 3), min_size=1, max_size=12)),
        st.tuples(st.just("match"), st.lists(st.integers(0, 3), min_size=1, max_size=12)),
        st.tuples(st.just("lock"), st.lists(st.integers(0, 3), min_size=1, max_size=12)),
        st.tuples(st.just("unlock"), st.integers(0, 10)),
        st.tuples(st.just("evict"), st.integers(1, 30)),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(ops)
def test_radix_cache_matches_reference(sequence):
    alloc = SlotAllocator(POOL)
    cache = RadixCache(alloc)
    # Reference: the set of token sequences the tree must still contain prefixes of. Eviction may
    # drop any unlocked suffix, so after an evict we only check "match <= reference".
    entries: dict[tuple[int, ...], list[int]] = {}
    slot_of: dict[tuple[int, ...], int] = {}  # prefix -> slot, constant while cached
    locks = []
    evicted_any = False
    for op, arg in sequence:
        if op == "insert":
            slots = alloc.alloc(len(arg))
            if slots is None:
                continue
            already = cache.insert(arg, slots)
            alloc.free(slots[:already])  # duplicates, as the KV manager does
            entries[tuple(arg)] = arg
        elif op in ("match", "lock"):
            result = cache.match_prefix(arg)
            got = result.indices.numel()
            expected = _naive_match(entries, arg)
            assert got <= expected
            if not evicted_any:
                assert got == expected
            # The same prefix always maps to the same slots while it is cached.
            for i in range(got):
                key = tuple(arg[: i + 1])
                slot = int(result.indices[i])
                assert slot_of.setdefault(key, slot) == slot
            if op == "lock":
                cache.inc_lock_ref(result.last_node)
                locks.append((result.last_node, got, result.indices.clone()))
        elif op == "unlock" and locks:
            node, _, _ = locks.pop(arg % len(locks))
            cache.dec_lock_ref(node)
        elif op == "evict":
            cache.evict(arg)
            evicted_any = True
            # evicted prefixes may come back with new slots
            for key in list(slot_of):
                if cache.match_prefix(list(key), record_stats=False).indices.numel() < len(key):
                    del slot_of[key]
        # Locked prefixes are never evicted.
        for node, length, indices in locks:
            assert node.lock_ref > 0
            path = []
            n = node
            while n is not cache.root:
                path = n.value.tolist() + path
                n = n.parent
            assert path == indices.tolist()[:length], "a locked prefix lost its slots"
        _check_invariants(cache, alloc)
    for node, _, _ in locks:
        cache.dec_lock_ref(node)
    assert cache.protected_size == 0
    assert cache.flush()
    assert alloc.num_free == POOL


def test_split_on_partial_match_and_lru_eviction():
    alloc = SlotAllocator(100)
    cache = RadixCache(alloc)
    a = alloc.alloc(6)
    cache.insert([1, 2, 3, 4, 5, 6], a)
    b = alloc.alloc(5)
    assert cache.insert([1, 2, 3, 9, 9], b) == 3
    alloc.free(b[:3])
    m = cache.match_prefix([1, 2, 3, 7])
    assert m.indices.tolist() == a[:3].tolist()
    # [1,2,3] now has two children: [4,5,6] (older) and [9,9] (newer)
    cache.match_prefix([1, 2, 3, 9, 9])  # touch the [9,9] branch
    assert cache.evict(1) == 3  # the least recently used leaf [4,5,6] goes first
    assert cache.match_prefix([1, 2, 3, 4]).indices.numel() == 3
    lock = cache.match_prefix([1, 2, 3, 9, 9])
    cache.inc_lock_ref(lock.last_node)
    assert cache.evict(100) == 0 and cache.protected_size == 5
    cache.dec_lock_ref(lock.last_node)
    assert cache.evict(100) == 5 and alloc.num_free == 100


def test_disabled_cache_never_shares():
    alloc = SlotAllocator(10)
    cache = RadixCache(alloc, disable=True)
    assert cache.insert([1, 2], torch.tensor([1, 2])) == 0
    assert cache.match_prefix([1, 2]).indices.numel() == 0
