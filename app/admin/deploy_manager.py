"""Runs one deployment change at a time through the supervisor and records the outcome.

`start_apply` returns as soon as the change is saved; the restart runs as a task whose progress the page
polls (`supervisor.status()`). Success makes the profile the active one (it then overrides flags/env
at start); failure keeps the previous profile, and the supervisor has already restored the previous
deployment before raising.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sqlalchemy import update

from app.admin import audit
from app.admin.contracts import DEPLOYMENT_FIELDS, SupervisorProtocol
from app.db.clock import iso, utcnow
from app.db.database import Database
from app.db.models import DeploymentProfile

logger = logging.getLogger(__name__)


class ApplyInProgress(RuntimeError):
    pass


class DeploymentManager:
    def __init__(self, db: Database, supervisor: SupervisorProtocol) -> None:
        self._db = db
        self._supervisor = supervisor
        self._task: asyncio.Task[None] | None = None
        self.last_result: dict[str, Any] | None = None  # {"profile_id","ok","error","finished_at"}
        self.pending_profile_id: int | None = None

    @property
    def is_applying(self) -> bool:
        return self._task is not None and not self._task.done()

    def _save_pending(self, args: dict[str, Any], actor: str) -> int:
        with self._db.session() as s:
            prof = DeploymentProfile(args={k: args.get(k) for k in DEPLOYMENT_FIELDS}, status="pending",
                                     created_at=utcnow(), created_by=actor)
            s.add(prof)
            s.flush()
            return prof.id

    async def start_apply(self, fields: dict[str, Any], actor: audit.Actor, *, reset: bool = False) -> int:
        """Saves the profile and starts the restart; raises ApplyInProgress while another one runs."""
        if self.is_applying:
            raise ApplyInProgress("a deployment change is already being applied; wait for it to finish")
        new_args = {**self._supervisor.current_args(), **fields}
        profile_id = await asyncio.to_thread(self._save_pending, new_args, actor.username)
        detail = {k: new_args.get(k) for k in DEPLOYMENT_FIELDS}
        await asyncio.to_thread(audit.record, self._db, actor, "deployment_reset" if reset else "deployment_apply",
                                f"profile #{profile_id}", detail)
        self.pending_profile_id = profile_id
        self.last_result = None
        self._task = asyncio.create_task(self._run(profile_id, new_args, actor, reset))
        # Let the restart task reach the supervisor (which marks it `restarting` and clears the old
        # log) before the page renders its first status box.
        await asyncio.sleep(0)
        return profile_id

    async def wait(self) -> None:
        if self._task is not None:
            await asyncio.shield(self._task)

    async def _run(self, profile_id: int, new_args: dict[str, Any], actor: audit.Actor, reset: bool) -> None:
        try:
            await self._supervisor.apply(new_args)
        except Exception as exc:
            error = str(exc) or exc.__class__.__name__
            logger.warning("deployment #%d failed: %s", profile_id, error)
            await asyncio.to_thread(self._finish, profile_id, False, error, reset)
            await asyncio.to_thread(audit.record, self._db, actor, "deployment_failed", f"profile #{profile_id}",
                                    {"error": error[:2000]})
        else:
            await asyncio.to_thread(self._finish, profile_id, True, None, reset)
            await asyncio.to_thread(audit.record, self._db, actor, "deployment_ready", f"profile #{profile_id}")
        finally:
            self.pending_profile_id = None

    def _finish(self, profile_id: int, ok: bool, error: str | None, reset: bool) -> None:
        now = utcnow()
        with self._db.session() as s:
            if ok:
                s.execute(update(DeploymentProfile).values(is_active=False))
            prof = s.get(DeploymentProfile, profile_id)
            if prof is not None:
                prof.status = "applied" if ok else "failed"
                prof.error = error
                prof.applied_at = now if ok else None
                # A reset to flags is recorded but not made active: flags win again from the next start.
                prof.is_active = ok and not reset
        self.last_result = {"profile_id": profile_id, "ok": ok, "error": error, "finished_at": iso(now)}
