"""One data-parallel replica: an unchanged `Supervisor` (its own engine group and radix cache, started,
restarted and backed off exactly like the single-group server) plus its load record and health."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Callable
from typing import Any

from app.replicas.load import ReplicaLoad
from app.supervisor import ClientFactory, Supervisor
from engine.args import ServerArgs

logger = logging.getLogger(__name__)

HEALTH_STATES = ("starting", "healthy", "unhealthy")


class Replica:
    def __init__(self, index: int, args: ServerArgs, factory: ClientFactory | None, start_timeout: float,
                 weight: float, shared_hooks: list[Callable[[Any], None]],
                 on_change: Callable[[], None]) -> None:
        self.index = index
        self.load = ReplicaLoad(index, weight, args.max_tree_size)
        self.sup = Supervisor(args, factory, start_timeout)
        self.health = "starting"
        self.reason: str | None = None
        # Set when a probe fails: the replica leaves dispatch at once and is restarted; cleared when the
        # restarted engine is ready.
        self.suspect: str | None = None
        self.death_reason: str | None = None  # what the engine client said when a rank died
        self._shared_hooks = shared_hooks
        self._on_change = on_change
        self.sup.client_hooks.append(self._attach)
        self.sup.on_ready.append(self._ready)

    # ---- engine hooks -----------------------------------------------------------------------
    def _attach(self, client: Any) -> None:
        self.load.reset()
        client.on_output.append(lambda state, out: self.load.progress(out.rid, len(out.new_token_ids)))
        client.on_death.append(self._died)
        for hook in self._shared_hooks:
            hook(client)

    def _died(self, reason: str) -> None:
        self.death_reason = reason
        self._on_change()

    def _ready(self) -> None:
        self.suspect = None
        self.death_reason = None
        self._on_change()

    # ---- state ------------------------------------------------------------------------------
    @property
    def client(self) -> Any:
        return self.sup.client

    @property
    def gpus(self) -> list[int]:
        args = self.sup.args
        return list(range(args.base_gpu_id, args.base_gpu_id + args.tp_size))

    def observed_health(self) -> tuple[str, str | None]:
        """What the replica's state says now: (health, reason)."""
        client = self.sup.client
        if self.sup.state == "ready" and client is not None and client.is_alive:
            if self.suspect:
                return "unhealthy", self.suspect
            return "healthy", None
        if self.sup.state == "starting":
            return "starting", None
        if self.suspect:
            return "unhealthy", self.suspect
        if self.death_reason:
            return "unhealthy", self.death_reason
        if self.sup.state == "ready":  # the watchdog saw a rank die; the supervisor restarts next
            return "unhealthy", "engine process died"
        return "unhealthy", self.sup.error or f"engine {self.sup.state}"

    @property
    def available(self) -> bool:
        return self.health == "healthy" and self.client is not None and self.client.is_alive

    def kill(self, reason: str) -> None:
        """A hung or broken replica: mark it, kill its ranks; the supervisor's crash recovery restarts it."""
        from engine.client import EngineClient

        self.suspect = reason
        client = self.sup.client
        if isinstance(client, EngineClient):  # only pids of rank processes we started
            for pid in client.rank_pids():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        elif client is not None and hasattr(client, "die"):  # the fake engine of the app tests
            client.die(reason)
        self._on_change()

    def summary(self) -> dict[str, Any]:
        info = dict(self.sup.last_info)
        client = self.sup.client
        return {
            "replica": self.index,
            "health": self.health,
            "reason": self.reason,
            "state": self.sup.state,
            "gpus": self.gpus if self.sup.args.resolved_device == "cuda" else [],
            "restarts": self.sup.restarts,
            "weight": self.load.weight,
            "outstanding_tokens": self.load.outstanding_tokens,
            "outstanding_requests": self.load.outstanding_requests,
            "dispatched": self.load.dispatched,
            "median_latency_s": self.load.median_latency,
            "engine_pids": client.rank_pids() if client is not None and hasattr(client, "rank_pids") else [],
            **{k: info.get(k) for k in ("num_running_reqs", "num_queued_reqs", "token_usage", "kv_used_tokens",
                                        "kv_total_tokens", "cache_hit_rate", "gen_throughput",
                                        "cache_query_tokens", "cache_hit_tokens", "num_retractions")},
        }
