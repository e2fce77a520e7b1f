"""DispatchClient: what a route's `lease()` hands out with `--dp-size N`. It looks like one
`EngineClient`, but every `generate` call picks a replica through the load-balancing policy.

Failover: when a replica dies (or is killed as hung) while a sequence runs on it, the sequence is
retried on another replica if nothing of it has reached the caller yet (non-streaming requests, and
streams before their first chunk); otherwise it ends with `EngineDeadError` (the routes answer 503).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from engine.client import EngineDeadError
from engine.messages import FlushCacheOutMsg

if TYPE_CHECKING:
    from app.replicas.replica_set import ReplicaSet

logger = logging.getLogger(__name__)


class DispatchClient:
    def __init__(self, replica_set: ReplicaSet) -> None:
        self._set = replica_set
        self.retries = 0

    # ---- what the routes read ---------------------------------------------------------------
    def _any(self) -> Any:
        for r in self._set.replicas:
            if r.client is not None and r.client.is_alive:
                return r.client
        return None

    @property
    def is_alive(self) -> bool:
        return any(r.available for r in self._set.replicas)

    @property
    def tokenizer(self) -> Any:
        return getattr(self._any(), "tokenizer", None)

    @property
    def model_info(self) -> dict[str, Any]:
        return dict(getattr(self._any(), "model_info", None) or {})

    @property
    def num_inflight(self) -> int:
        return sum(r.client.num_inflight for r in self._set.replicas if r.client is not None)

    @property
    def inflight_rids(self) -> list[str]:
        return [rid for r in self._set.replicas if r.client is not None for rid in r.client.inflight_rids]

    def rank_pids(self) -> list[int]:
        return [pid for r in self._set.replicas if r.client is not None for pid in r.client.rank_pids()]

    # ---- control ----------------------------------------------------------------------------
    async def abort(self, rid: str) -> None:
        for r in self._set.replicas:
            if r.client is not None and r.client.is_alive and rid in r.client.inflight_rids:
                await r.client.abort(rid)

    async def flush_cache(self) -> FlushCacheOutMsg:
        live = [r for r in self._set.replicas if r.client is not None and r.client.is_alive]
        outs = await asyncio.gather(*(r.client.flush_cache() for r in live), return_exceptions=True)
        failed = [f"replica {r.index}: {o if isinstance(o, BaseException) else o.message}"
                  for r, o in zip(live, outs, strict=True) if isinstance(o, BaseException) or not o.success]
        for r, o in zip(live, outs, strict=True):
            if not isinstance(o, BaseException) and o.success:
                r.load.tree.clear()
        if failed:
            return FlushCacheOutMsg(success=False, message="; ".join(failed))
        return FlushCacheOutMsg(success=True, message=f"Cache flushed on {len(live)} replica(s).")

    async def get_server_info(self) -> dict[str, Any]:
        live = [r for r in self._set.replicas if r.client is not None and r.client.is_alive]
        infos = await asyncio.gather(*(asyncio.wait_for(r.client.get_server_info(), 5.0) for r in live),
                                     return_exceptions=True)
        for r, info in zip(live, infos, strict=True):
            if isinstance(info, dict):
                r.sup.last_info = info
        return self._set.aggregate_info()

    # ---- generation -------------------------------------------------------------------------
    async def generate(self, input_ids: list[int], sampling: Any, rid: str | None = None,
                       **kwargs: Any) -> AsyncIterator[dict[str, Any]]:
        rid = rid or uuid.uuid4().hex
        tried: set[int] = set()
        while True:
            replica = self._set.pick(input_ids, exclude=tried)
            if replica is None:
                raise EngineDeadError("no healthy replica is available")
            tried.add(replica.index)
            replica.load.begin(rid, input_ids, getattr(sampling, "max_new_tokens", 0))
            delivered = ok = False
            try:
                gen = replica.client.generate(input_ids, sampling, rid=rid, **kwargs)
                async with contextlib.aclosing(gen) as items:
                    async for item in items:
                        delivered = True
                        yield item
                ok = True
                return
            except EngineDeadError as exc:
                if delivered:
                    raise
                self.retries += 1
                logger.warning("replica %d failed request %s before any output (%s); retrying on another replica",
                               replica.index, rid, exc)
            finally:
                replica.load.end(rid, ok)
