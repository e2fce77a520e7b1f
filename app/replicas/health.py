"""HealthMonitor: every `--health-check-interval` seconds, probe each ready replica with a one-token
generation whose deadline is the interval, and (on CUDA) ask NVML about its GPUs.

A replica fails the probe when the generation errors, or when it does not finish in time AND the
replica produced no token for any request during that time (a busy replica whose queue delays the
probe is not hung). A failed replica leaves dispatch at once and its ranks are killed, so the
supervisor's crash recovery restarts it in the background; it rejoins when the new engine is ready.
A dead rank process needs no probe: the engine client's watchdog reports it within 0.25 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from engine.sampling_params import SamplingParams

if TYPE_CHECKING:
    from app.replicas.replica import Replica
    from app.replicas.replica_set import ReplicaSet

logger = logging.getLogger(__name__)


def gpu_problem(gpus: list[int]) -> str | None:
    """NVML's view of the replica's GPUs: a GPU it cannot query is unusable. None on CPU hosts."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return None
    try:
        for idx in gpus:
            try:
                handle = pynvml.nvmlDeviceGetHandleByIndex(idx)
                pynvml.nvmlDeviceGetMemoryInfo(handle)
            except Exception as exc:
                return f"GPU {idx} is unusable ({exc})"
        return None
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


class HealthMonitor:
    def __init__(self, replica_set: ReplicaSet) -> None:
        self._set = replica_set
        self._task: asyncio.Task | None = None
        self.probes = 0

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        interval = self._set.args.health_check_interval
        while True:  # the replicas just said ready: the first probe is one interval later
            started = time.monotonic()
            await asyncio.sleep(interval)
            self._set.refresh()
            await asyncio.gather(*(self.check(r, interval) for r in self._set.replicas if r.available))
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started) - interval))

    async def check(self, replica: Replica, deadline: float) -> None:
        problem = await self.probe(replica, deadline)
        if problem is None and self._set.args.resolved_device == "cuda":
            problem = await asyncio.to_thread(gpu_problem, replica.gpus)
        if problem is not None and replica.available:
            logger.error("replica %d failed its health check: %s; restarting it", replica.index, problem)
            replica.kill(problem)

    async def probe(self, replica: Replica, deadline: float) -> str | None:
        client: Any = replica.client
        if client is None or not client.is_alive:
            return None  # the supervisor already knows; refresh() reports it
        self.probes += 1
        tok = getattr(client, "tokenizer", None)
        first = getattr(tok, "bos_token_id", None) if tok is not None else None
        ids = [first if isinstance(first, int) else 0]
        sampling = SamplingParams.from_dict({"max_new_tokens": 1, "temperature": 0})
        started = time.monotonic()

        async def run() -> None:
            async for _ in client.generate(ids, sampling, rid=f"health-{replica.index}-{self.probes}"):
                pass

        try:
            await asyncio.wait_for(run(), deadline)
            return None
        except asyncio.TimeoutError:
            if replica.load.last_output_at > started:
                return None  # busy, not hung: other requests got tokens meanwhile
            return f"no token within {deadline:g}s (hung)"
        except Exception as exc:
            if not client.is_alive:
                return None  # died meanwhile; the watchdog path reports it
            return f"probe failed: {exc}"
