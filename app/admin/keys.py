"""API key lifecycle: create (secret shown once), list, revoke, rotate with a grace period."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from app.admin.security import KeyHasher
from app.db.clock import iso, to_naive_utc, utcnow
from app.db.database import Database
from app.db.models import ApiKey

DEFAULT_ROTATE_GRACE_S = 24 * 3600
MAX_ROTATE_GRACE_S = 30 * 24 * 3600


class KeyInputError(ValueError):
    """A field of a key request is invalid; the message names it."""


@dataclass(frozen=True)
class KeySpec:
    name: str
    rpm: int | None = None
    tpm: int | None = None
    max_concurrency: int | None = None
    models: list[str] | None = None
    expires_at: datetime | None = None


def parse_expiry(value: str | datetime | None) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError as exc:
            raise KeyInputError("expires_at must be ISO 8601, e.g. 2030-01-31T00:00:00Z") from exc
    return to_naive_utc(value)


MAX_LIMIT = 10**12  # per key: requests / tokens per minute, requests in flight


def build_spec(name: Any, rpm: Any = None, tpm: Any = None, max_concurrency: Any = None, models: Any = None,
               expires_at: Any = None) -> KeySpec:
    name = (name or "").strip() if isinstance(name, str) else name
    if not isinstance(name, str) or not 1 <= len(name) <= 128:
        raise KeyInputError("name must be 1 to 128 characters")
    limits: dict[str, int | None] = {}
    for field, value in (("rpm", rpm), ("tpm", tpm), ("max_concurrency", max_concurrency)):
        if value is None or value == "":
            limits[field] = None
            continue
        if isinstance(value, bool):
            raise KeyInputError(f"{field} must be a positive whole number or null")
        try:
            number = int(value)
        except (TypeError, ValueError) as exc:
            raise KeyInputError(f"{field} must be a positive whole number or null") from exc
        if number < 1 or str(value).strip() not in (str(number), f"{number}.0"):
            raise KeyInputError(f"{field} must be a positive whole number or null")
        if number > MAX_LIMIT:  # SQLite's INTEGER is 64-bit; far past any real rate
            raise KeyInputError(f"{field} must be at most {MAX_LIMIT} (null: unlimited)")
        limits[field] = number
    if isinstance(models, str):
        models = [m.strip() for m in models.replace("\n", ",").split(",") if m.strip()] or None
    if models is not None:
        if not isinstance(models, list) or not models or not all(isinstance(m, str) and m for m in models):
            raise KeyInputError("models must be null (all models) or a non-empty list of model names")
    expiry = parse_expiry(expires_at)
    if expiry is not None and expiry <= utcnow():
        raise KeyInputError("expires_at must be in the future")
    return KeySpec(name=name, models=models, expires_at=expiry, **limits)


def key_status(k: ApiKey, now: datetime | None = None) -> str:
    now = now or utcnow()
    if k.revoked_at is not None:
        return "revoked"
    if k.expires_at is not None and k.expires_at <= now:
        return "expired"
    return "active"


def key_dict(k: ApiKey) -> dict[str, Any]:
    """The listing form of a key: never the secret, never the digest."""
    now = utcnow()
    grace = k.prev_valid_until if k.prev_valid_until and k.prev_valid_until > now else None
    return {
        "id": k.id, "name": k.name, "prefix": k.prefix, "last_four": k.last_four,
        "display": f"{k.prefix}…{k.last_four}", "status": key_status(k, now),
        "models": k.models, "rpm": k.rpm, "tpm": k.tpm, "max_concurrency": k.max_concurrency,
        "expires_at": iso(k.expires_at), "revoked_at": iso(k.revoked_at), "created_at": iso(k.created_at),
        "rotated_at": iso(k.rotated_at), "previous_valid_until": iso(grace), "last_used_at": iso(k.last_used_at),
        "created_by": k.created_by,
    }


class KeyService:
    def __init__(self, db: Database, hasher: KeyHasher) -> None:
        self._db = db
        self._hasher = hasher

    def create(self, spec: KeySpec, created_by: str) -> tuple[dict[str, Any], str]:
        """Returns (listing dict, secret). The secret exists only in this return value."""
        new = self._hasher.generate()
        with self._db.session() as s:
            k = ApiKey(name=spec.name, key_hash=new.digest, prefix=new.prefix, last_four=new.last_four,
                       models=spec.models, rpm=spec.rpm, tpm=spec.tpm, max_concurrency=spec.max_concurrency,
                       expires_at=spec.expires_at, created_at=utcnow(), created_by=created_by)
            s.add(k)
            s.flush()
            return key_dict(k), new.secret

    def list(self) -> list[dict[str, Any]]:
        with self._db.session() as s:
            return [key_dict(k) for k in s.scalars(select(ApiKey).order_by(ApiKey.id.desc()))]

    def get(self, key_id: int) -> dict[str, Any] | None:
        with self._db.session() as s:
            k = s.get(ApiKey, key_id)
            return key_dict(k) if k else None

    def names(self) -> dict[int, str]:
        with self._db.session() as s:
            return {row[0]: row[1] for row in s.execute(select(ApiKey.id, ApiKey.name))}

    def revoke(self, key_id: int) -> dict[str, Any] | None:
        with self._db.session() as s:
            k = s.get(ApiKey, key_id)
            if k is None:
                return None
            if k.revoked_at is None:
                k.revoked_at = utcnow()
                k.prev_valid_until = None  # a revoked key's rotated-out secret must stop too
            return key_dict(k)

    def rotate(self, key_id: int, grace_s: int = DEFAULT_ROTATE_GRACE_S) -> tuple[dict[str, Any], str] | None:
        """New secret for the same key (same limits and usage history); the old secret keeps working for
        `grace_s` seconds (0: stops at once)."""
        if not 0 <= grace_s <= MAX_ROTATE_GRACE_S:
            raise KeyInputError(f"grace_seconds must be between 0 and {MAX_ROTATE_GRACE_S}")
        new = self._hasher.generate()
        with self._db.session() as s:
            k = s.get(ApiKey, key_id)
            if k is None:
                return None
            if key_status(k) != "active":
                raise KeyInputError(f"only active keys can be rotated (this one is {key_status(k)})")
            now = utcnow()
            k.prev_key_hash = k.key_hash if grace_s > 0 else None
            k.prev_valid_until = now + timedelta(seconds=grace_s) if grace_s > 0 else None
            k.key_hash, k.prefix, k.last_four = new.digest, new.prefix, new.last_four
            k.rotated_at = now
            return key_dict(k), new.secret
