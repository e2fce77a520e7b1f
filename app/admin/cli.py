"""Entry points for `tessera admin ...` (wired into the CLI by app/cli.py)."""

from __future__ import annotations

from app.admin.bootstrap import reset_admin_password
from app.admin.security import Passwords
from app.db.database import Database


def reset_password(data_dir: str, database_url: str | None = None) -> str:
    """`tessera admin reset-password`: sets a new random admin password, ends all console sessions and
    returns the password (also written to `<data_dir>/admin_password`); the next login must change it.
    Safe while the server runs: it only touches the DB, which the server re-reads on every login."""
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
