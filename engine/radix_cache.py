"""RadixCache: a radix tree from token runs to KV slot indices, so requests share cached prefixes.

Each edge holds a run of token ids and the KV slots that hold their keys/values. `lock_ref` counts
running requests that depend on a node (and so on all its ancestors); only unlocked leaves are
evicted, least recently used first. A match that ends inside an edge splits it, so every match
ends on a node boundary and can be locked.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field

import torch

from engine.mem.kv_pool import SlotAllocator


@dataclass(eq=False)
class TreeNode:
    key: list[int] = field(default_factory=list)
    value: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.int64))
    parent: TreeNode | None = None
    children: dict[int, TreeNode] = field(default_factory=dict)
    lock_ref: int = 0
    last_access: int = 0

    def __lt__(self, other: TreeNode) -> bool:
        return self.last_access < other.last_access


@dataclass
class MatchResult:
    indices: torch.Tensor  # int64 KV slots of the matched prefix
    last_node: TreeNode


def _common_len(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class RadixCache:
    def __init__(self, allocator: SlotAllocator, disable: bool = False) -> None:
        self.allocator = allocator
        self.disable = disable
        self._clock = itertools.count(1)
        self.reset()

    def reset(self) -> None:
        self.root = TreeNode()
        self.root.lock_ref = 1  # the root is never evicted
        self.evictable_size = 0
        self.protected_size = 0
        self.num_query_tokens = 0
        self.num_hit_tokens = 0

    @property
    def total_size(self) -> int:
        return self.evictable_size + self.protected_size

    @property
    def hit_rate(self) -> float:
        return self.num_hit_tokens / self.num_query_tokens if self.num_query_tokens else 0.0

    # ---- lookup / insert ------------------------------------------------------------------
    def match_prefix(self, key: list[int], record_stats: bool = True) -> MatchResult:
        if record_stats:
            self.num_query_tokens += len(key)
        if self.disable or not key:
            return MatchResult(torch.empty(0, dtype=torch.int64), self.root)
        node, pos, pieces = self._descend(key)
        if record_stats:
            self.num_hit_tokens += pos
        indices = torch.cat(pieces) if pieces else torch.empty(0, dtype=torch.int64)
        return MatchResult(indices, node)

    def _descend(self, key: list[int]) -> tuple[TreeNode, int, list[torch.Tensor]]:
        """Follows key from the root as far as it matches, splitting the last edge so the match ends
        on a node; touches every node passed (LRU). Returns (node, matched length, slot pieces)."""
        node, pos, pieces = self.root, 0, []
        now = next(self._clock)
        while pos < len(key) and key[pos] in node.children:
            child = node.children[key[pos]]
            n = _common_len(child.key, key[pos:])
            if n < len(child.key):
                child = self._split(child, n)
            child.last_access = now
            pieces.append(child.value)
            pos += n
            node = child
        return node, pos, pieces

    def _split(self, child: TreeNode, n: int) -> TreeNode:
        """Cuts child's edge after n tokens; returns the new upper node."""
        upper = TreeNode(key=child.key[:n], value=child.value[:n], parent=child.parent,
                         lock_ref=child.lock_ref, last_access=child.last_access)
        child.parent.children[child.key[0]] = upper
        child.key, child.value = child.key[n:], child.value[n:]
        child.parent = upper
        upper.children[child.key[0]] = child
        return upper

    def insert(self, key: list[int], value: torch.Tensor) -> int:
        """Adds key -> value; returns how many leading tokens were already cached (their slots in
        `value` are duplicates the caller must free)."""
        if self.disable or not key:
            return 0
        node, pos, _ = self._descend(key)
        if pos < len(key):
            leaf = TreeNode(key=list(key[pos:]), value=value[pos:].clone(), parent=node,
                            last_access=next(self._clock))
            node.children[key[pos]] = leaf
            self.evictable_size += len(leaf.key)
        return pos

    # ---- locking --------------------------------------------------------------------------
    def inc_lock_ref(self, node: TreeNode) -> None:
        while node is not self.root and node is not None:
            if node.lock_ref == 0:
                self.evictable_size -= len(node.key)
                self.protected_size += len(node.key)
            node.lock_ref += 1
            node = node.parent

    def dec_lock_ref(self, node: TreeNode) -> None:
        while node is not self.root and node is not None:
            if node.lock_ref == 1:
                self.evictable_size += len(node.key)
                self.protected_size -= len(node.key)
            node.lock_ref -= 1
            if node.lock_ref < 0:
                raise RuntimeError("radix cache lock_ref went negative")
            node = node.parent

    # ---- eviction -------------------------------------------------------------------------
    def evict(self, num_tokens: int) -> int:
        """Frees at least num_tokens slots from unlocked leaves (LRU first) if possible; returns freed."""
        if self.disable or num_tokens <= 0:
            return 0
        heap = [n for n in self._leaves() if n.lock_ref == 0]
        heapq.heapify(heap)
        freed = 0
        while freed < num_tokens and heap:
            leaf = heapq.heappop(heap)
            self.allocator.free(leaf.value)
            freed += len(leaf.key)
            self.evictable_size -= len(leaf.key)
            parent = leaf.parent
            del parent.children[leaf.key[0]]
            if parent is not self.root and not parent.children and parent.lock_ref == 0:
                heapq.heappush(heap, parent)
        return freed

    def _leaves(self) -> list[TreeNode]:
        out, stack = [], list(self.root.children.values())
        while stack:
            node = stack.pop()
            if node.children:
                stack.extend(node.children.values())
            else:
                out.append(node)
        return out

    def all_values(self) -> torch.Tensor:
        vals, stack = [], list(self.root.children.values())
        while stack:
            node = stack.pop()
            vals.append(node.value)
            stack.extend(node.children.values())
        return torch.cat(vals) if vals else torch.empty(0, dtype=torch.int64)

    def flush(self) -> bool:
        """Drops every cached entry; only valid while nothing is locked."""
        if self.protected_size:
            return False
        self.allocator.free(self.all_values())
        self.reset()
        return True
