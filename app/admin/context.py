"""AdminContext: what the serving layer hands the console; AdminRuntime: what the console builds from it.

The runtime (DB, migrations, bootstrap, key gate, usage writer, ...) is built once per context, on
first use of `ctx.runtime` (`mount_admin` does it at app construction), and is the only place the
console keeps mutable state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from argon2 import PasswordHasher

from app.admin.contracts import MetricsSourceProtocol, SupervisorProtocol
from app.admin.gate import KeyGate
from app.admin.gpu import GpuSampler
from app.admin.history import DEFAULT_INTERVAL_S, DEFAULT_WINDOW_S
from app.admin.runtime import WEB_DIR, AdminRuntime, build_runtime

__all__ = ["WEB_DIR", "AdminContext"]

logger = logging.getLogger(__name__)


@dataclass
class AdminContext:
    """Inputs of the console.

    data_dir: holds `tessera.db` (default DB), `secret_key` and `admin_password`.
    database_url: SQLAlchemy URL; None means env `DATABASE_URL`, else SQLite in data_dir.
    models_dir: where the deployment page looks for model directories (None: list nothing).
    static_api_key: the `--api-key` flag; always accepted by the gate, without limits.
    flag_args: the ServerArgs dict from flags/env before any saved deployment was laid over it (shown
        on the deployment page and used by "reset to flags"); None: taken from the supervisor at start.
    usage_flush_interval_s: how often the batched usage writer commits.
    password_hasher: argon2 hasher for admin passwords (None: argon2-cffi's recommended cost).
    gpu_sampler: GPU statistics source (None: NVML through `app.admin.gpu.GpuSampler`).
    history_interval_s / history_window_s: how often the dashboard's history is sampled, and how much
        of it the server keeps (default: every 1.5 s, 15 minutes).
    """

    data_dir: str
    database_url: str | None
    models_dir: str | None
    supervisor: SupervisorProtocol
    metrics: MetricsSourceProtocol
    static_api_key: str | None = None
    flag_args: dict[str, Any] | None = None
    usage_flush_interval_s: float = 0.5
    password_hasher: PasswordHasher | None = None
    gpu_sampler: GpuSampler | None = None
    history_interval_s: float = DEFAULT_INTERVAL_S
    history_window_s: float = DEFAULT_WINDOW_S
    _runtime: AdminRuntime | None = field(default=None, init=False, repr=False)
    _closed: bool = field(default=False, init=False, repr=False)

    @property
    def runtime(self) -> AdminRuntime:
        if self._closed:
            # Rebuilding here would silently reopen the DB and restart the usage writer during shutdown.
            raise RuntimeError("AdminContext is closed")
        if self._runtime is None:
            self._runtime = build_runtime(self)
        return self._runtime

    @property
    def gate(self) -> KeyGate:
        """The KeyGate for generation routes (works with the console disabled too)."""
        return self.runtime.gate

    def close(self) -> None:
        """Flushes pending usage rows and closes the DB (call at shutdown; idempotent, final)."""
        self._closed = True
        if self._runtime is not None:
            self._runtime.close()
            self._runtime = None
