"""Draft-model proposer: a smaller model sharing the target's tokenizer proposes K tokens autoregressively.

The draft has its own ModelRunner — its own KV pool and ReqToTokenPool (the shapes differ from the
target's, so the target's pool cannot hold them) and no radix cache (draft KV is cheap to recompute).
Per request it remembers which tokens its KV holds; before each proposal it keeps the longest common
prefix of those and the request's current tokens (rejected drafts fall away, retraction or anything
else that changed the sequence is handled the same way), frees the rest, and computes what is missing
in one EXTEND pass whose last logits give draft 1; drafts 2..K are DECODE passes (CUDA graphs replay
them). Under TP the draft runs tensor-parallel on the same ranks; sampled drafts are broadcast from
rank 0 so every rank feeds its draft the same tokens.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from engine.attention import lacks_flashinfer_kernels
from engine.distributed.parallel_state import TPContext
from engine.req import Req
from engine.speculative.batch import TokenRow, build_rows_forward_batch, decode_rows_limit
from engine.speculative.proposer import BaseProposer, Proposal
from engine.speculative.verify import sampling_probs

logger = logging.getLogger(__name__)


@dataclass
class DraftSeq:
    pool_row: int
    tokens: list[int] = field(default_factory=list)  # tokens whose KV the draft pool holds, in order


def common_prefix_len(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def draft_backend_args(draft_args, head_dim: int):
    """The draft runs on the target's attention backend, unless that is FlashInfer-based and FlashInfer has
    no kernels for the draft's head size: a small draft often has an odd one (the target's explicit
    `--attention-backend hybrid` must not make a draft it cannot serve fail the start). Then triton."""
    if lacks_flashinfer_kernels(draft_args.resolved_attention_backend, head_dim):
        logger.info("speculative: the draft's head size %d has no FlashInfer kernels; the draft runs on triton",
                    head_dim)
        return draft_args.replace(attention_backend="triton")
    return draft_args


class DraftModelProposer(BaseProposer):
    def __init__(self, args, target_runner, tp: TPContext) -> None:
        from engine.model_config import create_model_config
        from engine.model_runner import ModelRunner

        draft_args = args.for_draft_model(
            context_length=target_runner.model_config.context_len,
            max_total_tokens=target_runner.max_total_tokens,
            max_running_requests=target_runner.max_running_requests)
        device = target_runner.device
        draft_config = create_model_config(draft_args, device.type)
        draft_args = draft_backend_args(draft_args, draft_config.head_dim)
        self.runner = ModelRunner(draft_args, draft_config, tp, device)
        self.tp = tp
        self.device = device
        self.allocator = self.runner.kv_pool.allocator
        self.req_pool = self.runner.req_pool
        self.seqs: dict[str, DraftSeq] = {}
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed((args.random_seed or 0) + 7919)

    # ---- KV bookkeeping -------------------------------------------------------------------
    def release(self, req: Req) -> None:
        seq = self.seqs.pop(req.rid, None)
        if seq is None:
            return
        self.allocator.free(self.req_pool.read(seq.pool_row, len(seq.tokens)))
        self.req_pool.free(seq.pool_row)

    def _drop_absent(self, present: set[str]) -> None:
        for rid in [rid for rid in self.seqs if rid not in present]:
            seq = self.seqs.pop(rid)
            self.allocator.free(self.req_pool.read(seq.pool_row, len(seq.tokens)))
            self.req_pool.free(seq.pool_row)

    def _truncate(self, seq: DraftSeq, keep: int) -> None:
        if keep < len(seq.tokens):
            self.allocator.free(self.req_pool.req_to_token[seq.pool_row, keep:len(seq.tokens)].to(torch.int64))
            del seq.tokens[keep:]

    def _append_slots(self, seq: DraftSeq, num: int) -> bool:
        slots = self.allocator.alloc(num)
        if slots is None:
            return False
        self.req_pool.write(seq.pool_row, len(seq.tokens), slots)
        return True

    def _sync(self, req: Req) -> TokenRow | None:
        """Rolls the draft's KV for req back to what still matches and returns the tokens to compute."""
        seq = self.seqs.get(req.rid)
        if seq is None:
            row = self.req_pool.alloc()
            if row is None:
                return None
            seq = self.seqs[req.rid] = DraftSeq(pool_row=row)
        target = req.fill_ids
        self._truncate(seq, min(common_prefix_len(seq.tokens, target), len(target) - 1))
        missing = target[len(seq.tokens):]
        if not self._append_slots(seq, len(missing)):
            return None
        row = TokenRow(seq.pool_row, len(seq.tokens), missing)
        seq.tokens.extend(missing)
        return row

    def stats(self) -> dict[str, float]:
        return {"spec_draft_kv_used_tokens": self.runner.kv_pool.size - self.allocator.num_free,
                "spec_draft_tracked_reqs": len(self.seqs)}

    # ---- proposing ------------------------------------------------------------------------
    def propose(self, reqs: list[Req], max_drafts: list[int]) -> Proposal | None:
        try:
            return self._propose(reqs, max_drafts)
        except Exception:
            for req in reqs:  # the KV these claim may be half-written: forget it
                self.release(req)
            raise

    def _propose(self, reqs: list[Req], max_drafts: list[int]) -> Proposal | None:
        active = [i for i, k in enumerate(max_drafts) if k > 0]
        drafts: list[list[int]] = [[] for _ in reqs]
        if not active:
            return Proposal(drafts=drafts)
        rows = []
        for i in active:
            row = self._sync(reqs[i])
            if row is None:
                # Rows or slots ran out: drop the state of requests not in this batch (retracted ones
                # waiting to resume) and try once more; else start these requests over next time.
                self._drop_absent({r.rid for r in reqs})
                row = self._sync(reqs[i])
            if row is None:
                for j in active:
                    self.release(reqs[j])
                return None
            rows.append(row)
        max_k = max(max_drafts)
        sampled = any(not reqs[i].sampling.is_greedy for i in active)
        draft_probs = None
        if sampled:
            draft_probs = torch.zeros((len(reqs), max_k, self.runner.model_config.vocab_size), device=self.device)
        # Usually one or two tokens per row (the accepted run's last token): a graphed decode batch.
        fb = build_rows_forward_batch(rows, self.req_pool.req_to_token, self.device, all_logits=False,
                                      max_decode_rows=decode_rows_limit(self.runner))
        logits = self.runner.forward(fb)  # [len(active), V]
        for step in range(max_k):
            chosen = self._choose(logits, [reqs[i] for i in active], step, active, draft_probs)
            for i, tok in zip(active, chosen):
                drafts[i].append(tok)
            active = [i for i in active if max_drafts[i] > step + 1]
            if not active:
                break
            slots = self.allocator.alloc(len(active))
            if slots is None:
                return Proposal(drafts=drafts, draft_probs=draft_probs)  # shorter drafts are still valid
            rows = []
            for i, slot in zip(active, slots):
                seq = self.seqs[reqs[i].rid]
                self.req_pool.write(seq.pool_row, len(seq.tokens), slot.view(1))
                rows.append(TokenRow(seq.pool_row, len(seq.tokens), [drafts[i][-1]]))
                seq.tokens.append(drafts[i][-1])
            fb = build_rows_forward_batch(rows, self.req_pool.req_to_token, self.device, all_logits=False)
            logits = self.runner.forward(fb)
        return Proposal(drafts=drafts, draft_probs=draft_probs)

    def _choose(self, logits: torch.Tensor, reqs: list[Req], step: int, batch_idx: list[int],
                draft_probs: torch.Tensor | None) -> list[int]:
        """Greedy rows take the draft's argmax; sampled rows draw from the draft's sampling
        distribution q, which is recorded for rejection sampling."""
        chosen = logits.argmax(dim=-1)
        if draft_probs is not None:
            q = sampling_probs(logits, reqs)
            drawn = torch.multinomial(q, 1, generator=self.generator).squeeze(1)
            is_sampled = torch.tensor([not r.sampling.is_greedy for r in reqs], device=logits.device)
            chosen = torch.where(is_sampled, drawn, chosen)
            draft_probs[torch.tensor(batch_idx, device=logits.device), step] = q
        return self.tp.broadcast_tensor(chosen.contiguous()).tolist()
