"""Req: one sequence's scheduling state (token ids, KV bookkeeping, sampling, finish state)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from engine.radix_cache import TreeNode
from engine.sampling_params import SamplingParams


@dataclass(eq=False)
class Req:
    rid: str
    origin_input_ids: list[int]
    sampling: SamplingParams
    return_logprob: bool = False
    logprob_start_len: int = -1
    top_logprobs_num: int = 0
    stream: bool = False
    arrival: int = 0
    grammar: Any = None  # engine.grammar.manager.GrammarState for constrained requests
    priority: int = 0
    arrival_time: float = field(default_factory=time.monotonic)  # for priority aging

    output_ids: list[int] = field(default_factory=list)
    # KV bookkeeping: row in ReqToTokenPool; the first `kv_len` tokens of fill_ids have KV there,
    # the first `tree_owned_len` of those slots belong to the radix tree (locked via last_node).
    req_pool_idx: int | None = None
    kv_len: int = 0
    tree_owned_len: int = 0
    last_node: TreeNode | None = None
    # (first slot, length) while the row's first `length` slots are the ascending run first..first+length-1,
    # as the host allocated them (engine.kv_manager.extend_slot_run); None once unknown. A long one-request
    # prefill over such a run reads the pool as a plain tensor (FlashInfer's dense path) without a device sync.
    kv_run: tuple[int, int] | None = None
    cached_tokens: int = 0  # reported: prefix reused at first admission
    is_admitted_once: bool = False
    extend_len: int = 0  # tokens this step computes
    # speculative decoding (engine/speculative): verify passes, drafts proposed and accepted
    spec_verify_ct: int = 0
    spec_num_proposed_drafts: int = 0
    spec_num_correct_drafts: int = 0

    finish_reason: dict[str, Any] | None = None
    sent_len: int = 0  # output tokens already reported to the client
    # logprobs not yet reported: [logprob, token_id] and top lists
    pending_output_logprobs: list[list[Any]] = field(default_factory=list)
    pending_output_top: list[list[list[Any]]] = field(default_factory=list)
    input_logprobs: list[list[Any]] = field(default_factory=list)
    input_top: list[list[list[Any]] | None] = field(default_factory=list)
    is_input_logprobs_done: bool = False
    is_input_logprobs_sent: bool = False

    @property
    def fill_ids(self) -> list[int]:
        return self.origin_input_ids + self.output_ids

    @property
    def fill_len(self) -> int:
        return len(self.origin_input_ids) + len(self.output_ids)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def wants_input_logprobs(self) -> bool:
        return (self.return_logprob and self.logprob_start_len >= 0
                and self.logprob_start_len < len(self.origin_input_ids) and not self.is_input_logprobs_done)

    @property
    def max_prefix_len(self) -> int:
        """Longest cached prefix this request may reuse: at least one token must be computed to get
        logits, and prompt logprobs need hidden states from logprob_start_len - 1 on."""
        limit = self.fill_len - 1
        if self.wants_input_logprobs:
            limit = min(limit, max(self.logprob_start_len - 1, 0))
        return max(limit, 0)
