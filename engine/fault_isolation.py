"""A request that makes a rank raise fails alone; the rank keeps serving everyone else.

The API process validates every request first (engine.request_checks), so what reaches here is a bug
or an unforeseen value. Two layers:
- sampling is where request values meet tensors: when a batch's sampling raises, each row is sampled
  on its own and only the rows that still raise are failed;
- any other exception in a step (batch building, the forward pass) fails the requests of that step
  with an error (their rids get an `abort` finish with the message), discards their KV without
  inserting it into the radix cache (it may be half-written), and the loop goes on.
Two failures no request can be isolated from end the rank instead (the engine is restarted): a lost peer
rank, and a GPU whose CUDA context the error poisoned (an illegal address or a device-side assert is
"sticky": every later launch fails too, so going on would fail every request from then on, forever, while
the process looked alive). The step's requests still get their own error first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from engine.req import Req

logger = logging.getLogger(__name__)


def device_is_broken(device: torch.device) -> bool:
    """After a failed step: True when the device can no longer run anything (a poisoned CUDA context).
    A probe, not a guess from the message: an out-of-memory or a shape error leaves the device usable."""
    if device.type != "cuda":
        return False
    try:
        torch.cuda.synchronize(device)
        return torch.ones(1, device=device).add_(1).item() != 2.0
    except Exception:
        return True


def is_communication_failure(exc: BaseException) -> bool:
    """A collective failed (a peer rank or node died): no request is to blame and the group cannot go on."""
    dist_error = getattr(torch.distributed, "DistError", None)
    if dist_error is not None and isinstance(exc, dist_error):
        return True
    text = str(exc)
    return any(marker in text for marker in ("gloo", "NCCL", "Connection reset by peer", "Connection closed by peer"))


class FaultIsolationMixin:
    """Expects Scheduler's attributes: running, waiting, chunked, kv, _inflight, _finish."""

    running: list[Req]
    waiting: list[Req]
    chunked: Req | None
    _inflight: Any
    _step_reqs: list[Req]
    num_failed_reqs: int
    kv: Any
    _finish: Callable[[Req, dict[str, Any]], None]

    def step_safely(self) -> None:
        """One scheduler step; an exception fails the requests of that step, never the rank."""
        self._step_reqs = []
        try:
            self.step()  # type: ignore[attr-defined]
        except Exception as exc:
            if is_communication_failure(exc):
                raise  # a lost peer rank breaks the group for every request: the rank dies and is restarted
            reqs = self._step_reqs or self._in_progress()
            if device_is_broken(self.runner.device):  # type: ignore[attr-defined]
                self._fail_on_broken_device(reqs, exc)
                raise
            logger.exception("a scheduler step failed; failing its %d request(s), the engine keeps serving",
                             len(reqs))
            if self._inflight is not None:  # a launched overlap step of these requests is void now
                reqs = list({id(r): r for r in [*reqs, *self._inflight.batch.reqs]}.values())
                self._inflight = None
            self.fail_reqs(reqs, f"internal error while running the request ({type(exc).__name__}: {exc})"
                           .splitlines()[0])

    def _fail_on_broken_device(self, reqs: list[Req], exc: BaseException) -> None:
        """The step's requests get the real reason before the rank goes (the others then see the engine
        restart); no KV bookkeeping, since nothing may touch the device any more."""
        logger.critical("the GPU can no longer run kernels after this error; the rank exits so that the engine "
                        "is restarted: %s", f"{type(exc).__name__}: {exc}".splitlines()[0])
        message = (f"the GPU hit an unrecoverable error while running this request ({type(exc).__name__}: {exc}"
                   .splitlines()[0] + "); the engine restarts")
        for req in reqs:
            if not req.finished:
                req.finish_reason = {"type": "abort", "message": message}
                self.num_failed_reqs += 1
                self._emit([req])  # type: ignore[attr-defined]

    def _in_progress(self) -> list[Req]:
        return [*self.running, *([self.chunked] if self.chunked is not None else [])]

    def fail_reqs(self, reqs: list[Req], message: str) -> None:
        for req in reqs:
            if req.finished:
                continue
            if req in self.running:
                self.running.remove(req)
            if req in self.waiting:
                self.waiting.remove(req)
            if self.chunked is req:
                self.chunked = None
            self.num_failed_reqs += 1
            self.kv.discard(req)
            self._finish(req, {"type": "abort", "message": message})

    def sample_isolated(self, sample: Callable[[torch.Tensor, list[Req]], Any], rows: torch.Tensor,
                        reqs: list[Req]) -> tuple[list[Req], list[Any]]:
        """Runs `sample(rows, reqs)`; if it raises with several rows, retries row by row and fails only
        the rows that raise alone. Returns (requests that got a result, their per-row results)."""
        try:
            return reqs, [sample(rows, reqs)]
        except Exception:
            if len(reqs) == 1:
                raise
        kept, results = [], []
        for i, req in enumerate(reqs):
            try:
                results.append(sample(rows[i:i + 1], [req]))
                kept.append(req)
            except Exception as exc:
                logger.exception("sampling failed for request %s; failing it alone", req.rid)
                self.fail_reqs([req], f"internal error while sampling ({type(exc).__name__}: {exc})"
                               .splitlines()[0])
        return kept, results
