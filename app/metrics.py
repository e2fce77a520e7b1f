"""Prometheus metrics (`/metrics`) and the live snapshot the admin dashboard reads.

One CollectorRegistry per app (tests build many apps in one process). Request-level series come
from the engine client's `on_output` hook (TTFT is taken when the engine reports the first token, which it
does for non-streaming requests too); engine gauges come from the supervisor's cached `get_server_info`
poll, so a scrape never waits on the engine.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from app.gpu_metrics import NvmlCollector

PREFIX = "tessera"
# The dashboard's "TTFT median" covers the first tokens of the last five minutes (a time window, not the
# last N requests, so an idle server does not keep showing an old burst).
TTFT_WINDOW_S = 300.0
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0)
_ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)
# Engine stats exported as gauges: (key in get_server_info, metric name, help).
_ENGINE_GAUGES = (
    ("num_running_reqs", "num_running_reqs", "Requests running in the engine"),
    ("num_queued_reqs", "num_queue_reqs", "Requests waiting in the engine queue"),
    ("num_grammar_queue_reqs", "num_grammar_queue_reqs", "Requests waiting for their grammar to compile"),
    ("token_usage", "token_usage", "Fraction of KV cache slots in use (0..1)"),
    ("kv_used_tokens", "kv_used_tokens", "KV cache slots in use"),
    ("kv_total_tokens", "kv_total_tokens", "KV cache capacity in tokens"),
    ("cache_hit_rate", "cache_hit_rate", "Prefix cache hit rate (0..1)"),
    ("gen_throughput", "gen_throughput", "Generation throughput (tokens/s)"),
    # Speculative decoding (absent, so no sample, when it is off).
    ("spec_accept_rate", "spec_accept_rate", "Speculative decoding: accepted / proposed draft tokens (0..1)"),
    ("spec_accept_length", "spec_accept_length", "Speculative decoding: tokens committed per request per verify pass"),
    ("spec_num_draft_tokens", "spec_draft_tokens", "Speculative decoding: draft tokens proposed (cumulative)"),
    ("spec_num_accepted_tokens", "spec_accepted_tokens", "Speculative decoding: draft tokens accepted (cumulative)"),
)


class _EngineGauges(Collector):
    def __init__(self, info: Callable[[], dict[str, Any]], model_name: Callable[[], str]) -> None:
        self._info = info
        self._model_name = model_name

    def collect(self) -> Iterator[GaugeMetricFamily]:
        info = self._info()
        name = self._model_name()
        for key, metric, help_text in _ENGINE_GAUGES:
            family = GaugeMetricFamily(f"{PREFIX}_{metric}", help_text, labels=["model_name"])
            value = info.get(key)
            if isinstance(value, (int, float)):
                family.add_metric([name], float(value))
            yield family

    def describe(self) -> list:
        return []


class _ReqTiming:
    __slots__ = ("created", "last")

    def __init__(self, created: float) -> None:
        self.created = created
        self.last: float | None = None


class Metrics:
    """Owns the registry; `on_output` is registered on every engine client the supervisor starts."""

    def __init__(self, model_name: Callable[[], str], engine_info: Callable[[], dict[str, Any]],
                 enable_gpu: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._model_name = model_name
        self._engine_info = engine_info
        label = ["model_name"]
        r = self.registry
        self.prompt_tokens = Counter(f"{PREFIX}_prompt_tokens", "Prompt tokens processed", label, registry=r)
        self.generation_tokens = Counter(f"{PREFIX}_generation_tokens", "Tokens generated", label, registry=r)
        self.cached_tokens = Counter(f"{PREFIX}_cached_tokens", "Prompt tokens served from the prefix cache",
                                     label, registry=r)
        self.num_requests = Counter(f"{PREFIX}_num_requests", "Engine requests finished",
                                    [*label, "finish_reason"], registry=r)
        self.http_requests = Counter(f"{PREFIX}_http_requests", "HTTP requests answered",
                                     [*label, "route", "status"], registry=r)
        self.ttft = Histogram(f"{PREFIX}_time_to_first_token_seconds", "Time to first token", label,
                              buckets=_LATENCY_BUCKETS, registry=r)
        self.itl = Histogram(f"{PREFIX}_inter_token_latency_seconds", "Time between output tokens", label,
                             buckets=_ITL_BUCKETS, registry=r)
        self.e2e = Histogram(f"{PREFIX}_e2e_request_latency_seconds", "Engine request latency, end to end", label,
                             buckets=_LATENCY_BUCKETS, registry=r)
        # Reliability: engine restarts after a death, and requests refused before reaching the engine.
        self.engine_restarts = Counter(f"{PREFIX}_engine_restarts", "Engine restart attempts after an engine death",
                                       label, registry=r)
        self.rejected_requests = Counter(f"{PREFIX}_rejected_requests", "Requests refused with an error status, by "
                                         "reason", [*label, "reason"], registry=r)
        r.register(_EngineGauges(engine_info, model_name))
        if enable_gpu:
            r.register(NvmlCollector(PREFIX, model_name))
        self._timing: dict[str, _ReqTiming] = {}
        # (monotonic time, ttft) of recent first tokens: the dashboard's median covers TTFT_WINDOW_S.
        self._recent_ttft: deque[tuple[float, float]] = deque(maxlen=100_000)

    # ---- engine hook ------------------------------------------------------------------------
    def attach(self, client: Any) -> None:
        self._timing.clear()  # requests of a dead engine never finish
        client.on_output.append(self.on_output)

    def on_output(self, state: Any, out: Any) -> None:
        now = time.perf_counter()
        name = self._model_name()
        timing = self._timing.get(out.rid)
        if timing is None:
            timing = self._timing[out.rid] = _ReqTiming(getattr(state, "created", now))
        num_new = len(out.new_token_ids)
        if num_new:
            if timing.last is None:
                ttft = now - timing.created
                self.ttft.labels(name).observe(ttft)
                self._recent_ttft.append((time.monotonic(), ttft))
            else:
                gap = (now - timing.last) / num_new
                for _ in range(num_new):
                    self.itl.labels(name).observe(gap)
            timing.last = now
            self.generation_tokens.labels(name).inc(num_new)
        if out.finished:
            self._timing.pop(out.rid, None)
            prompt = out.prompt_tokens or len(getattr(state, "input_ids", ()))
            self.prompt_tokens.labels(name).inc(prompt)
            self.cached_tokens.labels(name).inc(out.cached_tokens or 0)
            reason = (out.finish_reason or {}).get("type", "unknown")
            self.num_requests.labels(name, reason).inc()
            self.e2e.labels(name).observe(now - timing.created)

    def recent_ttfts(self, now: float | None = None) -> list[float]:
        """TTFTs of the requests whose first token came in the last TTFT_WINDOW_S seconds."""
        cutoff = (time.monotonic() if now is None else now) - TTFT_WINDOW_S
        while self._recent_ttft and self._recent_ttft[0][0] < cutoff:
            self._recent_ttft.popleft()
        return [t for _, t in self._recent_ttft]

    def record_http(self, route: str, status: int) -> None:
        self.http_requests.labels(self._model_name(), route, str(status)).inc()

    def record_restart(self) -> None:
        self.engine_restarts.labels(self._model_name()).inc()

    def record_rejected(self, reason: str) -> None:
        self.rejected_requests.labels(self._model_name(), reason).inc()

    # ---- outputs ----------------------------------------------------------------------------
    def render(self) -> bytes:
        return generate_latest(self.registry)

    def snapshot(self) -> dict[str, Any]:
        """MetricsSourceProtocol: the dashboard's live numbers."""
        info = self._engine_info()
        recent = self.recent_ttfts()
        return {
            "num_running_reqs": int(info.get("num_running_reqs", 0) or 0),
            "num_queued_reqs": int(info.get("num_queued_reqs", 0) or 0),
            "token_usage": float(info.get("token_usage", 0.0) or 0.0),
            "kv_used_tokens": int(info.get("kv_used_tokens", 0) or 0),
            "kv_total_tokens": int(info.get("kv_total_tokens", 0) or 0),
            "cache_hit_rate": float(info.get("cache_hit_rate", 0.0) or 0.0),
            "gen_throughput": float(info.get("gen_throughput", 0.0) or 0.0),
            "ttft_median_s": statistics.median(recent) if recent else None,
            "model_name": self._model_name(),
        }
