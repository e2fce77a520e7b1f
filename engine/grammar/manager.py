"""GrammarManager: everything the scheduler does for constrained requests, behind five calls.

    admit(req)            -> error text or None; the request waits in the grammar queue
    poll()                -> (ready, failed): requests whose compile finished / failed / timed out
    allowed(reqs, device) -> bool [B, V] mask for the rows being sampled, or None if none constrained
    accept(req, token)    -> finish reason when the grammar ended or refused the token, else None
    jump_forward(req)     -> True when the grammar's forced continuation was appended (then the
                             request needs an extend step for those tokens instead of a decode)
    remove(rid)           -> the queued request with that id, if any (abort)

Tensor parallelism: every rank compiles the same spec (deterministic) and advances its own matchers
with the tokens rank 0 broadcasts, so grammar termination is decided identically everywhere; only
rank 0's mask matters (its sample is the one broadcast). Which queued requests leave the queue
depends on compile timing, so rank 0 decides and broadcasts that decision.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import FIRST_COMPLETED, wait
from dataclasses import dataclass
from typing import Any

import torch

from engine.grammar.backend import GrammarBackendUnavailable, make_backend
from engine.grammar.compile_service import CompileService
from engine.grammar.jump_forward import JumpForward
from engine.grammar.masking import unpack_bitmask
from engine.grammar.spec_check import GrammarSpecError
from engine.req import Req

logger = logging.getLogger(__name__)


@dataclass
class GrammarState:
    """One request's matcher plus the bookkeeping the scheduler reports."""

    kind: str
    matcher: Any
    # Overlap scheduling may chain this request's decode steps unless jump-forward can rewrite its
    # last token after the next step was already launched with it.
    chainable: bool = True


def grammar_abort(message: str, param: str) -> dict[str, Any]:
    # status_code/param let the HTTP layer answer 400 naming the field, as SGLang's aborts do.
    return {"type": "abort", "message": message, "status_code": 400, "param": param}


