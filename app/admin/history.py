"""The dashboard's recent past: a ring buffer of metric samples taken by the server itself.

A background thread samples every `interval_s` (the dashboard's poll interval) whether or not a browser
is open, and keeps `window_s` of samples, so a reload shows the last minutes instead of empty charts.
Request counts come from the KeyGate's tally of finished and refused generation requests.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

from app.admin.contracts import MetricsSourceProtocol, SupervisorProtocol
from app.admin.gpu import GpuSampler

logger = logging.getLogger(__name__)

ENGINE_KEYS = ("num_running_reqs", "num_queued_reqs", "token_usage", "kv_used_tokens", "kv_total_tokens",
               "cache_hit_rate", "gen_throughput", "ttft_median_s", "model_name")
DEFAULT_INTERVAL_S = 1.5
DEFAULT_WINDOW_S = 15 * 60.0


class RequestTally:
    """Totals of generation requests by outcome since start: every finished request, plus refusals
    (401 / 403 / 429). `errors` counts status >= 400 other than 429, which `rate_limited` counts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = 0
        self.errors = 0
        self.rate_limited = 0

    def count(self, status_code: int) -> None:
        with self._lock:
            self.requests += 1
            if status_code == 429:
                self.rate_limited += 1
            elif status_code >= 400:
                self.errors += 1

    def totals(self) -> dict[str, int]:
        with self._lock:
            return {"requests": self.requests, "errors": self.errors, "rate_limited": self.rate_limited}


def current_payload(metrics: MetricsSourceProtocol, gpu: GpuSampler, supervisor: SupervisorProtocol,
                    tally: RequestTally) -> dict[str, Any]:
    """One sample: engine numbers, GPUs, supervisor state and the request totals (`GET /admin/api/metrics`)."""
    try:
        snap = metrics.snapshot()
        engine = {k: snap.get(k) for k in ENGINE_KEYS}
        engine_error = None
    except Exception as exc:  # an engine mid-restart must not break the dashboard
        logger.debug("metrics snapshot failed: %s", exc)
        engine, engine_error = dict.fromkeys(ENGINE_KEYS), str(exc)
    return {"ts": time.time(), "engine": engine, "engine_error": engine_error, "gpu": gpu.sample(),
            "supervisor": supervisor.status(), "requests_total": tally.totals()}


class MetricsHistory:
    """Ring buffer of samples; each adds `requests`: what happened since the previous sample
    (`per_s` rate, `errors` and `rate_limited` counts)."""

    def __init__(self, metrics: MetricsSourceProtocol, gpu: GpuSampler, supervisor: SupervisorProtocol,
                 tally: RequestTally, *, interval_s: float = DEFAULT_INTERVAL_S,
                 window_s: float = DEFAULT_WINDOW_S) -> None:
        self._sources = (metrics, gpu, supervisor, tally)
        self.interval_s = interval_s
        self.window_s = window_s
        self._samples: deque[dict[str, Any]] = deque(maxlen=max(1, int(window_s / interval_s)))
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tessera-metrics-history", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.take()
            except Exception:  # a bad sample must not end the history
                logger.exception("metrics history sample failed")
            self._stop.wait(self.interval_s)

    def take(self) -> dict[str, Any]:
        """Takes one sample now and appends it (the thread calls this every interval)."""
        sample = current_payload(*self._sources)
        sample["supervisor"] = {k: sample["supervisor"].get(k) for k in ("state", "model_name")}
        totals = sample["requests_total"]
        with self._lock:
            prev = self._samples[-1] if self._samples else None
            if prev is None:
                sample["requests"] = {"per_s": None, "errors": None, "rate_limited": None}
            else:
                span = max(sample["ts"] - prev["ts"], 1e-6)
                before = prev["requests_total"]
                sample["requests"] = {
                    "per_s": round((totals["requests"] - before["requests"]) / span, 3),
                    "errors": totals["errors"] - before["errors"],
                    "rate_limited": totals["rate_limited"] - before["rate_limited"],
                }
            self._samples.append(sample)
        return sample

    def samples(self, after: float | None = None) -> list[dict[str, Any]]:
        with self._lock:
            items = list(self._samples)
        return items if after is None else [s for s in items if s["ts"] > after]
