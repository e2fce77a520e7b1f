"""Replica health transitions (`--dp-size`) into the console's audit log, as actor `system`."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from app.admin import audit

logger = logging.getLogger(__name__)
SYSTEM = audit.Actor("system")


def attach(supervisor: Any, admin_ctx: Any) -> None:
    listeners = getattr(supervisor, "on_transition", None)
    if listeners is None:  # one engine group: no replicas to report
        return

    def record(index: int, old: str, new: str, reason: str | None) -> None:
        detail = {"from": old, "to": new, "reason": reason}

        def write() -> None:
            try:
                audit.record(admin_ctx.runtime.db, SYSTEM, f"replica_{new}", f"replica {index}", detail)
            except Exception:  # the audit log must never break failover
                logger.exception("could not record a replica transition")

        try:
            asyncio.get_running_loop().run_in_executor(None, write)
        except RuntimeError:  # no loop (shutdown): write inline
            write()

    listeners.append(record)
