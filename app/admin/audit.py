"""Audit log: who did what, when, from where. Secrets and passwords never go into `detail`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from app.db.clock import iso, utcnow
from app.db.database import Database
from app.db.models import AuditLog


@dataclass(frozen=True)
class Actor:
    """The operator behind a change and where the request came from."""

    username: str
    ip: str | None = None
    user_agent: str | None = None


def record(db: Database, actor: Actor, action: str, target: str | None = None,
           detail: dict[str, Any] | None = None) -> None:
    with db.session() as s:
        s.add(AuditLog(ts=utcnow(), actor=actor.username, action=action, target=target, detail=detail,
                       ip=actor.ip, user_agent=(actor.user_agent or "")[:255] or None))


def entry_dict(e: AuditLog) -> dict[str, Any]:
    return {"id": e.id, "ts": iso(e.ts), "actor": e.actor, "action": e.action, "target": e.target,
            "detail": e.detail, "ip": e.ip, "user_agent": e.user_agent}


def query(db: Database, *, limit: int = 100, offset: int = 0, action: str | None = None,
          actor: str | None = None) -> dict[str, Any]:
    limit = max(1, min(limit, 1000))
    stmt = select(AuditLog)
    count = select(func.count(AuditLog.id))
    if action:
        stmt, count = stmt.where(AuditLog.action == action), count.where(AuditLog.action == action)
    if actor:
        stmt, count = stmt.where(AuditLog.actor == actor), count.where(AuditLog.actor == actor)
    with db.session() as s:
        rows = s.scalars(stmt.order_by(AuditLog.id.desc()).limit(limit).offset(max(0, offset))).all()
        total = s.scalar(count) or 0
    return {"entries": [entry_dict(e) for e in rows], "total": total, "limit": limit, "offset": offset}
