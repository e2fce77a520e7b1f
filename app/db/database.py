"""Engine and session setup: SQLite in WAL mode with a busy timeout, or whatever `DATABASE_URL` names.

`Database.open(...)` creates the engine and runs `alembic upgrade head` before anything touches a table,
so every process that opens the DB (server, `tessera admin reset-password`, tests) sees the same schema.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

logger = logging.getLogger(__name__)

# Writers wait this long for the SQLite lock instead of failing with "database is locked".
SQLITE_BUSY_TIMEOUT_MS = 15000
MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


def default_database_url(data_dir: str) -> str:
    return f"sqlite:///{Path(data_dir).resolve() / 'tessera.db'}"


def resolve_database_url(data_dir: str, database_url: str | None) -> str:
    """Explicit argument, else env `DATABASE_URL`, else SQLite in the data dir."""
    return database_url or os.environ.get("DATABASE_URL") or default_database_url(data_dir)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    # NORMAL is durable across application crashes in WAL mode; only power loss can drop the last commits.
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def create_db_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        if ":memory:" in url or url in ("sqlite://", "sqlite:///"):
            raise ValueError("in-memory SQLite is not supported: the usage writer needs a shared file")
        path = url.split("///", 1)[-1]
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            pool_size=8,
            max_overflow=8,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if url.startswith(("postgresql://", "postgres://")):
        # The driver we ship is psycopg 3; SQLAlchemy's default for a bare postgresql:// is psycopg2.
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    return create_engine(url, pool_pre_ping=True, pool_size=16, max_overflow=16)


def run_migrations(engine: Engine) -> None:
    """`alembic upgrade head` on this engine, without touching the process's logging configuration."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


@dataclass
class Database:
    """The engine plus a session factory; one per process, owned by the admin runtime."""

    engine: Engine
    sessions: sessionmaker[Session]

    @classmethod
    def open(cls, data_dir: str, database_url: str | None = None, *, migrate: bool = True) -> Database:
        Path(data_dir).mkdir(parents=True, exist_ok=True)
        url = resolve_database_url(data_dir, database_url)
        engine = create_db_engine(url)
        if migrate:
            run_migrations(engine)
        logger.info("admin database ready (%s)", engine.url.render_as_string(hide_password=True))
        return cls(engine=engine, sessions=sessionmaker(engine, expire_on_commit=False))

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on error."""
        with self.sessions() as s:
            try:
                yield s
                s.commit()
            except BaseException:
                s.rollback()
                raise

    def close(self) -> None:
        self.engine.dispose()
