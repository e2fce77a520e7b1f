"""The console's live objects, built once from the console's inputs (an AdminContext)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.templating import Jinja2Templates

from app.admin.bootstrap import ensure_admin
from app.admin.contracts import ConsoleInputs
from app.admin.deploy_manager import DeploymentManager
from app.admin.formatting import install as install_filters
from app.admin.gate import KeyGate
from app.admin.gpu import GpuSampler
from app.admin.history import MetricsHistory, RequestTally
from app.admin.keys import KeyService
from app.admin.security import KeyHasher, Passwords, load_or_create_secret
from app.admin.sessions import SessionStore
from app.admin.throttle import LoginThrottle
from app.db.database import Database
from app.db.retention import prune_usage
from app.db.usage_writer import UsageWriter

logger = logging.getLogger(__name__)

PREFIX = "/admin"
WEB_DIR = Path(__file__).resolve().parents[2] / "web"


@dataclass
class AdminRuntime:
    ctx: ConsoleInputs
    db: Database
    hasher: KeyHasher
    keys: KeyService
    usage: UsageWriter
    gate: KeyGate
    sessions: SessionStore
    passwords: Passwords
    throttle: LoginThrottle
    gpu: GpuSampler
    deploy: DeploymentManager
    templates: Jinja2Templates
    flag_args: dict[str, Any]
    history: MetricsHistory

    def close(self) -> None:
        self.history.close()
        self.usage.close()
        self.gpu.close()
        self.db.close()


def build_runtime(ctx: ConsoleInputs) -> AdminRuntime:
    db = Database.open(ctx.data_dir, ctx.database_url)  # runs `alembic upgrade head`
    passwords = Passwords(ctx.password_hasher)
    ensure_admin(db, ctx.data_dir, passwords)
    hasher = KeyHasher(load_or_create_secret(ctx.data_dir))
    usage = UsageWriter(db, flush_interval_s=ctx.usage_flush_interval_s, periodic=lambda: _prune(db))
    templates = Jinja2Templates(directory=str(WEB_DIR / "templates"))
    templates.env.globals.update(prefix=PREFIX, static=f"{PREFIX}/static")
    install_filters(templates.env)
    gpu = ctx.gpu_sampler or GpuSampler()
    tally = RequestTally()
    history = MetricsHistory(ctx.metrics, gpu, ctx.supervisor, tally, interval_s=ctx.history_interval_s,
                             window_s=ctx.history_window_s)
    runtime = AdminRuntime(
        ctx=ctx,
        db=db,
        hasher=hasher,
        keys=KeyService(db, hasher),
        usage=usage,
        gate=KeyGate(db, hasher, usage, ctx.static_api_key, tally=tally),
        sessions=SessionStore(db),
        passwords=passwords,
        throttle=LoginThrottle(),
        gpu=gpu,
        deploy=DeploymentManager(db, ctx.supervisor),
        templates=templates,
        flag_args=dict(ctx.flag_args) if ctx.flag_args is not None else dict(ctx.supervisor.current_args()),
        history=history,
    )
    history.start()
    return runtime


def _prune(db: Database) -> None:
    raw, daily = prune_usage(db)
    if raw or daily:
        logger.info("usage retention: deleted %d raw rows and %d daily roll-ups", raw, daily)
