"""Per-forward trace for tuning schedules: `TESSERA_STEP_TRACE=PATH` makes rank 0 append one JSON line
per forward to PATH: host time at launch (s, monotonic), mode, rows, new tokens, context tokens, the
one-token rows of an extend (decodes riding along in a mixed step) and the step's GPU time from CUDA
events (ms; null on CPU). Off by default; the events are read in batches (one synchronize per 256
steps), so tracing a serving run barely changes it. `bench/schedule_sim.py --fit` fits its step-time
model to such traces."""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import torch

logger = logging.getLogger(__name__)

TRACE_ENV = "TESSERA_STEP_TRACE"
FLUSH_EVERY = 256


class StepTrace:
    def __init__(self, path: str, device: torch.device) -> None:
        self.path = path
        self.timed = device.type == "cuda"
        self._pending: list[tuple[dict[str, Any], Any, Any]] = []

    def wrap(self, runner: Any) -> None:
        """Times every `runner.forward` from now on."""
        forward = runner.forward

        def traced(fb, **kwargs):
            is_decode = fb.forward_mode.is_decode
            extend_lens = fb.extend_lens_cpu or [1] * fb.batch_size
            row = {"t": round(time.monotonic(), 6), "mode": "decode" if is_decode else "extend",
                   "rows": fb.batch_size, "tokens": int(sum(extend_lens)), "context": int(sum(fb.seq_lens_cpu)),
                   # extend only: one-token rows (decodes riding along in a mixed step)
                   "one_token_rows": 0 if is_decode else sum(1 for n in extend_lens if n == 1)}
            start = end = None
            if self.timed:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
            out = forward(fb, **kwargs)
            if self.timed:
                end.record()
            self._pending.append((row, start, end))
            if len(self._pending) >= FLUSH_EVERY:
                self.flush()
            return out

        runner.forward = traced
        logger.info("step trace: writing one line per forward to %s", self.path)

    def flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        if self.timed:
            pending[-1][2].synchronize()
        with open(self.path, "a") as f:
            for row, start, end in pending:
                row["gpu_ms"] = round(start.elapsed_time(end), 3) if self.timed else None
                f.write(json.dumps(row) + "\n")


def maybe_trace(runner: Any, rank: int) -> StepTrace | None:
    path = os.environ.get(TRACE_ENV)
    if not path or rank != 0:
        return None
    try:  # an unwritable path is a warning now, not a failed step at the first flush
        open(path, "a").close()
    except OSError as exc:
        logger.warning("step trace: cannot write %s (%s); not tracing", path, exc.strerror or exc)
        return None
    trace = StepTrace(path, runner.device)
    trace.wrap(runner)
    return trace
