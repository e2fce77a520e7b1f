"""First-start admin account and password resets.

The initial password comes from `TESSERA_ADMIN_PASSWORD`, or is random, written to
`<data_dir>/admin_password` (mode 0600) and logged once. Either way the first login must change it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from sqlalchemy import delete, select

from app.admin import audit
from app.admin.security import Passwords, random_password, write_private_file
from app.db.clock import utcnow
from app.db.database import Database
from app.db.models import AdminSession, AdminUser

logger = logging.getLogger(__name__)

ADMIN_USERNAME = "admin"
PASSWORD_ENV = "TESSERA_ADMIN_PASSWORD"


def password_file(data_dir: str) -> Path:
    return Path(data_dir) / "admin_password"


def ensure_admin(db: Database, data_dir: str, passwords: Passwords) -> None:
    """Creates the admin account on first start; a no-op afterwards."""
    with db.session() as s:
        if s.scalars(select(AdminUser.id).limit(1)).first() is not None:
            return
    from_env = os.environ.get(PASSWORD_ENV)
    password = from_env or random_password()
    with db.session() as s:
        s.add(AdminUser(username=ADMIN_USERNAME, password_hash=passwords.hash(password), must_change_password=True,
                        created_at=utcnow()))
    audit.record(db, audit.Actor("system"), "admin_bootstrap", ADMIN_USERNAME,
                 {"password_source": "env" if from_env else "generated"})
    if from_env:
        logger.warning("admin console: created user %r with the password from %s (change it at first login)",
                       ADMIN_USERNAME, PASSWORD_ENV)
        return
    path = password_file(data_dir)
    write_private_file(path, password + "\n")
    # Logged once, on purpose: the operator may only have the container log to find it.
    logger.warning("admin console: created user %r with password %s (also in %s; you must change it at first "
                   "login)", ADMIN_USERNAME, password, path)


def reset_admin_password(db: Database, data_dir: str, passwords: Passwords, actor: str = "cli") -> str:
    """New random password for the admin (created if missing), forced change, every session ended."""
    password = random_password()
    with db.session() as s:
        user = s.scalars(select(AdminUser).where(AdminUser.username == ADMIN_USERNAME)).first()
        if user is None:
            user = AdminUser(username=ADMIN_USERNAME, created_at=utcnow(), password_hash="")
            s.add(user)
        user.password_hash = passwords.hash(password)
        user.must_change_password = True
        user.password_changed_at = utcnow()
        s.flush()
        s.execute(delete(AdminSession).where(AdminSession.user_id == user.id))
    write_private_file(password_file(data_dir), password + "\n")
    audit.record(db, audit.Actor(actor), "password_reset", ADMIN_USERNAME)
    return password


def forget_password_file(data_dir: str) -> None:
    """After the operator chose a password the generated one in the data dir is stale; remove it."""
    try:
        password_file(data_dir).unlink()
    except FileNotFoundError:
        pass
