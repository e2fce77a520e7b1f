"""Scheduler: the single-threaded loop of one rank.

Each iteration: take new messages (rank 0 receives them and fans them out so all ranks stay in
lockstep), build the next batch (prefill chunks of waiting requests first, else one decode step for
all running requests, retracting some if KV runs out: `engine.batch_selection`), run the model, sample, check finishes and
report new tokens. Finished requests release their KV at once.

Overlap scheduling (CUDA, unless `--disable-overlap-schedule`; see `engine.overlap`): decode step
N+1 is launched before step N's tokens are read, so host work runs while the GPU computes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import torch

from engine.batch_builder import ScheduleBatch, build_forward_batch
from engine.batch_selection import BatchSelectionMixin
from engine.distributed.parallel_state import TPContext
from engine.fault_isolation import FaultIsolationMixin
from engine.grammar.manager import GrammarManager
from engine.kv_manager import KVManager
from engine.messages import (
    AbortReqMsg,
    BatchOutMsg,
    FlushCacheOutMsg,
    FlushCacheReqMsg,
    GenerateReqMsg,
    GetInfoReqMsg,
    InfoOutMsg,
    ReqOutput,
)
from engine.model_runner import ModelRunner
from engine.overlap import InflightDecode, OverlapMixin, is_chainable, overlap_enabled
from engine.req import Req
from engine.request_checks import check_request
from engine.sampling.sampler import SampleOutput, Sampler
from engine.sampling_params import SamplingParams, SamplingParamsError
from engine.speculative.scheduler_hook import SpeculativeMixin
from engine.stop_checker import StopChecker

logger = logging.getLogger(__name__)


class Scheduler(FaultIsolationMixin, BatchSelectionMixin, OverlapMixin, SpeculativeMixin):
    def __init__(self, args, runner: ModelRunner, tp: TPContext, tokenizer, eos_ids: list[int],
                 send: Callable[[Any], None]) -> None:
        self.args = args
        self.runner = runner
        self.tp = tp
        self.send = send
        self.eos_ids = eos_ids
        self.context_len = runner.model_config.context_len
        self.vocab_size = runner.model_config.vocab_size
        self.kv = KVManager(runner.kv_pool, runner.req_pool, args.disable_radix_cache)
        self.sampler = Sampler(runner.device, args.random_seed)
        self.stop_checker = StopChecker(tokenizer, eos_ids, self.context_len)
        self.grammar = GrammarManager(args, tokenizer, self.vocab_size, eos_ids, tp, self.context_len)
        self.waiting: list[Req] = []
        self.running: list[Req] = []
        self.chunked: Req | None = None
        self._arrivals = 0
        self.num_retractions = 0
        self.num_generated = 0
        self._throughput_window: list[tuple[float, int]] = []
        self.overlap = overlap_enabled(args, runner.device)
        self._inflight: InflightDecode | None = None  # a launched decode step whose tokens are unread
        self.num_overlapped_steps = 0
        self.num_failed_reqs = 0
        self._step_reqs: list[Req] = []
        self.num_forward_steps = 0
        self._init_speculative()  # engine.speculative: decode batches may verify drafts
        self._last_step_prefilled = False  # --interleave-prefill-tokens: the next step owes the decodes
        self.num_mixed_steps = 0  # prefill steps that carried the running decodes (--enable-mixed-chunk)
        self.num_prefills_before_commit = 0  # prefill steps queued behind a running decode step

    # ---- messages -------------------------------------------------------------------------
    def handle(self, msg: Any) -> None:
        if isinstance(msg, GenerateReqMsg):
            try:
                self._add_request(msg)
            except Exception as exc:  # a malformed request must never take the engine down
                logger.exception("rejected malformed request %s", msg.rid)
                self._reject(msg, f"invalid request: {exc}")
        elif isinstance(msg, AbortReqMsg):
            self._abort(msg.rid)
        elif isinstance(msg, FlushCacheReqMsg):
            busy = bool(self.running or self.waiting or self.chunked)
            ok = not busy and self.kv.flush()
            self._reply(FlushCacheOutMsg(success=ok, message="" if ok else "requests are running; retry when idle"))
        elif isinstance(msg, GetInfoReqMsg):
            self._reply(InfoOutMsg(info=self.stats()))

    def _reply(self, msg: Any) -> None:
        if self.tp.is_first:
            self.send(msg)

    def _add_request(self, msg: GenerateReqMsg) -> None:
        self._arrivals += 1
        try:
            sampling = SamplingParams.from_dict(msg.sampling)
            check_request(msg.input_ids, sampling, msg.return_logprob, msg.logprob_start_len, msg.top_logprobs_num,
                          self.vocab_size)
        except SamplingParamsError as exc:
            return self._reject(msg, str(exc))
        n = len(msg.input_ids)
        if n == 0:
            return self._reject(msg, "the prompt is empty")
        if n >= self.context_len:
            return self._reject(msg, f"the prompt has {n} tokens, which is not less than the context length "
                                     f"({self.context_len})")
        if n + 1 > self.runner.max_total_tokens:
            return self._reject(msg, f"the prompt has {n} tokens but the KV cache holds only "
                                     f"{self.runner.max_total_tokens}")
        req = Req(rid=msg.rid, origin_input_ids=list(msg.input_ids), sampling=sampling,
                  return_logprob=msg.return_logprob, logprob_start_len=msg.logprob_start_len,
                  top_logprobs_num=msg.top_logprobs_num, stream=msg.stream, arrival=self._arrivals,
                  priority=msg.priority)
        if sampling.grammar is None:
            self.waiting.append(req)
        elif (reason := self.grammar.admit(req)) is not None:  # else it waits in the grammar queue
            self._finish(req, reason)

    def _reject(self, msg: GenerateReqMsg, message: str) -> None:
        self._reply(BatchOutMsg(outputs=[ReqOutput(rid=msg.rid, new_token_ids=[], finished=True,
                                                   finish_reason={"type": "abort", "message": message},
                                                   prompt_tokens=len(msg.input_ids))]))

    def _abort(self, rid: str) -> None:
        queued = self.grammar.remove(rid)
        if queued is not None:
            self._finish(queued, {"type": "abort", "message": "aborted"})
        for queue in (self.waiting, self.running):
            for req in list(queue):
                if req.rid == rid:
                    queue.remove(req)
                    self._finish(req, {"type": "abort", "message": "aborted"})
        if self.chunked is not None and self.chunked.rid == rid:
            req, self.chunked = self.chunked, None
            self._finish(req, {"type": "abort", "message": "aborted"})

    # ---- one iteration --------------------------------------------------------------------
    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running or self.chunked or self._inflight or self.grammar.queue)

    def step(self) -> None:
        if self.grammar.queue:
            self._admit_compiled()
        if self._inflight is not None:
            prev, self._inflight = self._inflight, None
            self._step_reqs = list(prev.batch.reqs)
            early = self._prefill_before_commit(prev)
            if early is not None:  # queued behind prev on the GPU; its tokens are read after prev's
                self.num_prefills_before_commit += 1
                batch, logits = early
                # A commit that raises leaves the launched prefill unread: fault isolation fails both steps.
                self._step_reqs = [*prev.batch.reqs, *batch.reqs]
                self._commit(prev)
                self._step_reqs = list(batch.reqs)
                self._process(batch, logits)
                return
            # No prefill could be planned just now (or mixed chunks): keep decoding, overlapped.
            chained = self._chain_decode(prev, prefill_planned=not self.args.enable_mixed_chunk)
            if chained is not None:
                self._inflight = self._launch(chained, defer_grammar=True)  # queued behind prev on the GPU
                self.num_overlapped_steps += 1
                self.num_forward_steps += 1
            self._commit(prev)  # waits for prev's tokens only
            if chained is not None:
                if self._inflight.logits is not None:  # grammar masks fill while the forward runs
                    self._inflight = self._sample_deferred(self._inflight)
                return
        batch = self._next_batch()
        if batch is None:
            return
        self._step_reqs = list(batch.reqs)
        self.num_forward_steps += 1
        if self._try_speculative(batch):
            return
        if self.overlap and is_chainable(batch):
            self._inflight = self._launch(batch)
            return
        fb = build_forward_batch(batch, self.kv.req_pool, self.runner.device, self.runner.decode_inputs)
        logits = self.runner.forward(fb)
        self._process(batch, logits)

    def _admit_compiled(self) -> None:
        ready, failed = self.grammar.poll()
        self.waiting.extend(ready)
        for req, reason in failed:
            self._finish(req, reason)
        if not (self.waiting or self.running or self.chunked or self._inflight):
            self.grammar.wait_briefly()  # only compiles pending: don't spin

    def _process(self, batch: ScheduleBatch, logits: torch.Tensor) -> None:
        logprobs = None
        if any(r.return_logprob for r in batch.reqs):
            logprobs = torch.log_softmax(logits, dim=-1)
        sample_reqs, sample_rows = [], []
        num_prefill = batch.num_prefill_reqs
        for i, (req, (row0, n_rows, pos0), samples) in enumerate(zip(batch.reqs, batch.logit_rows, batch.samples)):
            if req.wants_input_logprobs and logprobs is not None:
                self._collect_input_logprobs(req, logprobs[row0:row0 + n_rows], pos0)
            if batch.mode.is_extend and i < num_prefill:  # decode rows riding along are not prefills
                # Prefilled tokens become shareable now, not when the request ends, so requests
                # queued behind it with the same prefix hit the cache.
                self.kv.cache_unfinished(req)
            if not samples:
                continue
            if req.wants_input_logprobs or (req.return_logprob and not req.is_input_logprobs_done):
                req.is_input_logprobs_done = True
            if req.sampling.max_new_tokens == 0:
                self._finish(req, {"type": "length", "length": 0})
                continue
            sample_reqs.append(req)
            sample_rows.append(row0 + n_rows - 1)
        if sample_reqs:
            rows = logits if len(sample_rows) == logits.shape[0] else logits[sample_rows]
            sample_reqs, parts = self.sample_isolated(self._sample_rows, rows, sample_reqs)
            next_ids = [t for part in parts for t in part.next_ids]
            out_lps = [x for part in parts for x in part.logprobs]
            out_tops = [x for part in parts for x in part.top_logprobs]
            for i, req in enumerate(sample_reqs):
                req.output_ids.append(next_ids[i])
                if req.return_logprob:
                    req.pending_output_logprobs.append([out_lps[i], next_ids[i]])
                    req.pending_output_top.append(out_tops[i])
                self.num_generated += 1
                reason = self.grammar.accept(req, next_ids[i]) or self.stop_checker.check(req)
                if reason is not None:
                    if req in self.running:
                        self.running.remove(req)
                    self._finish(req, reason)
                elif self.grammar.jump_forward(req):
                    if req in self.running:  # its forced tokens are computed in one extend step
                        self.running.remove(req)
                    self.waiting.append(req)
                elif req not in self.running:
                    self.running.append(req)
        self._throughput_window.append((time.monotonic(), len(sample_reqs)))
        # Non-streaming requests still report their first token, so TTFT is measured when it is produced.
        self._emit([r for r in batch.reqs if not r.finished and (r.stream or r.sent_len == 0)])

    def _sample_rows(self, rows: torch.Tensor, reqs: list[Req]) -> SampleOutput:
        """Next tokens of `rows` (identical on every TP rank); logprobs only when a request asks."""
        allowed = self.grammar.allowed(reqs, rows.device)
        if any(r.return_logprob for r in reqs):
            out = self.sampler.sample(rows, reqs, self.eos_ids, allowed)
            if self.tp.size > 1:
                out.next_ids = self.tp.broadcast_tensor(torch.tensor(out.next_ids, device=rows.device)).tolist()
            return out
        next_ids = self.tp.broadcast_tensor(self.sampler.choose(rows, reqs, self.eos_ids, allowed)).tolist()
        return SampleOutput(next_ids=next_ids, logprobs=[0.0] * len(reqs), top_logprobs=[None] * len(reqs))

    def _collect_input_logprobs(self, req: Req, rows: torch.Tensor, pos0: int) -> None:
        """rows[j] holds the distribution after prompt position pos0 + j, predicting token pos0 + j + 1."""
        prompt = req.origin_input_ids
        if not req.input_logprobs and req.logprob_start_len == 0:
            req.input_logprobs.append([None, prompt[0]])
            req.input_top.append(None)
        last = min(pos0 + rows.shape[0], len(prompt) - 1)  # positions predicting prompt tokens only
        positions = list(range(max(pos0, req.logprob_start_len - 1), last))
        if not positions:
            return
        sel = rows[[p - pos0 for p in positions]]
        targets = torch.tensor([prompt[p + 1] for p in positions], device=rows.device)
        chosen = sel.gather(1, targets[:, None]).squeeze(1).tolist()
        req.input_logprobs.extend([lp, prompt[p + 1]] for lp, p in zip(chosen, positions))
        if req.top_logprobs_num > 0:
            vals, ids = sel.topk(req.top_logprobs_num, dim=-1)
            req.input_top.extend([[v, i] for v, i in zip(vr, ir)] for vr, ir in zip(vals.tolist(), ids.tolist()))
        else:
            req.input_top.extend([None] * len(positions))

    # ---- finishing and output -------------------------------------------------------------
    def _finish(self, req: Req, reason: dict[str, Any]) -> None:
        req.finish_reason = reason
        self.kv.release(req)
        self._release_speculative(req)
        self._emit([req])

    def _emit(self, reqs: list[Req]) -> None:
        if not self.tp.is_first or not reqs:
            return
        outs = []
        for req in reqs:
            new = req.output_ids[req.sent_len:]
            if not new and not req.finished and not (req.return_logprob and req.input_logprobs
                                                     and not req.is_input_logprobs_sent):
                continue
            out = ReqOutput(rid=req.rid, new_token_ids=new, finished=req.finished, finish_reason=req.finish_reason,
                            prompt_tokens=len(req.origin_input_ids), completion_tokens=len(req.output_ids),
                            cached_tokens=req.cached_tokens, spec_verify_ct=req.spec_verify_ct,
                            spec_num_proposed_drafts=req.spec_num_proposed_drafts,
                            spec_num_correct_drafts=req.spec_num_correct_drafts)
            if req.return_logprob:
                out.output_logprobs, out.output_top_logprobs = req.pending_output_logprobs, req.pending_output_top
                req.pending_output_logprobs, req.pending_output_top = [], []
                if not req.is_input_logprobs_sent and (req.is_input_logprobs_done or req.finished):
                    out.input_logprobs, out.input_top_logprobs = req.input_logprobs, req.input_top
                    req.is_input_logprobs_sent = True
            req.sent_len = len(req.output_ids)
            outs.append(out)
        if outs:
            self.send(BatchOutMsg(outputs=outs))

    # ---- introspection --------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        now = time.monotonic()
        self._throughput_window = [(t, n) for t, n in self._throughput_window if now - t < 5.0]
        span = now - self._throughput_window[0][0] if len(self._throughput_window) > 1 else 0.0
        gen = sum(n for _, n in self._throughput_window)
        pool = self.runner.kv_pool
        return {
            "num_running_reqs": len(self.running) + (1 if self.chunked else 0),
            "num_queued_reqs": len(self.waiting),
            "kv_total_tokens": pool.size,
            "kv_used_tokens": self.kv.used_tokens,
            "kv_free_tokens": self.kv.allocator.num_free,
            "kv_evictable_tokens": self.kv.tree.evictable_size,
            "kv_protected_tokens": self.kv.tree.protected_size,
            "token_usage": (self.kv.used_tokens - self.kv.tree.evictable_size) / pool.size,
            "cache_hit_rate": self.kv.tree.hit_rate,
            "cache_query_tokens": self.kv.tree.num_query_tokens,
            "cache_hit_tokens": self.kv.tree.num_hit_tokens,
            "gen_throughput": gen / span if span > 0 else 0.0,
            "num_generated_tokens": self.num_generated,
            "num_retractions": self.num_retractions,
            "num_overlapped_steps": self.num_overlapped_steps,
            "num_failed_reqs": self.num_failed_reqs,
            "num_forward_steps": self.num_forward_steps,
            "num_mixed_steps": self.num_mixed_steps,
            "num_prefills_before_commit": self.num_prefills_before_commit,
            **self.grammar.stats(),
            **self.speculative_stats(),
            "max_total_tokens": self.runner.max_total_tokens,
            "max_running_requests": self.runner.max_running_requests,
        }