class GrammarManager:
    def __init__(self, args: Any, tokenizer: Any, vocab_size: int, eos_ids: list[int], tp: Any,
                 context_len: int) -> None:
        self.args = args
        self.tp = tp
        self.vocab_size = vocab_size
        self.jump = JumpForward(tokenizer, context_len) if getattr(args, "enable_jump_forward", False) else None
        self.timeout = float(getattr(args, "grammar_compile_timeout", 30.0))
        ws = getattr(args, "constrained_json_max_whitespace_cnt", None)
        self.service = CompileService(
            lambda: make_backend(args.grammar_backend, tokenizer, vocab_size, eos_ids, ws),
            num_workers=getattr(args, "grammar_compile_workers", 2))
        if args.grammar_backend != "none" and tokenizer is not None:
            # Built now, on the scheduler thread: importing xgrammar and reading the vocabulary on a
            # worker thread would hold the import lock and the GIL while the batch is running.
            self.service.prepare()
        self.queue: list[tuple[Req, Any, float]] = []  # (req, future, deadline)
        self._pinned: list[torch.Tensor] = []  # two page-locked host bitmasks, used in turn (CUDA only)
        self._turn = 0
        # Host time spent on masks and matcher updates (reported by /get_server_info; the overlap
        # scheduler hides it behind the forward pass only while it stays shorter than one).
        self.mask_fill_s = 0.0
        self.accept_s = 0.0

    # ---- admission ------------------------------------------------------------------------
    def admit(self, req: Req) -> dict[str, Any] | None:
        kind, spec = req.sampling.grammar
        if self.args.grammar_backend == "none":
            return grammar_abort("constrained decoding is off on this server (--grammar-backend none)", kind)
        fut = self.service.submit(kind, spec)
        self.queue.append((req, fut, time.monotonic() + self.timeout))
        return None

    def remove(self, rid: str) -> Req | None:
        for i, (req, _, _) in enumerate(self.queue):
            if req.rid == rid:
                del self.queue[i]
                return req
        return None

    def poll(self) -> tuple[list[Req], list[tuple[Req, dict[str, Any]]]]:
        """Requests ready to schedule and requests to fail. Waits a few ms when nothing else could
        run, so an engine that only has compiles pending does not spin."""
        if not self.queue:
            return [], []
        decisions = self._decide() if self.tp.is_first else None
        if self.tp.size > 1:
            decisions = self.tp.broadcast_objects([decisions])[0]
        by_rid = {req.rid: (req, fut) for req, fut, _ in self.queue}
        ready, failed = [], []
        for rid, verdict in decisions:
            req, fut = by_rid[rid]
            self.queue = [e for e in self.queue if e[0] is not req]
            reason = verdict if verdict is not None else self._start(req, fut)
            if reason is None:
                ready.append(req)
            else:
                failed.append((req, reason))
        return ready, failed

    def wait_briefly(self, seconds: float = 0.005) -> None:
        if self.queue and self.tp.is_first:
            wait([fut for _, fut, _ in self.queue], timeout=seconds, return_when=FIRST_COMPLETED)

    def _decide(self) -> list[tuple[str, dict[str, Any] | None]]:
        now = time.monotonic()
        out = []
        for req, fut, deadline in self.queue:
            if fut.done():
                out.append((req.rid, None))
            elif now >= deadline:
                kind = req.sampling.grammar[0]
                out.append((req.rid, grammar_abort(
                    f"grammar compilation timed out after {self.timeout:g} s (--grammar-compile-timeout)", kind)))
        return out

    def _start(self, req: Req, fut: Any) -> dict[str, Any] | None:
        kind = req.sampling.grammar[0]
        try:
            compiled = fut.result()  # done on rank 0; other ranks may still be compiling
            req.grammar = GrammarState(kind, self.service.backend.matcher(compiled), chainable=self.jump is None)
        except GrammarSpecError as exc:
            return grammar_abort(str(exc), exc.param)
        except GrammarBackendUnavailable as exc:
            return grammar_abort(str(exc), kind)
        except Exception as exc:  # a compiler crash fails this request only
            logger.exception("grammar compile failed for %s", req.rid)
            return grammar_abort(f"grammar compilation failed: {exc}", kind)
        return None

    # ---- decoding -------------------------------------------------------------------------
    def allowed(self, reqs: list[Req], device: torch.device) -> torch.Tensor | None:
        # A finished request's row (overlap scheduling may still sample one) keeps the all-ones mask.
        rows = [i for i, r in enumerate(reqs) if r.grammar is not None and not r.finished]
        if not rows or not self.tp.is_first:
            return None  # other ranks' samples are replaced by rank 0's broadcast
        t0 = time.perf_counter()
        backend = self.service.backend
        bitmask = self._host_bitmask(len(reqs), device)
        backend.fill([reqs[i].grammar.matcher for i in rows], bitmask, rows)
        allowed = unpack_bitmask(bitmask, self.vocab_size, device)
        self.mask_fill_s += time.perf_counter() - t0
        return allowed

    def _host_bitmask(self, rows: int, device: torch.device) -> torch.Tensor:
        """An all-allowed host bitmask for `rows` rows. On CUDA it is page-locked: a copy from pageable
        memory synchronises the stream first, which would make the CPU wait for the forward pass that
        the mask fill is meant to overlap. Two buffers alternate, so a fill never overwrites the one a
        still-queued copy reads."""
        backend = self.service.backend
        if device.type != "cuda":
            return backend.bitmask(rows)
        self._turn ^= 1
        if len(self._pinned) < 2 or self._pinned[self._turn].shape[0] < rows:
            cap = max(rows, 2 * self._pinned[0].shape[0] if self._pinned else 64)
            self._pinned = [backend.bitmask(cap).pin_memory() for _ in range(2)]
        buf = self._pinned[self._turn][:rows]
        buf.fill_(-1)
        return buf

    def accept(self, req: Req, token: int) -> dict[str, Any] | None:
        state = req.grammar
        if state is None:
            return None
        t0 = time.perf_counter()
        ok = state.matcher.accept_token(token)
        self.accept_s += time.perf_counter() - t0
        if not ok:
            return {"type": "abort", "message": f"token {token} violates the {state.kind} grammar"}
        if state.matcher.is_terminated():
            return {"type": "stop", "matched": token}
        return None

    def jump_forward(self, req: Req) -> bool:
        return self.jump is not None and req.grammar is not None and self.jump.apply(req)

    def _fill_uses(self) -> list[int]:
        choice = getattr(self.service.built_backend, "fill_choice", None)
        return list(choice.uses) if choice is not None else [0, 0]

    def stats(self) -> dict[str, Any]:
        times = sorted(self.service.compile_seconds)
        jump = self.jump
        return {
            "jump_forward_events": jump.num_events if jump else 0,
            "jump_forward_tokens": jump.num_tokens if jump else 0,
            # every jumped token would have been one decode step; the extend step that computes them
            # replaces the decode step that samples the next token
            "jump_forward_steps_saved": jump.num_tokens if jump else 0,
            "num_grammar_queue_reqs": len(self.queue),
            "grammar_mask_fill_s": round(self.mask_fill_s, 4),
            "grammar_accept_s": round(self.accept_s, 4),
            # how many batch fills ran on one thread / on xgrammar's pool (see fill_choice.py)
            "grammar_fill_strategy_uses": self._fill_uses(),
            "grammar_compiles": self.service.num_compiles,
            "grammar_cache_hits": self.service.num_cache_hits,
            "grammar_compile_p50_s": times[len(times) // 2] if times else 0.0,
        }
