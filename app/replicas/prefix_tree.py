"""The router's approximate view of one replica's prefix cache: a radix tree of the token sequences
dispatched to it, bounded by `max_tokens` with least-recently-used leaves evicted first.

Approximate because the engine evicts on its own schedule; the tree only remembers what was sent.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence

_clock = itertools.count()


class _Node:
    __slots__ = ("key", "children", "parent", "stamp")

    def __init__(self, key: tuple[int, ...], parent: _Node | None) -> None:
        self.key = key
        self.children: dict[int, _Node] = {}
        self.parent = parent
        self.stamp = next(_clock)


def _common(a: tuple[int, ...], b: Sequence[int], start: int) -> int:
    n = min(len(a), len(b) - start)
    i = 0
    while i < n and a[i] == b[start + i]:
        i += 1
    return i


class PrefixTree:
    def __init__(self, max_tokens: int) -> None:
        self.max_tokens = max_tokens
        self.root = _Node((), None)
        self.size = 0  # tokens stored

    def match(self, tokens: Sequence[int]) -> int:
        """Length of the longest stored prefix of `tokens` (touches the matched path)."""
        node, pos = self.root, 0
        while pos < len(tokens):
            child = node.children.get(tokens[pos])
            if child is None:
                break
            n = _common(child.key, tokens, pos)
            child.stamp = next(_clock)
            pos += n
            if n < len(child.key):
                break
            node = child
        return pos

    def insert(self, tokens: Sequence[int]) -> None:
        node, pos = self.root, 0
        while pos < len(tokens):
            child = node.children.get(tokens[pos])
            if child is None:
                leaf = _Node(tuple(tokens[pos:]), node)
                node.children[tokens[pos]] = leaf
                self.size += len(leaf.key)
                break
            n = _common(child.key, tokens, pos)
            if n < len(child.key):  # split: child keeps its tail under a new middle node
                mid = _Node(child.key[:n], node)
                node.children[tokens[pos]] = mid
                child.key = child.key[n:]
                child.parent = mid
                mid.children[child.key[0]] = child
                child = mid
            child.stamp = next(_clock)
            pos += n
            node = child
        if self.size > self.max_tokens:
            self._evict(self.size - self.max_tokens)

    def clear(self) -> None:
        self.root = _Node((), None)
        self.size = 0

    def _evict(self, need: int) -> None:
        heap = [(leaf.stamp, id(leaf), leaf) for leaf in self._leaves()]
        heapq.heapify(heap)
        freed = 0
        while heap and freed < need:
            _, _, leaf = heapq.heappop(heap)
            parent = leaf.parent
            if parent is None:
                continue
            del parent.children[leaf.key[0]]
            freed += len(leaf.key)
            if parent is not self.root and not parent.children:
                heapq.heappush(heap, (parent.stamp, id(parent), parent))
        self.size -= freed

    def _leaves(self) -> list[_Node]:
        out, stack = [], [self.root]
        while stack:
            node = stack.pop()
            if not node.children and node is not self.root:
                out.append(node)
            stack.extend(node.children.values())
        return out
