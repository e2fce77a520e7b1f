"""Entry points for `tessera admin ...` (wired into the CLI by app/cli.py)."""

from __future__ import annotations

import os

from app.admin.bootstrap import reset_admin_password
from app.admin.security import Passwords
from app.db.database import Database, default_database_url, resolve_database_url


class NoDatabaseError(Exception):
    """The data dir holds no console database: a mistyped path must not create a fresh one."""


def reset_password(data_dir: str, database_url: str | None = None) -> str:
    """`tessera admin reset-password`: sets a new random admin password, ends all console sessions and
    returns the password (also written to `<data_dir>/admin_password`); the next login must change it.
    Safe while the server runs: it only touches the DB, which the server re-reads on every login. With the
    default SQLite database the data dir must already hold it (NoDatabaseError): a new database would get the
    new password while the server's own kept the old one."""
    url = resolve_database_url(data_dir, database_url)
    sqlite_path = default_database_url(data_dir).removeprefix("sqlite:///")
    if url == default_database_url(data_dir) and not os.path.isfile(sqlite_path):
        raise NoDatabaseError(f"no console database in {data_dir!r} ({sqlite_path} does not exist): check "
                              "--data-dir (the server's), or start the server once to create it")
    db = Database.open(data_dir, database_url)
    try:
        return reset_admin_password(db, data_dir, Passwords())
    finally:
        db.close()


def migrate(data_dir: str, database_url: str | None = None) -> str:
    """`tessera admin migrate`: `alembic upgrade head` (what the server also does at start; the container
    entry point runs it first so a schema problem is reported before any weights load). Returns the
    revision the database is at."""
    from sqlalchemy import text

    db = Database.open(data_dir, database_url)
    try:
        with db.engine.connect() as conn:
            return str(conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one())
    finally:
        db.close()
