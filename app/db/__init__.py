"""Admin console persistence: SQLAlchemy models, engine/session setup, batched usage writes."""

from __future__ import annotations

from app.db.clock import iso, to_naive_utc, utcnow
from app.db.database import Database, resolve_database_url, run_migrations
from app.db.usage_writer import UsageEvent, UsageWriter, write_usage_batch

__all__ = [
    "Database",
    "UsageEvent",
    "UsageWriter",
    "iso",
    "resolve_database_url",
    "run_migrations",
    "to_naive_utc",
    "utcnow",
    "write_usage_batch",
]
