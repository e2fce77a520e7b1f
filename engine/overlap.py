"""Overlap scheduling: launch decode step N+1 before reading step N's sampled tokens.

A decode step's input tokens are the previous step's outputs, which already sit on the GPU, so the
next step can be queued behind the current one without a host round trip; the host then reads the
current step's tokens (waiting on an event recorded right after its sampling, not on the newer
step) and does the finish checks and output while the GPU works. The price is that a request that
finishes at step N has already been given a row in step N+1: that row is ignored, and the KV slot
it wrote is released with the request (stream order keeps later users of that slot behind it).

Prefills are launched the same way (`OverlapMixin._prefill_before_commit`): a prompt due for a prefill step
is planned and queued behind the running decode step before that step's tokens are read, so the GPU
does not idle while the host commits the decode and builds the prefill. When waiting prompts cannot
start yet (no free row or KV), decode steps keep chaining instead of dropping to the in-order path.

Only "plain" decode rows are chained: no logprobs, penalties, logit bias, sampling seed (its noise
depends on the host's output count), pending min_new_tokens or jump-forward; everything else goes
through the scheduler's in-order path, as does retraction.

Grammar-constrained rows are chained too: step N+1's forward is queued before step N's tokens are
read, and its sampling waits until they are (`InflightDecode.logits` holds the pending logits); the
host then advances the matchers with step N's tokens and fills step N+1's mask while the GPU still
runs that forward, so the mask costs no GPU idle time.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch

from engine.batch_builder import ScheduleBatch, build_forward_batch
from engine.forward_batch import ForwardMode
from engine.req import Req

# Overlap buys nothing on the CPU (every op is synchronous); tests turn it on there to cover the logic.
CPU_OVERLAP_ENV = "TESSERA_OVERLAP_ON_CPU"


def overlap_enabled(args, device: torch.device) -> bool:
    if args.disable_overlap_schedule or args.speculative_mode is not None:
        return False  # speculative steps commit a variable number of tokens: nothing to chain
    return device.type == "cuda" or os.environ.get(CPU_OVERLAP_ENV) == "1"


def is_plain(req: Req) -> bool:
    sp = req.sampling
    return not ((req.grammar is not None and not req.grammar.chainable) or req.return_logprob or sp.logit_bias or sp.frequency_penalty or sp.presence_penalty
                or sp.repetition_penalty != 1.0 or sp.sampling_seed is not None
                or len(req.output_ids) < sp.min_new_tokens)


def is_chainable(batch: ScheduleBatch) -> bool:
    return batch.mode.is_decode and all(is_plain(r) for r in batch.reqs)


@dataclass
class InflightDecode:
    """A launched decode step: its sampled ids on the device and their host copy in flight."""
    batch: ScheduleBatch
    next_ids_gpu: torch.Tensor | None  # [B] int64
    next_ids_host: torch.Tensor | None  # [B] int64, pinned on CUDA, filled by an async copy
    done: torch.cuda.Event | None
    logits: torch.Tensor | None = None  # set while sampling waits for the previous step's tokens

    @classmethod
    def start(cls, batch: ScheduleBatch, next_ids_gpu: torch.Tensor) -> InflightDecode:
        is_cuda = next_ids_gpu.is_cuda
        host = torch.empty(next_ids_gpu.shape, dtype=next_ids_gpu.dtype, pin_memory=is_cuda)
        host.copy_(next_ids_gpu, non_blocking=is_cuda)
        done = None
        if is_cuda:
            done = torch.cuda.Event()
            done.record()
        return cls(batch, next_ids_gpu, host, done)

    def wait(self) -> list[int]:
        if self.done is not None:
            self.done.synchronize()
        return self.next_ids_host.tolist()


class OverlapMixin:
    """The scheduler's overlap half; expects Scheduler's attributes (kv, runner, sampler, ...)."""

    def _chain_decode(self, prev: InflightDecode, prefill_planned: bool = False) -> ScheduleBatch | None:
        """The decode step after `prev`, fed prev's sampled ids on the device; None when the next
        step must see prev's results first (new requests to admit, KV to retract, a request that
        needs host-side sampling state). `prefill_planned`: the caller just tried to plan a prefill
        for the waiting requests and none could start (no row or KV for them yet)."""
        if (self.waiting or self.chunked) and not prefill_planned:
            return None  # prefill priority: admission happens on the in-order path
        reqs = [r for r in prev.batch.reqs if not r.finished]
        if not reqs or len(reqs) != len(self.running) or not is_chainable(ScheduleBatch(ForwardMode.DECODE, reqs)):
            return None
        if self.kv.available < len(reqs):
            return None
        slots = self.kv.alloc(len(reqs))
        if slots is None:
            return None
        ids = prev.next_ids_gpu
        if len(reqs) != len(prev.batch.reqs):
            keep = [i for i, r in enumerate(prev.batch.reqs) if not r.finished]
            ids = ids[torch.tensor(keep).to(ids.device, non_blocking=True)]
        for req in reqs:
            req.extend_len = 1
        return ScheduleBatch(ForwardMode.DECODE, reqs, decode_slots=slots, input_ids_gpu=ids)

    def _launch(self, batch: ScheduleBatch, defer_grammar: bool = False) -> InflightDecode:
        """Queues the forward; samples at once unless `defer_grammar` and a row has a grammar whose
        matcher still waits for the previous step's token (then `_sample_deferred` finishes it)."""
        fb = build_forward_batch(batch, self.kv.req_pool, self.runner.device, self.runner.decode_inputs)
        defer = defer_grammar and any(r.grammar is not None for r in batch.reqs)
        # Sampled at once, the logits stay in the model's dtype (greedy rows need no fp32 copy); deferred ones
        # are an fp32 copy, which no later replay can overwrite.
        logits = self.runner.forward(fb, fp32=defer)
        if defer:
            return InflightDecode(batch, None, None, None, logits=logits)
        return self._sample_deferred(InflightDecode(batch, None, None, None, logits=logits))

    def _sample_deferred(self, inflight: InflightDecode) -> InflightDecode:
        batch, logits = inflight.batch, inflight.logits
        allowed = self.grammar.allowed(batch.reqs, logits.device)
        ids = self.tp.broadcast_tensor(self.sampler.choose(logits, batch.reqs, self.eos_ids, allowed))
        return InflightDecode.start(batch, ids)

    def _commit(self, inflight: InflightDecode) -> None:
        next_ids = inflight.wait()
        batch = inflight.batch
        num_new = 0
        for req, token in zip(batch.reqs, next_ids):
            if req.finished:
                continue  # finished or aborted after this step was launched: its row is void
            req.output_ids.append(token)
            num_new += 1
            reason = self.grammar.accept(req, token) or self.stop_checker.check(req)
            if reason is not None:
                self.running.remove(req)
                self._finish(req, reason)
        self.num_generated += num_new
        self._throughput_window.append((time.monotonic(), num_new))
        # Non-streaming requests still report their first token, so TTFT is measured when it is produced.
        self._emit([r for r in batch.reqs if not r.finished and (r.stream or r.sent_len == 0)])

    def _prefill_before_commit(self, prev: InflightDecode) -> tuple[ScheduleBatch, torch.Tensor] | None:
        """Plans and launches the next prefill step while decode step `prev` still runs, so the GPU goes
        from one to the other without waiting for the host to read prev's tokens (the prompts are other
        requests; their planning needs nothing prev computes). Not with mixed chunks: those carry the
        running decodes, whose next input is prev's output. None when no prefill is due."""
        if self.args.enable_mixed_chunk or not (self.waiting or self.chunked):
            return None
        batch = self._next_prefill()
        if batch is None:
            return None
        self._step_reqs = list(batch.reqs)
        self.num_forward_steps += 1
        try:
            logits = self.runner.forward(build_forward_batch(batch, self.kv.req_pool, self.runner.device))
        except Exception:
            self._commit(prev)  # prev's tokens are good: deliver them; the prefill's requests fail alone
            raise
        return batch, logits
