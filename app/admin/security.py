"""Secrets and hashing: the server secret, API key digests, password hashes, random tokens."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

logger = logging.getLogger(__name__)

API_KEY_PREFIX = "tsk-"
PREFIX_LEN = 8  # "tsk-" plus four random characters: enough to tell keys apart in a list


def _write_private(path: Path, text: str) -> None:
    """Creates the file readable by the owner only (0600) before any secret is written to it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def load_or_create_secret(data_dir: str) -> bytes:
    """The HMAC secret for API key digests, kept in `<data_dir>/secret_key` (never in the DB, so a leaked
    DB alone does not allow offline guessing of keys)."""
    shared = os.environ.get("TESSERA_SECRET_KEY")  # replicas on one database must share it
    if shared:
        if len(shared.strip()) < 32:
            raise RuntimeError("TESSERA_SECRET_KEY is too short to be a server secret (32 characters at least)")
        return shared.strip().encode()
    path = Path(data_dir) / "secret_key"
    if path.exists():
        value = path.read_text().strip()
        if len(value) < 32:
            raise RuntimeError(f"{path} is too short to be a server secret")
        return value.encode()
    value = secrets.token_hex(32)
    _write_private(path, value + "\n")
    logger.info("created server secret at %s", path)
    return value.encode()


def write_private_file(path: Path, text: str) -> None:
    _write_private(path, text)


@dataclass(frozen=True)
class NewApiKey:
    secret: str
    digest: str
    prefix: str
    last_four: str


class KeyHasher:
    """HMAC-SHA256 digests of API key secrets under the server secret."""

    def __init__(self, server_secret: bytes) -> None:
        self._secret = server_secret

    def digest(self, api_key: str) -> str:
        return hmac.new(self._secret, api_key.encode(), hashlib.sha256).hexdigest()

    def generate(self) -> NewApiKey:
        secret = API_KEY_PREFIX + secrets.token_urlsafe(32)
        return NewApiKey(secret=secret, digest=self.digest(secret), prefix=secret[:PREFIX_LEN], last_four=secret[-4:])


class Passwords:
    """argon2id hashing. The default cost is argon2-cffi's recommendation; tests pass a cheap hasher
    (`argon2.PasswordHasher.from_parameters(argon2.profiles.CHEAPEST)`) through AdminContext."""

    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        self._hasher = hasher or PasswordHasher()
        self._dummy: str | None = None

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    def verify_dummy(self, password: str) -> None:
        """Same cost as a real check, for unknown usernames: response time does not reveal them."""
        if self._dummy is None:
            self._dummy = self.hash(secrets.token_hex(8))
        self.verify(self._dummy, password)


def random_password() -> str:
    return secrets.token_urlsafe(15)


def random_token() -> str:
    return secrets.token_urlsafe(32)


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def tokens_equal(a: str | None, b: str | None) -> bool:
    if not a or not b:
        return False
    return hmac.compare_digest(a.encode(), b.encode())


MIN_PASSWORD_LEN = 10


def password_problem(new_password: str, old_password: str | None = None) -> str | None:
    """Why a new admin password is unacceptable, or None."""
    if len(new_password) < MIN_PASSWORD_LEN:
        return f"the new password must have at least {MIN_PASSWORD_LEN} characters"
    if old_password is not None and new_password == old_password:
        return "the new password must differ from the current one"
    if len(new_password) > 256:
        return "the new password is too long (256 characters at most)"
    return None
