"""KeyGate: API key authentication, model allow-lists and rate limits for generation routes.

The serving layer calls `admit` before queueing a request and `settle` exactly once when it ends
(success, error, client disconnect). Enforcement is on as soon as any key exists in the DB (revoked or
not, so revoking the last key does not reopen the server) or a static `--api-key` is set; otherwise
every request is admitted anonymously and still recorded as usage.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select

from app.admin import limiter_calls
from app.admin.history import RequestTally
from app.admin.limiter import Limits, Ticket
from app.admin.security import KeyHasher, tokens_equal
from app.admin.shared_limiter import make_limiter
from app.db.clock import utcnow
from app.db.database import Database
from app.db.models import ApiKey
from app.db.usage_writer import UsageEvent, UsageWriter
from app.gate import bearer_token

logger = logging.getLogger(__name__)


class GateError(Exception):
    """A refused request: answer with `status`, `headers` and the OpenAI error body from `body()`."""

    def __init__(self, status: int, message: str, code: str, headers: dict[str, str] | None = None,
                 error_type: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}
        if status == 401:
            self.headers.setdefault("WWW-Authenticate", "Bearer")
        self.error_type = error_type or {401: "invalid_request_error", 403: "permission_error",
                                         429: "rate_limit_error"}.get(status, "invalid_request_error")

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.error_type, "param": None, "code": self.code}}


@dataclass
class Admission:
    """An admitted request. `headers` are the rate-limit headers to add to the response."""

    auth: str  # key | static | anonymous
    key_id: int | None
    key_name: str | None
    model: str
    reserve_tokens: int
    headers: dict[str, str] = field(default_factory=dict)
    started_at: float = field(default_factory=time.monotonic)
    ticket: Ticket | None = None
    settled: bool = False


@dataclass(frozen=True)
class _KeyRecord:
    id: int
    name: str
    limits: Limits
    models: tuple[str, ...] | None
    expires_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class _KeySnapshot:
    by_digest: dict[str, _KeyRecord]
    # Digests of rotated-out secrets and when they stop working.
    previous: dict[str, tuple[_KeyRecord, datetime]]
    any_keys: bool
    loaded_at: float


class KeyGate:
    def __init__(self, db: Database, hasher: KeyHasher, usage: UsageWriter, static_api_key: str | None = None,
                 *, cache_ttl_s: float = 5.0, clock: Callable[[], float] = time.monotonic,
                 tally: RequestTally | None = None) -> None:
        self._db = db
        self._hasher = hasher
        self._usage = usage
        self.tally = tally or RequestTally()  # outcomes for the dashboard's request charts
        self._static_api_key = static_api_key or None
        # Short TTL so changes made by another process (several replicas on PostgreSQL) show up quickly;
        # changes made through this process's console call `invalidate()` and apply at once.
        self._cache_ttl_s = cache_ttl_s
        self._clock = clock
        self.limiter = make_limiter(db, clock)  # shared by all replicas when the DB is PostgreSQL
        self._snapshot: _KeySnapshot | None = None
        self._lock: asyncio.Lock | None = None
        self._refresh_lock: asyncio.Lock | None = None

    def invalidate(self) -> None:
        self._snapshot = None

    def _load(self) -> _KeySnapshot:
        by_digest: dict[str, _KeyRecord] = {}
        previous: dict[str, tuple[_KeyRecord, datetime]] = {}
        with self._db.session() as s:
            rows = s.scalars(select(ApiKey)).all()
        for r in rows:
            rec = _KeyRecord(r.id, r.name, Limits(r.rpm, r.tpm, r.max_concurrency),
                             tuple(r.models) if r.models else None, r.expires_at, r.revoked_at)
            by_digest[r.key_hash] = rec
            if r.prev_key_hash and r.prev_valid_until:
                previous[r.prev_key_hash] = (rec, r.prev_valid_until)
        return _KeySnapshot(by_digest, previous, bool(rows), self._clock())

    async def _keys(self) -> _KeySnapshot:
        snap = self._snapshot
        if snap is not None and self._clock() - snap.loaded_at < self._cache_ttl_s:
            return snap
        if self._refresh_lock is None:
            self._refresh_lock = asyncio.Lock()
        async with self._refresh_lock:  # one reload even when 100 requests find the cache stale together
            snap = self._snapshot
            if snap is None or self._clock() - snap.loaded_at >= self._cache_ttl_s:
                snap = await asyncio.to_thread(self._load)
                self._snapshot = snap
            return snap

    def _lookup(self, snap: _KeySnapshot, secret: str) -> _KeyRecord | None:
        digest = self._hasher.digest(secret)
        rec = snap.by_digest.get(digest)
        if rec is not None:
            return rec
        prev = snap.previous.get(digest)
        if prev is not None and prev[1] > utcnow():
            return prev[0]
        return None

    async def _identify(self, authorization: str | None) -> tuple[str, _KeyRecord | None]:
        """("static" | "anonymous", None) or ("key", record); raises the 401s."""
        secret = bearer_token(authorization)
        if self._static_api_key and secret is not None and tokens_equal(secret, self._static_api_key):
            return "static", None
        snap = await self._keys()
        if not snap.any_keys and not self._static_api_key:
            return "anonymous", None
        if secret is None:
            raise GateError(401, "Missing API key: send it as 'Authorization: Bearer <key>'.", "missing_api_key")
        rec = self._lookup(snap, secret)
        if rec is None:
            raise GateError(401, "Incorrect API key provided.", "invalid_api_key")
        if rec.revoked_at is not None:
            raise GateError(401, "This API key has been revoked.", "revoked_api_key")
        if rec.expires_at is not None and rec.expires_at <= utcnow():
            raise GateError(401, "This API key has expired.", "expired_api_key")
        return "key", rec

    async def authenticate(self, authorization: str | None) -> str:
        """Key check only (no model check, no limits, no usage row), for routes that do not generate:
        `/v1/models`, `/v1/tokenize`, `/get_model_info`, ... Returns "key", "static" or "anonymous"."""
        kind, _rec = await self._identify(authorization)
        return kind

    async def admit(self, authorization: str | None, model: str, reserve_tokens: int) -> Admission:
        """Admits one generation request or raises GateError (401 / 403 / 429).

        `model` is the served model name the request targets; `reserve_tokens` is prompt tokens plus the
        most the request may generate (what TPM holds until `settle`)."""
        try:
            kind, rec = await self._identify(authorization)
        except GateError as exc:
            # Rejected requests are recorded too (no key, since none was proven), so operators see them.
            self._record(UsageEvent(model=model, auth="unauthorized", key_id=None, prompt_tokens=0,
                                          completion_tokens=0, cached_tokens=0, latency_ms=0.0,
                                          status_code=exc.status))
            raise
        if rec is None:
            return Admission(kind, None, None, model, reserve_tokens)
        if rec.models is not None and model not in rec.models:
            self._record_refusal(rec, model, 403)
            raise GateError(403, f"This API key may not use the model '{model}'.", "model_not_allowed")
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            decision = await limiter_calls.acquire(self.limiter, rec.id, rec.limits, reserve_tokens)
        if decision.reason == "too_large":
            # A 400, not a 429: SDKs retry 429s (the OpenAI SDK honours Retry-After), and this can never fit.
            self._record_refusal(rec, model, 400)
            raise GateError(400, decision.message or "Request too large.", "request_too_large",
                            {**decision.headers, "x-should-retry": "false"}, error_type="invalid_request_error")
        if decision.ticket is None:
            self._record_refusal(rec, model, 429)
            headers = dict(decision.headers)
            headers["Retry-After"] = headers.pop("retry-after")
            raise GateError(429, decision.message or "Rate limit reached.", "rate_limit_exceeded", headers,
                            error_type=decision.reason)
        return Admission("key", rec.id, rec.name, model, reserve_tokens, decision.headers, ticket=decision.ticket)

    async def record_refusal(self, authorization: str | None, model: str, status_code: int) -> None:
        """Records a request refused before admission (bad input, unknown model, bad key): no limit is
        charged, but the usage log shows it under the key that sent it."""
        try:
            kind, rec = await self._identify(authorization)
        except GateError:
            kind, rec = "unauthorized", None
        self._record(UsageEvent(model=model, auth=kind, key_id=rec.id if rec else None, prompt_tokens=0,
                                completion_tokens=0, cached_tokens=0, latency_ms=0.0, status_code=status_code))

    def _record(self, event: UsageEvent) -> None:
        self.tally.count(event.status_code)
        self._usage.submit(event)

    def _record_refusal(self, rec: _KeyRecord, model: str, status: int) -> None:
        self._record(UsageEvent(model=model, auth="key", key_id=rec.id, prompt_tokens=0, completion_tokens=0,
                                      cached_tokens=0, latency_ms=0.0, status_code=status))

    async def settle(self, admission: Admission, prompt_tokens: int, completion_tokens: int, cached_tokens: int,
                     latency_s: float | None, status_code: int) -> None:
        """Settles the TPM reservation to the real count, frees the concurrency slot, records usage.

        Call it once per admitted request, also when it failed or the client went away; later calls are
        no-ops. `latency_s=None` measures from admission.
        """
        if admission.settled:
            return
        admission.settled = True
        if admission.ticket is not None:
            if self._lock is None:
                self._lock = asyncio.Lock()
            async with self._lock:
                await limiter_calls.settle(self.limiter, admission.ticket, prompt_tokens + completion_tokens)
        if latency_s is None:
            latency_s = time.monotonic() - admission.started_at
        self._record(UsageEvent(
            model=admission.model, auth=admission.auth, key_id=admission.key_id, prompt_tokens=int(prompt_tokens),
            completion_tokens=int(completion_tokens), cached_tokens=int(cached_tokens),
            latency_ms=float(latency_s) * 1000.0, status_code=int(status_code),
        ))
