"""Batched usage writes: request handlers enqueue, one background thread writes.

Per-request commits from many coroutines are what produce "database is locked" on SQLite; here one
thread commits a batch every `flush_interval_s` (or every `max_batch` rows) in a single transaction
that inserts the raw rows, upserts the daily roll-ups and bumps the keys' last-used times. A thread
rather than an asyncio task keeps the writer independent of which event loop (main or `--admin-port`)
the caller runs on, and keeps SQLite I/O off every loop.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import insert, update
from sqlalchemy.exc import OperationalError

from app.db.clock import utcnow
from app.db.database import Database
from app.db.models import ApiKey, UsageDaily, UsageRecord

logger = logging.getLogger(__name__)

ANONYMOUS_KEY_REF = 0
STATIC_KEY_REF = -1
REJECTED_KEY_REF = -2  # requests refused with 401: no valid key was shown


@dataclass(frozen=True)
class UsageEvent:
    model: str
    auth: str  # key | static | anonymous
    key_id: int | None
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    latency_ms: float
    status_code: int
    ts: datetime = field(default_factory=utcnow)

    @property
    def key_ref(self) -> int:
        if self.key_id is not None:
            return self.key_id
        if self.auth == "unauthorized":
            return REJECTED_KEY_REF
        return STATIC_KEY_REF if self.auth == "static" else ANONYMOUS_KEY_REF


def _upsert_daily(db: Database, session: object, rows: list[dict]) -> None:
    """INSERT ... ON CONFLICT DO UPDATE, so concurrent writers (several replicas on PostgreSQL) add up."""
    if db.engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    stmt = dialect_insert(UsageDaily)
    counters = ("requests", "errors", "prompt_tokens", "completion_tokens", "cached_tokens", "latency_ms_sum")
    stmt = stmt.on_conflict_do_update(
        index_elements=["day", "key_ref", "model"],
        set_={c: getattr(UsageDaily, c) + getattr(stmt.excluded, c) for c in counters},
    )
    for row in rows:
        session.execute(stmt, row)  # type: ignore[attr-defined]


def write_usage_batch(db: Database, events: list[UsageEvent]) -> None:
    """Writes one batch in one transaction (also used directly by tests and the pruner)."""
    daily: dict[tuple, dict] = defaultdict(
        lambda: dict(requests=0, errors=0, prompt_tokens=0, completion_tokens=0, cached_tokens=0, latency_ms_sum=0.0)
    )
    last_used: dict[int, datetime] = {}
    for e in events:
        agg = daily[(e.ts.date(), e.key_ref, e.model)]
        agg["requests"] += 1
        agg["errors"] += int(e.status_code >= 400)
        agg["prompt_tokens"] += e.prompt_tokens
        agg["completion_tokens"] += e.completion_tokens
        agg["cached_tokens"] += e.cached_tokens
        agg["latency_ms_sum"] += e.latency_ms
        if e.key_id is not None:
            last_used[e.key_id] = max(e.ts, last_used.get(e.key_id, e.ts))
    with db.session() as s:
        s.execute(
            insert(UsageRecord),
            [
                dict(ts=e.ts, key_id=e.key_id, auth=e.auth, model=e.model, prompt_tokens=e.prompt_tokens,
                     completion_tokens=e.completion_tokens, cached_tokens=e.cached_tokens,
                     latency_ms=e.latency_ms, status_code=e.status_code)
                for e in events
            ],
        )
        _upsert_daily(db, s, [dict(day=k[0], key_ref=k[1], model=k[2], **v) for k, v in daily.items()])
        for key_id, ts in last_used.items():
            s.execute(
                update(ApiKey)
                .where(ApiKey.id == key_id, (ApiKey.last_used_at.is_(None)) | (ApiKey.last_used_at < ts))
                .values(last_used_at=ts)
            )


class UsageWriter:
    """Thread-safe, non-blocking `submit`; `flush()` waits until everything submitted so far is written."""

    def __init__(
        self,
        db: Database,
        *,
        flush_interval_s: float = 0.5,
        max_batch: int = 500,
        periodic: Callable[[], None] | None = None,
        periodic_interval_s: float = 3600.0,
    ) -> None:
        self._db = db
        self._queue: queue.Queue[UsageEvent | None] = queue.Queue()
        self._flush_interval_s = flush_interval_s
        self._max_batch = max_batch
        self._periodic = periodic
        self._periodic_interval_s = periodic_interval_s
        self._cond = threading.Condition()
        self._num_submitted = 0
        self._num_done = 0  # written or dropped
        self.num_dropped = 0
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closed = False

    def submit(self, event: UsageEvent) -> None:
        if self._closed:
            logger.warning("usage writer closed; dropping a usage row")
            return
        self._ensure_started()
        with self._cond:
            self._num_submitted += 1
        self._queue.put_nowait(event)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Blocks until all rows submitted before the call are written; False on timeout."""
        with self._cond:
            target = self._num_submitted
            return self._cond.wait_for(lambda: self._num_done >= target, timeout=timeout_s)

    def close(self, timeout_s: float = 10.0) -> None:
        self.flush(timeout_s)
        self._closed = True
        if self._thread is not None:
            self._queue.put_nowait(None)
            self._thread.join(timeout_s)

    def _ensure_started(self) -> None:
        if self._thread is not None:
            return
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="tessera-usage-writer", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        next_periodic = time.monotonic() + 60.0  # first housekeeping a minute after start
        stop = False
        while not stop:
            batch: list[UsageEvent] = []
            deadline = time.monotonic() + self._flush_interval_s
            try:
                item = self._queue.get(timeout=self._flush_interval_s)
                if item is None:
                    stop = True
                else:
                    batch.append(item)
                    while len(batch) < self._max_batch:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        nxt = self._queue.get(timeout=remaining)
                        if nxt is None:
                            stop = True
                            break
                        batch.append(nxt)
            except queue.Empty:
                pass
            if batch:
                self._write_with_retry(batch)
            if self._periodic is not None and time.monotonic() >= next_periodic:
                next_periodic = time.monotonic() + self._periodic_interval_s
                try:
                    self._periodic()
                except Exception:
                    logger.exception("usage housekeeping failed")

    def _write_with_retry(self, batch: list[UsageEvent]) -> None:
        delay = 0.05
        for attempt in range(6):
            try:
                write_usage_batch(self._db, batch)
                break
            except OperationalError as exc:
                # The busy timeout already waited; retrying covers a lock held past it (e.g. a long backup).
                logger.warning("usage write failed (attempt %d): %s", attempt + 1, exc.orig)
                time.sleep(delay)
                delay *= 2
            except Exception:
                logger.exception("usage write failed; dropping %d rows", len(batch))
                self.num_dropped += len(batch)
                break
        else:
            logger.error("usage write kept failing; dropping %d rows", len(batch))
            self.num_dropped += len(batch)
        with self._cond:
            self._num_done += len(batch)
            self._cond.notify_all()
