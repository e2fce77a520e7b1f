"""The proposer interface: K guessed tokens per request, and the distribution they were drawn from."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from engine.req import Req


@dataclass
class Proposal:
    """drafts[i]: up to K tokens for request i (may be empty). draft_probs: None when every draft is a
    point mass (ngram, or greedy drafting), else [B, K, V] — row i, step j is the distribution
    drafts[i][j] was sampled from (rejection sampling needs it)."""

    drafts: list[list[int]]
    draft_probs: torch.Tensor | None = None


class BaseProposer(ABC):
    @abstractmethod
    def propose(self, reqs: list[Req], max_drafts: list[int]) -> Proposal | None:
        """At most max_drafts[i] tokens for reqs[i]; None when it cannot propose now (resources)."""

    def release(self, req: Req) -> None:
        """req left the running set (finished, aborted, failed); drop any state kept for it."""

    def stats(self) -> dict[str, float]:
        return {}


class FixedTokenProposer(BaseProposer):
    """K copies of one token: a benchmark's stand-in for a draft that is always wrong."""

    def __init__(self, token_id: int) -> None:
        self.token_id = token_id

    def propose(self, reqs: list[Req], max_drafts: list[int]) -> Proposal:
        return Proposal(drafts=[[self.token_id] * k for k in max_drafts])
