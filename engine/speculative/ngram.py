"""Prompt-lookup drafts: the longest suffix of the sequence (max_match down to min_match tokens) that
also occurs earlier in prompt + output proposes the tokens that followed its most recent earlier
occurrence. Deterministic, so every TP rank proposes the same tokens without communication."""

from __future__ import annotations

from engine.req import Req
from engine.speculative.proposer import BaseProposer, Proposal


def lookup_continuation(seq: list[int], k: int, max_match: int, min_match: int) -> list[int]:
    """Up to k tokens following the most recent earlier occurrence of seq's longest matching suffix."""
    if k <= 0:
        return []
    total = len(seq)
    for n in range(min(max_match, total - 1), min_match - 1, -1):
        suffix = seq[total - n:]
        first = suffix[0]
        # start j of an earlier occurrence; it must end before the suffix itself starts to be "earlier"
        for j in range(total - n - 1, -1, -1):
            if seq[j] == first and seq[j:j + n] == suffix:
                return seq[j + n:j + n + k]
    return []


class NgramProposer(BaseProposer):
    def __init__(self, max_match: int, min_match: int) -> None:
        self.max_match = max_match
        self.min_match = min_match

    def propose(self, reqs: list[Req], max_drafts: list[int]) -> Proposal:
        return Proposal(drafts=[lookup_continuation(r.fill_ids, k, self.max_match, self.min_match)
                                for r, k in zip(reqs, max_drafts)])
