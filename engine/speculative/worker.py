"""SpeculativeWorker: one speculative decode step for a decode batch — propose, verify in one target
EXTEND pass, accept — and the bookkeeping of target KV slots for drafted positions."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch

from engine.batch_builder import ScheduleBatch
from engine.kv_manager import KVManager
from engine.req import Req
from engine.speculative.batch import TokenRow, build_rows_forward_batch, decode_rows_limit
from engine.speculative.proposer import BaseProposer
from engine.speculative.verify import Verdict, accept

logger = logging.getLogger(__name__)


def is_speculatable(req: Req) -> bool:
    """Requests whose next-token distribution does not depend on state speculation would have to
    replay per drafted position fall back to normal decoding: grammar constraints (the matcher would
    have to advance over drafts and roll back), logprobs, penalties and logit bias (they depend on the
    output so far), a sampling seed (its noise is keyed on the output count, so the seeded sequence
    would change), and pending min_new_tokens (EOS masking changes within the drafted run)."""
    sp = req.sampling
    return not (req.grammar is not None or req.return_logprob or sp.logit_bias or sp.frequency_penalty
                or sp.presence_penalty or sp.repetition_penalty != 1.0 or sp.sampling_seed is not None
                or len(req.output_ids) < sp.min_new_tokens)


# Benchmarks only (bench/spec_bench.py --modes wrong): propose K copies of this token id, which the
# target almost never predicts, to measure the mechanics' overhead at ~0 % acceptance.
FIXED_DRAFT_ENV = "TESSERA_SPEC_FIXED_DRAFT_TOKEN"


def create_proposer(args, runner, tp) -> BaseProposer:
    fixed = os.environ.get(FIXED_DRAFT_ENV)
    if fixed is not None:
        from engine.speculative.proposer import FixedTokenProposer

        logger.warning("%s=%s: proposing a fixed token (benchmark mode)", FIXED_DRAFT_ENV, fixed)
        return FixedTokenProposer(int(fixed))
    if args.speculative_mode == "ngram":
        from engine.speculative.ngram import NgramProposer

        return NgramProposer(args.speculative_ngram_max_match, args.speculative_ngram_min_match)
    from engine.speculative.draft_model import DraftModelProposer

    return DraftModelProposer(args, runner, tp)


# Pauses (in output tokens) after acceptance falls below --speculative-min-accept-rate: the first, the longest.
MIN_PAUSE, MAX_PAUSE = 16, 128


@dataclass
class AcceptanceTracker:
    """Per request: a running average of its acceptance rate and when it may speculate again."""
    rate: float = 1.0
    pause: int = 0
    resume_at: int = 0  # output length from which it speculates again


@dataclass
class SpecStepResult:
    reqs: list[Req]
    num_drafts: list[int]  # tokens proposed per request (their KV sits after each kv_len)
    verdict: Verdict


class SpeculativeWorker:
    def __init__(self, args, runner, kv: KVManager, tp, generator: torch.Generator,
                 proposer: BaseProposer | None = None) -> None:
        self.num_draft_tokens = args.speculative_num_draft_tokens
        self.runner = runner
        self.kv = kv
        self.tp = tp
        self.generator = generator
        self.context_len = runner.model_config.context_len
        self.proposer = proposer or create_proposer(args, runner, tp)
        self.min_accept_rate = args.speculative_min_accept_rate
        self.trackers: dict[str, AcceptanceTracker] = {}
        self.num_verify_steps = 0
        self.num_verify_rows = 0
        self.num_draft_tokens_total = 0
        self.num_accepted_tokens = 0
        self.num_emitted_tokens = 0
        self.num_fallback_steps = 0

    def max_drafts(self, req: Req) -> int:
        """No drafts past max_new_tokens or the context length (the target token after them is free)."""
        tracker = self.trackers.get(req.rid)
        if tracker is not None and len(req.output_ids) < tracker.resume_at:
            return 0  # paused: its drafts kept failing
        left = min(req.sampling.max_new_tokens - len(req.output_ids), self.context_len - req.fill_len) - 1
        return max(0, min(self.num_draft_tokens, left))

    def _track(self, req: Req, num_drafts: int, num_accepted: int) -> None:
        if num_drafts == 0 or self.min_accept_rate <= 0:
            return
        t = self.trackers.setdefault(req.rid, AcceptanceTracker())
        t.rate = 0.5 * t.rate + 0.5 * num_accepted / num_drafts
        if t.rate < self.min_accept_rate:
            t.pause = min(max(2 * t.pause, MIN_PAUSE), MAX_PAUSE)
            t.resume_at = len(req.output_ids) + t.pause
            t.rate = self.min_accept_rate  # one good probe lifts it back over the bar
        elif num_accepted:
            t.pause = 0

    def run(self, batch: ScheduleBatch) -> SpecStepResult | None:
        """Verifies drafts for every request of a decode batch; None: run the batch as a normal decode
        (some request cannot speculate, nothing was proposed, or KV for the drafts is short)."""
        reqs = batch.reqs
        if not all(is_speculatable(r) for r in reqs):
            self.num_fallback_steps += 1
            return None
        max_drafts = [self.max_drafts(r) for r in reqs]
        proposal = self.proposer.propose(reqs, max_drafts) if any(max_drafts) else None
        if proposal is None or not any(proposal.drafts):
            self.num_fallback_steps += 1
            return None
        drafts = proposal.drafts
        extra = self.kv.alloc(sum(len(d) for d in drafts))
        if extra is None:
            self.num_fallback_steps += 1
            return None
        req_pool = self.kv.req_pool
        rows, used = [], 0
        for i, (req, d) in enumerate(zip(reqs, drafts)):
            if batch.decode_slots is not None:  # else the per-request path already wrote it at kv_len
                req_pool.write(req.req_pool_idx, req.kv_len, batch.decode_slots[i:i + 1])
            req_pool.write(req.req_pool_idx, req.kv_len + 1, extra[used:used + len(d)])
            used += len(d)
            last = req.origin_input_ids[req.kv_len] if req.kv_len < len(req.origin_input_ids) \
                else req.output_ids[req.kv_len - len(req.origin_input_ids)]
            rows.append(TokenRow(req.req_pool_idx, req.kv_len, [last] + d))
        try:
            fb = build_rows_forward_batch(rows, req_pool.req_to_token, self.runner.device, all_logits=True,
                                          max_decode_rows=decode_rows_limit(self.runner))
            logits = self.runner.forward(fb)  # [sum(len(d) + 1), V]; a graphed decode of one-token rows if they fit
            verdict = self._agree(accept(logits, reqs, drafts, proposal.draft_probs, self.generator))
        except Exception:
            # Nothing was committed (kv_len unchanged); the decode slots are freed with their requests.
            self.kv.allocator.free(extra)
            raise
        self.num_verify_steps += 1
        self.num_verify_rows += len(reqs)
        self.num_draft_tokens_total += sum(len(d) for d in drafts)
        self.num_accepted_tokens += sum(verdict.num_accepted)
        for req, d, a in zip(reqs, drafts, verdict.num_accepted):
            self._track(req, len(d), a)
        return SpecStepResult(reqs=reqs, num_drafts=[len(d) for d in drafts], verdict=verdict)

    def _agree(self, verdict: Verdict) -> Verdict:
        """Rank 0's random acceptance decisions reach every rank, so all commit the same tokens."""
        if self.tp.size == 1:
            return verdict
        width = self.num_draft_tokens + 1
        packed = torch.full((len(verdict.tokens), width + 1), -1, dtype=torch.int64)
        for i, (toks, a) in enumerate(zip(verdict.tokens, verdict.num_accepted)):
            packed[i, 0] = a
            packed[i, 1:1 + len(toks)] = torch.tensor(toks)
        packed = self.tp.broadcast_tensor(packed.to(self.runner.device)).cpu().tolist()
        return Verdict(tokens=[[t for t in row[1:] if t >= 0] for row in packed],
                       num_accepted=[row[0] for row in packed])

    def free_positions(self, req: Req, start: int, end: int) -> None:
        """Returns the target KV slots of req's positions [start, end) (rejected or truncated drafts)."""
        if end > start:
            self.kv.allocator.free(self.kv.req_pool.req_to_token[req.req_pool_idx, start:end].to(torch.int64))

    def release(self, req: Req) -> None:
        self.trackers.pop(req.rid, None)
        self.proposer.release(req)

    def stats(self) -> dict[str, float]:
        drafted = self.num_draft_tokens_total
        return {
            "spec_num_verify_steps": self.num_verify_steps,
            "spec_num_fallback_steps": self.num_fallback_steps,
            "spec_num_draft_tokens": drafted,
            "spec_num_accepted_tokens": self.num_accepted_tokens,
            "spec_accept_rate": self.num_accepted_tokens / drafted if drafted else 0.0,
            # tokens committed per request per verify pass (accepted drafts + the target's token)
            "spec_accept_length": self.num_emitted_tokens / self.num_verify_rows if self.num_verify_rows else 0.0,
            **self.proposer.stats(),
        }
