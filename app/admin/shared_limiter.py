"""Rate limits shared by every replica on one PostgreSQL database (`DATABASE_URL=postgresql://...`).

Why PostgreSQL and not Redis: the keys already live there, so a replica needs no second service, and a
transaction under a per-key advisory lock makes check-then-record exact across replicas (100 concurrent
requests on an RPM-10 key admit exactly 10, whichever replicas they reach). The cost is one short
transaction per admission and one UPDATE per settle (a millisecond or two on a local database).

Same semantics as the in-memory `RateLimiter` (60 s sliding windows for requests and reserved tokens,
concurrency = requests still running); timestamps come from the database clock, so replicas need not agree
on time. A replica that dies leaves its running rows open: they stop counting after STALE_OPEN_S.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sqlalchemy import text

from app.admin.limiter import WINDOW_S, Decision, Limits, format_reset
from app.db.database import Database

STALE_OPEN_S = 3600.0
_NOW = "extract(epoch from clock_timestamp())"


@dataclass
class SharedTicket:
    key_id: int
    row_id: int
    done: bool = False


class SharedRateLimiter:
    # Every call is a database transaction: app/admin/limiter_calls.py runs it off the event loop.
    blocking = True

    def __init__(self, db: Database) -> None:
        self._db = db

    @staticmethod
    def _headers(limits: Limits, times: list[float], tokens: int, last_token_ts: float | None,
                 now: float) -> dict[str, str]:
        h: dict[str, str] = {}
        if limits.rpm is not None:
            h["x-ratelimit-limit-requests"] = str(limits.rpm)
            h["x-ratelimit-remaining-requests"] = str(max(0, limits.rpm - len(times)))
            h["x-ratelimit-reset-requests"] = format_reset(times[-1] + WINDOW_S - now if times else 0)
        if limits.tpm is not None:
            h["x-ratelimit-limit-tokens"] = str(limits.tpm)
            h["x-ratelimit-remaining-tokens"] = str(max(0, limits.tpm - tokens))
            h["x-ratelimit-reset-tokens"] = format_reset(last_token_ts + WINDOW_S - now if last_token_ts else 0)
        return h

    def try_acquire(self, key_id: int, limits: Limits, reserve_tokens: int) -> Decision:
        reserve_tokens = max(0, int(reserve_tokens))
        with self._db.engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key_id})
            now = float(conn.execute(text(f"SELECT {_NOW}")).scalar_one())
            conn.execute(text("DELETE FROM rate_events WHERE key_id = :k AND ts <= :t AND (NOT open OR ts <= :s)"),
                         {"k": key_id, "t": now - WINDOW_S, "s": now - STALE_OPEN_S})
            rows = conn.execute(text("SELECT ts, tokens FROM rate_events WHERE key_id = :k AND ts > :t ORDER BY ts"),
                                {"k": key_id, "t": now - WINDOW_S}).all()
            in_flight = int(conn.execute(text("SELECT count(*) FROM rate_events WHERE key_id = :k AND open "
                                              "AND ts > :s"), {"k": key_id, "s": now - STALE_OPEN_S}).scalar_one())
            times = [float(r[0]) for r in rows]
            used = sum(int(r[1]) for r in rows)
            last = times[-1] if times else None
            refusal: tuple[str, str, float] | None = None
            if limits.rpm is not None and len(times) >= limits.rpm:
                wait = times[len(times) - limits.rpm] + WINDOW_S - now if limits.rpm else WINDOW_S
                refusal = ("requests", f"Rate limit reached for requests per min (RPM): limit {limits.rpm}", wait)
            elif limits.tpm is not None and used + reserve_tokens > limits.tpm:
                if reserve_tokens > limits.tpm:
                    refusal = ("tokens", f"Request too large: {reserve_tokens} tokens requested (prompt + max "
                                         f"tokens), tokens per min (TPM) limit {limits.tpm}", WINDOW_S)
                else:
                    need, wait = used + reserve_tokens - limits.tpm, 0.0
                    for ts, tok in rows:
                        need -= int(tok)
                        wait = float(ts) + WINDOW_S - now
                        if need <= 0:
                            break
                    refusal = ("tokens", f"Rate limit reached for tokens per min (TPM): limit {limits.tpm}, "
                                         f"used {used}, requested {reserve_tokens}", wait)
            elif limits.max_concurrency is not None and in_flight >= limits.max_concurrency:
                refusal = ("concurrency", f"Too many concurrent requests: limit {limits.max_concurrency}", 1.0)
            if refusal is not None:
                reason, message, wait = refusal
                headers = self._headers(limits, times, used, last, now)
                headers["retry-after"] = str(max(1, math.ceil(wait)))
                return Decision(ticket=None, headers=headers, reason=reason, message=message)
            row_id = int(conn.execute(text("INSERT INTO rate_events (key_id, ts, tokens, open) VALUES "
                                           "(:k, :t, :n, true) RETURNING id"),
                                      {"k": key_id, "t": now, "n": reserve_tokens}).scalar_one())
            headers = self._headers(limits, [*times, now], used + reserve_tokens, now, now)
        return Decision(ticket=SharedTicket(key_id, row_id), headers=headers)  # type: ignore[arg-type]

    def settle(self, ticket: SharedTicket, actual_tokens: int) -> None:
        """Replaces the reservation with the real count and frees the concurrency slot (idempotent)."""
        if ticket.done:
            return
        ticket.done = True
        with self._db.engine.begin() as conn:
            conn.execute(text("UPDATE rate_events SET tokens = :n, open = false WHERE id = :i"),
                         {"n": max(0, int(actual_tokens)), "i": ticket.row_id})

    def usage(self, key_id: int) -> dict[str, int]:
        with self._db.engine.begin() as conn:
            now = float(conn.execute(text(f"SELECT {_NOW}")).scalar_one())
            row = conn.execute(text("SELECT count(*) FILTER (WHERE ts > :t), coalesce(sum(tokens) FILTER "
                                    "(WHERE ts > :t), 0), count(*) FILTER (WHERE open AND ts > :s) FROM rate_events "
                                    "WHERE key_id = :k"),
                               {"k": key_id, "t": now - WINDOW_S, "s": now - STALE_OPEN_S}).one()
        return {"requests": int(row[0]), "tokens": int(row[1]), "in_flight": int(row[2])}


def make_limiter(db: Database, clock):  # noqa: ANN001, ANN201 - RateLimiter | SharedRateLimiter
    """Shared counters on PostgreSQL (several replicas), in-memory windows on SQLite (one process)."""
    if db.engine.dialect.name == "postgresql":
        return SharedRateLimiter(db)
    from app.admin.limiter import RateLimiter

    return RateLimiter(clock)
