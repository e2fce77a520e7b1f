"""Which batch a scheduler step runs next: a prefill of waiting prompts (chunked, interleaved with the
running decodes or carrying them as mixed rows, per the flags), else one decode step for every running
request, retracting the least advanced ones when KV runs out. The planning rules live in
`engine.schedule_policy`, `engine.prefill_interleave` and `engine.mixed_chunk`; this mixin applies them to
the scheduler's queues."""

from __future__ import annotations

import logging

from engine.batch_builder import ScheduleBatch
from engine.forward_batch import ForwardMode
from engine.mixed_chunk import add_decode_rows, mixed_prefill_budget
from engine.prefill_interleave import (
    interleaved_chunk_size,
    prefill_backlog,
    prefill_may_run,
    step_interleave_tokens,
)
from engine.schedule_policy import pick_retractions, plan_prefill

logger = logging.getLogger(__name__)

# KV slots kept free per running request when admitting new prefills, so decodes rarely retract.
DECODE_HEADROOM = 8


class BatchSelectionMixin:
    """Expects Scheduler's attributes: args, kv, runner, waiting, running, chunked, _last_step_prefilled,
    num_mixed_steps, num_retractions, _finish."""

    def _next_batch(self) -> ScheduleBatch | None:
        return self._next_prefill() or self._next_decode()

    def _next_prefill(self) -> ScheduleBatch | None:
        interleave = self.args.prefill_interleave_tokens
        if interleave and self.running:  # with nothing decoding the budget does not apply: no need to count
            limit = self.args.interleave_backlog_tokens
            interleave = step_interleave_tokens(interleave, prefill_backlog(self.waiting, self.chunked, limit), limit)
        last_was_prefill, self._last_step_prefilled = self._last_step_prefilled, False
        if (self.waiting or self.chunked) and prefill_may_run(interleave, len(self.running), last_was_prefill):
            mixed = self.args.enable_mixed_chunk
            chunk_size = (mixed_prefill_budget(self.runner.chunked_prefill_size, self.args.mixed_chunk_step_tokens,
                                               len(self.running)) if mixed else
                          interleaved_chunk_size(self.runner.chunked_prefill_size, interleave, len(self.running)))
            plan = plan_prefill(self.waiting, self.chunked, len(self.running), self.kv, self.args.schedule_policy,
                                self.runner.max_running_requests, chunk_size, DECODE_HEADROOM,
                                priority_aging_s=self.args.priority_aging_interval)
            if plan.reqs:
                self.chunked = plan.chunked
                for req in plan.reqs:
                    if req in self.waiting:
                        self.waiting.remove(req)
                batch = ScheduleBatch(ForwardMode.EXTEND, plan.reqs)
                if mixed and add_decode_rows(batch, self.running, self.kv):
                    self.num_mixed_steps += 1
                self._last_step_prefilled = True
                return batch
        return None

    def _next_decode(self) -> ScheduleBatch | None:
        if not self.running:
            return None
        for req in pick_retractions(self.running, self.kv):
            self.running.remove(req)
            self.waiting.append(req)
            self.num_retractions += 1
            logger.info("KV cache full: retracted %s after %d tokens", req.rid, len(req.output_ids))
        reqs = list(self.running)
        slots = self.kv.alloc(len(reqs))
        if slots is not None:  # one allocation and one req_to_token store for the whole batch
            for req in reqs:
                req.extend_len = 1
            return ScheduleBatch(ForwardMode.DECODE, reqs, decode_slots=slots)
        for req in list(self.running):
            req.extend_len = 1
            if self.kv.extend(req, 1) is None:
                # Only a lone request whose sequence outgrew the whole cache gets here.
                self.running.remove(req)
                self._finish(req, {"type": "abort", "message": "the KV cache is too small for this sequence"})
        return ScheduleBatch(ForwardMode.DECODE, list(self.running)) if self.running else None
