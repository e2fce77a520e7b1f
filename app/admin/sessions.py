"""Server-side console sessions and admin password checks.

The cookie carries a random token; the DB keeps only its SHA-256 (a copy of the DB does not let anyone
take over a session) plus the session's CSRF token. Sessions expire after `IDLE_S` without use and
`ABSOLUTE_S` after login, whichever comes first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select

from app.admin.security import Passwords, password_problem, random_token, sha256_hex
from app.db.clock import utcnow
from app.db.database import Database
from app.db.models import AdminSession, AdminUser

SESSION_COOKIE = "tessera_admin_session"
IDLE_S = 12 * 3600
ABSOLUTE_S = 7 * 24 * 3600
TOUCH_EVERY_S = 60  # write last_seen at most once a minute per session, not on every poll


@dataclass(frozen=True)
class SessionInfo:
    session_id: int
    user_id: int
    username: str
    csrf_token: str
    must_change_password: bool


class SessionStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def create(self, user_id: int, ip: str | None, user_agent: str | None) -> tuple[str, str]:
        """Returns (cookie token, CSRF token)."""
        token, csrf = random_token(), random_token()
        now = utcnow()
        with self._db.session() as s:
            s.execute(delete(AdminSession).where(AdminSession.expires_at < now))  # housekeeping
            s.add(AdminSession(token_hash=sha256_hex(token), user_id=user_id, csrf_token=csrf, created_at=now,
                               last_seen_at=now, expires_at=now + timedelta(seconds=IDLE_S), ip=ip,
                               user_agent=(user_agent or "")[:255] or None))
        return token, csrf

    def load(self, token: str) -> SessionInfo | None:
        now = utcnow()
        with self._db.session() as s:
            row = s.execute(
                select(AdminSession, AdminUser)
                .join(AdminUser, AdminUser.id == AdminSession.user_id)
                .where(AdminSession.token_hash == sha256_hex(token))
            ).first()
            if row is None:
                return None
            sess, user = row
            if sess.expires_at <= now or sess.created_at + timedelta(seconds=ABSOLUTE_S) <= now:
                s.delete(sess)
                return None
            if (now - sess.last_seen_at).total_seconds() >= TOUCH_EVERY_S:
                sess.last_seen_at = now
                sess.expires_at = min(now + timedelta(seconds=IDLE_S), sess.created_at + timedelta(seconds=ABSOLUTE_S))
            return SessionInfo(sess.id, user.id, user.username, sess.csrf_token, user.must_change_password)

    def delete(self, token: str) -> None:
        with self._db.session() as s:
            s.execute(delete(AdminSession).where(AdminSession.token_hash == sha256_hex(token)))

    def delete_for_user(self, user_id: int, keep_session_id: int | None = None) -> None:
        with self._db.session() as s:
            stmt = delete(AdminSession).where(AdminSession.user_id == user_id)
            if keep_session_id is not None:
                stmt = stmt.where(AdminSession.id != keep_session_id)
            s.execute(stmt)


def authenticate(db: Database, passwords: Passwords, username: str, password: str) -> AdminUser | None:
    with db.session() as s:
        user = s.scalars(select(AdminUser).where(AdminUser.username == username)).first()
    if user is None:
        passwords.verify_dummy(password)
        return None
    return user if passwords.verify(user.password_hash, password) else None


def change_password(db: Database, passwords: Passwords, user_id: int, old_password: str,
                    new_password: str) -> str | None:
    """Returns an error message, or None when the password was changed."""
    problem = password_problem(new_password, old_password)
    if problem:
        return problem
    with db.session() as s:
        user = s.get(AdminUser, user_id)
        if user is None or not passwords.verify(user.password_hash, old_password):
            return "the current password is wrong"
        user.password_hash = passwords.hash(new_password)
        user.must_change_password = False
        user.password_changed_at = utcnow()
    return None
