"""ReplicaSet: `--dp-size N` engine groups behind the one API process.

It composes N unchanged `Supervisor`s (one per replica) and presents the Supervisor's interface to the
routes, metrics and console, so they need no change: `lease()` hands out a `DispatchClient` that picks a
replica per sequence through the load-balancing policy. A `HealthMonitor` probes the replicas; health
transitions are logged once each and passed to `on_transition` listeners (the console's audit log).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from app.errors import unavailable
from app.inflight import InflightRequests
from app.replicas.dispatch import DispatchClient
from app.replicas.health import HealthMonitor
from app.replicas.policies import make_policy
from app.replicas.replica import Replica
from app.supervisor import ClientFactory
from engine.args import ServerArgs

logger = logging.getLogger(__name__)

_SUMMED = ("num_running_reqs", "num_queued_reqs", "kv_used_tokens", "kv_total_tokens", "gen_throughput",
           "cache_query_tokens", "cache_hit_tokens", "num_retractions")


def _warm_imports() -> None:
    """transformers' lazy imports are not thread-safe: the replicas' start threads would race on them."""
    import transformers

    for name in ("AutoConfig", "AutoTokenizer", "PreTrainedTokenizerFast", "GenerationConfig"):
        getattr(transformers, name, None)


def replica_args(args: ServerArgs, index: int) -> ServerArgs:
    return args.replace(base_gpu_id=args.base_gpu_id + index * args.tp_size)


class ReplicaSet:
    def __init__(self, args: ServerArgs, client_factory: ClientFactory | None = None,
                 start_timeout: float = 600.0) -> None:
        self.args = args
        self.policy = make_policy(args)
        self.client_hooks: list[Callable[[Any], None]] = []
        self.on_ready: list[Callable[[], None]] = []
        self.on_restart: list[Callable[[], None]] = []  # any replica's restart after an engine death
        # Called as (replica index, old health, new health, reason) on every health transition.
        self.on_transition: list[Callable[[int, str, str, str | None], None]] = []
        weights = args.parsed_replica_weights
        self.replicas = [Replica(i, replica_args(args, i), client_factory, start_timeout, weights[i],
                                 self.client_hooks, self.refresh) for i in range(args.dp_size)]
        for rep in self.replicas:
            rep.sup.on_restart.append(lambda: [cb() for cb in self.on_restart])
        self.dispatch = DispatchClient(self)
        self.monitor = HealthMonitor(self)
        self._inflight = InflightRequests()
        self.progress: list[str] = []
        self._shutting_down = False
        self._started = False
        self._announced = False
        self._first_error: str | None = None

    # ---- Supervisor interface ---------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return self.args.resolved_served_model_name

    @property
    def state(self) -> str:
        if self._shutting_down:
            return "draining"
        if not self._started:  # ready only once every replica has started
            return "failed" if self._first_error is not None else "starting"
        if any(r.available for r in self.replicas):
            return "ready"
        states = {r.sup.state for r in self.replicas}
        if self._first_error is not None or states == {"failed"}:
            return "failed"
        return "starting" if not self._started else "restarting"

    @property
    def is_ready(self) -> bool:
        return self.state == "ready"

    @property
    def error(self) -> str | None:
        errors = [f"replica {r.index}: {r.reason}" for r in self.replicas if r.health == "unhealthy" and r.reason]
        return self._first_error or ("; ".join(errors) or None)

    @property
    def restarts(self) -> int:
        return sum(r.sup.restarts for r in self.replicas)

    @property
    def client(self) -> DispatchClient | None:
        return self.dispatch if any(r.client is not None for r in self.replicas) else None

    @property
    def last_info(self) -> dict[str, Any]:
        return self.aggregate_info()

    def current_args(self) -> dict[str, Any]:
        return self.args.to_dict()

    def status(self) -> dict[str, Any]:
        return {"state": self.state, "progress": self._progress(), "error": self.error,
                "model_name": self.model_name, "replicas": self.replica_summaries()}

    def engine_info(self) -> dict[str, Any]:
        return self.dispatch.model_info

    def gpu_count(self) -> int:
        return self.replicas[0].sup.gpu_count()

    def health_problem(self) -> str | None:
        """Why `/health` is 503: more GPUs out than `--max-unhealthy-gpus` allows."""
        out = sum(len(r.gpus) for r in self.replicas if r.health == "unhealthy")
        allowed = self.args.resolved_max_unhealthy_gpus
        if out > allowed:
            return f"{out} GPU(s) are out of service (replicas " + ", ".join(
                str(r.index) for r in self.replicas if r.health == "unhealthy") + f"); at most {allowed} may be"
        return None

    # ---- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        """Starts every replica concurrently; any failure stops the others and raises (exit non-zero)."""
        await asyncio.to_thread(_warm_imports)
        results = await asyncio.gather(*(r.sup.start() for r in self.replicas), return_exceptions=True)
        failed = [(r, exc) for r, exc in zip(self.replicas, results, strict=True) if isinstance(exc, BaseException)]
        if failed:
            r, exc = failed[0]
            self._first_error = f"replica {r.index}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
            await asyncio.gather(*(x.sup.shutdown(0.0) for x in self.replicas), return_exceptions=True)
            raise RuntimeError(self._first_error)
        self._started = True
        self.refresh()
        self.monitor.start()
        logger.info("%d replicas ready, load balancing %s", len(self.replicas), self.policy.name)
        for cb in self.on_ready:
            cb()

    async def apply(self, new_args: dict[str, Any]) -> None:
        """Rolling restart: one replica at a time, so the others keep serving."""
        merged = ServerArgs.from_dict({**self.args.to_dict(), **new_args})
        if merged.dp_size != self.args.dp_size:
            raise RuntimeError("--dp-size cannot change while running; restart the server")
        for r in self.replicas:
            await r.sup.apply(replica_args(merged, r.index).to_dict())
        self.args = merged

    async def shutdown(self, drain_timeout: float | None = None) -> None:
        self._shutting_down = True
        await self.monitor.stop()
        await self.wait_idle(self.args.drain_timeout if drain_timeout is None else drain_timeout)
        await asyncio.gather(*(r.sup.shutdown(0.0) for r in self.replicas), return_exceptions=True)

    def begin_drain(self) -> None:
        self._shutting_down = True
        for r in self.replicas:
            r.sup.begin_drain()

    async def wait_idle(self, timeout: float) -> bool:
        return await self._inflight.wait_idle(timeout)

    @property
    def inflight(self) -> int:
        return self._inflight.count

    @contextlib.asynccontextmanager
    async def lease(self) -> AsyncIterator[DispatchClient]:
        state = self.state
        if state != "ready":
            raise unavailable({"starting": "The engine is starting; retry shortly.",
                               "draining": "The server is shutting down.",
                               "failed": f"The engine is not running: {self.error or 'start failed'}"}.get(
                state, "No replica is available; retry shortly."))
        with self._inflight.hold():
            yield self.dispatch

    # ---- dispatch and health ----------------------------------------------------------------
    def pick(self, input_ids: Sequence[int], exclude: set[int]) -> Replica | None:
        candidates = [r for r in self.replicas if r.available and r.index not in exclude]
        if not candidates:
            return None
        chosen = self.policy.choose([r.load for r in candidates], input_ids)
        return self.replicas[chosen.index]

    def refresh(self) -> None:
        """Re-reads each replica's health; each change is logged once and reported to listeners. Stopping
        the server is not a health event: nothing is reported while shutting down."""
        if self._shutting_down:
            return
        for r in self.replicas:
            health, reason = r.observed_health()
            if health == r.health:
                continue
            old, r.health, r.reason = r.health, health, reason
            line = f"replica {r.index}: {old} -> {health}" + (f" ({reason})" if reason else "")
            (logger.warning if health == "unhealthy" else logger.info)("%s", line)
            self.progress.append(f"{time.strftime('%H:%M:%S')} {line}")
            del self.progress[:-50]
            if health == "unhealthy":
                r.load.reset()  # its cache and requests are gone
            for cb in self.on_transition:
                try:
                    cb(r.index, old, health, reason)
                except Exception:  # a listener (the audit log) must never break failover
                    logger.exception("replica transition listener failed")

    def _progress(self) -> list[str]:
        lines = list(self.progress)
        for r in self.replicas:
            lines.extend(f"[replica {r.index}] {p}" for p in r.sup.progress[-5:])
        return lines

    def replica_summaries(self) -> list[dict[str, Any]]:
        return [r.summary() for r in self.replicas]

    def aggregate_info(self) -> dict[str, Any]:
        """The replicas' engine stats summed (ratios recomputed), with `replicas` per replica."""
        summaries = self.replica_summaries()
        out: dict[str, Any] = {k: sum(s.get(k) or 0 for s in summaries) for k in _SUMMED}
        total = out["kv_total_tokens"]
        out["token_usage"] = out["kv_used_tokens"] / total if total else 0.0
        queried = out["cache_query_tokens"]
        out["cache_hit_rate"] = out["cache_hit_tokens"] / queried if queried else 0.0
        out["dp_size"] = len(self.replicas)
        out["load_balancing_policy"] = self.policy.name
        out["healthy_replicas"] = sum(1 for r in self.replicas if r.health == "healthy")
        out["dispatch_retries"] = self.dispatch.retries
        out["replicas"] = summaries
        return out
