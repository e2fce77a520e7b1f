"""Console settings (JSON values in the `settings` table) and usage retention.

Raw usage rows are kept `usage_retention_days`; daily roll-ups, which the usage page reads, are kept
`rollup_retention_days`. The usage writer thread prunes hourly; saving the settings prunes at once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import timedelta

from sqlalchemy import delete, select

from app.db.clock import utcnow
from app.db.database import Database
from app.db.models import Setting, UsageDaily, UsageRecord


@dataclass(frozen=True)
class RetentionSettings:
    usage_retention_days: int = 30
    rollup_retention_days: int = 400

    def validate(self) -> None:
        if not 1 <= self.usage_retention_days <= 3650:
            raise ValueError("usage_retention_days must be in 1..3650")
        if not 1 <= self.rollup_retention_days <= 36500:
            raise ValueError("rollup_retention_days must be in 1..36500")
        if self.rollup_retention_days < self.usage_retention_days:
            raise ValueError("rollup_retention_days must be >= usage_retention_days")


def load_retention(db: Database) -> RetentionSettings:
    defaults = RetentionSettings()
    with db.session() as s:
        rows = {r.key: r.value for r in s.scalars(select(Setting).where(Setting.key.in_(asdict(defaults))))}
    return RetentionSettings(**{k: int(rows.get(k, v)) for k, v in asdict(defaults).items()})  # type: ignore[arg-type]


def save_retention(db: Database, settings: RetentionSettings) -> None:
    settings.validate()
    with db.session() as s:
        for key, value in asdict(settings).items():
            row = s.get(Setting, key)
            if row is None:
                s.add(Setting(key=key, value=value, updated_at=utcnow()))
            else:
                row.value = value
                row.updated_at = utcnow()


def prune_usage(db: Database, settings: RetentionSettings | None = None) -> tuple[int, int]:
    """Deletes raw rows and roll-ups past retention; returns (raw rows, roll-up rows) deleted."""
    settings = settings or load_retention(db)
    now = utcnow()
    raw_cutoff = now - timedelta(days=settings.usage_retention_days)
    rollup_cutoff = (now - timedelta(days=settings.rollup_retention_days)).date()
    with db.session() as s:
        raw = s.execute(delete(UsageRecord).where(UsageRecord.ts < raw_cutoff)).rowcount
        daily = s.execute(delete(UsageDaily).where(UsageDaily.day < rollup_cutoff)).rowcount
    return int(raw or 0), int(daily or 0)
