"""Speculative decoding: a proposer guesses K tokens per running request, one target pass verifies them.

Shape of one speculative decode step (`worker.SpeculativeWorker.run`):
  1. propose: `ngram.NgramProposer` (prompt lookup, deterministic) or `draft_model.DraftModelProposer`
     (a smaller model with its own ModelRunner, KV pool and ReqToTokenPool; its KV is kept in sync
     with each request's accepted tokens by longest-common-prefix rollback).
  2. verify: one pass of the target over [last token + drafts] per request, logits at every position
     (`batch.build_rows_forward_batch`: one-token DECODE rows, which CUDA graphs replay, while they fit
     the graphs' batch sizes, else one EXTEND pass); `verify.accept` keeps the longest greedy-matching
     prefix plus the target's own next token, or does rejection sampling so sampled outputs keep the
     target's distribution.
  3. commit (`scheduler_hook.SpeculativeMixin`): tokens are appended one by one through the normal
     stop checks; KV slots of rejected or truncated positions are freed.
A decode batch speculates only when every request in it can (see `worker.is_speculatable`);
otherwise it runs as a normal decode step.
"""

from __future__ import annotations
