"""SpeculativeMixin: the Scheduler's side of speculative decoding — run a decode batch through the
SpeculativeWorker and commit the accepted tokens through the normal finish checks."""

from __future__ import annotations

import logging
import time
from typing import Any

from engine.batch_builder import ScheduleBatch
from engine.req import Req
from engine.speculative.worker import SpecStepResult, SpeculativeWorker

logger = logging.getLogger(__name__)


class SpeculativeMixin:
    """Expects Scheduler's attributes: args, runner, kv, tp, sampler, running, stop_checker,
    num_generated, _throughput_window, _finish, _emit."""

    spec: SpeculativeWorker | None

    def _init_speculative(self) -> None:
        self.spec = None
        if self.args.speculative_mode is None:
            return
        self.spec = SpeculativeWorker(self.args, self.runner, self.kv, self.tp, self.sampler.generator)
        logger.info("speculative decoding: %s, %d draft tokens per step (verification as one-token decode rows, "
                    "in CUDA graphs while they fit; overlap scheduling off)", self.args.speculative_mode,
                    self.args.speculative_num_draft_tokens)

    def _try_speculative(self, batch: ScheduleBatch) -> bool:
        """True when the decode batch ran speculatively (its tokens are committed)."""
        if self.spec is None or not batch.mode.is_decode:
            return False
        result = self.spec.run(batch)
        if result is None:
            return False
        self._commit_speculative(result)
        return True

    def _commit_speculative(self, result: SpecStepResult) -> None:
        emitted = 0
        for req, num_drafts, tokens, num_accepted in zip(result.reqs, result.num_drafts, result.verdict.tokens,
                                                         result.verdict.num_accepted):
            base = req.kv_len  # position of the last committed token; drafts sit at base + 1 ..
            req.spec_verify_ct += 1
            req.spec_num_proposed_drafts += num_drafts
            req.spec_num_correct_drafts += num_accepted
            reason: dict[str, Any] | None = None
            kept = 0
            for tok in tokens:  # one at a time, so EOS / stop strings / max_new_tokens truncate the run
                req.output_ids.append(tok)
                kept += 1
                reason = self.stop_checker.check(req)
                if reason is not None:
                    break
            emitted += kept
            # KV now covers every committed token but the newest (as after a normal decode step).
            req.kv_len = base + kept
            self.spec.free_positions(req, base + kept, base + num_drafts + 1)
            if reason is not None:
                if req in self.running:
                    self.running.remove(req)
                self._finish(req, reason)
        self.num_generated += emitted
        self.spec.num_emitted_tokens += emitted
        self._throughput_window.append((time.monotonic(), emitted))
        self._emit([r for r in result.reqs if not r.finished and (r.stream or r.sent_len == 0)])

    def _release_speculative(self, req: Req) -> None:
        if self.spec is not None:
            self.spec.release(req)

    def speculative_stats(self) -> dict[str, Any]:
        return self.spec.stats() if self.spec is not None else {}
