"""One notion of "now" for the DB: naive UTC, so SQLite and PostgreSQL compare timestamps alike."""

from __future__ import annotations

from datetime import datetime, timezone


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def to_naive_utc(value: datetime) -> datetime:
    """Aware datetimes are converted to UTC; naive ones are taken to be UTC already."""
    if value.tzinfo is None:
        return value
    return value.astimezone(timezone.utc).replace(tzinfo=None)


def iso(value: datetime | None) -> str | None:
    """ISO 8601 with an explicit `Z`, for JSON answers."""
    if value is None:
        return None
    return value.replace(microsecond=0).isoformat() + "Z"
