"""The seam where authentication and rate limits plug into the routes.

Routes call `admit` before queueing work and `settle` exactly once when it ends. The default gate only
checks the static `--api-key` (Bearer); the admin console's KeyGate (app.admin.gate) has the same
two methods and can be passed to `create_app(gate=...)` unchanged. Errors a gate raises must carry
`status`, `message`, `code` and `headers` (see `app.errors.as_api_error`).
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from app.errors import APIError


@runtime_checkable
class RequestGate(Protocol):
    async def admit(self, authorization: str | None, model: str, reserve_tokens: int) -> Any:
        """Returns an admission (with optional `headers` for the response) or raises a refusal."""
        ...

    async def settle(self, admission: Any, prompt_tokens: int, completion_tokens: int, cached_tokens: int,
                     latency_s: float | None, status_code: int) -> None:
        ...


@dataclass
class StaticAdmission:
    model: str
    reserve_tokens: int
    started_at: float = field(default_factory=time.monotonic)
    headers: dict[str, str] = field(default_factory=dict)


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


class StaticKeyGate:
    """Admits everything when no key is configured; otherwise the Bearer token must equal it.

    The key is read through a callable so a restart with new ServerArgs takes effect at once.
    """

    def __init__(self, api_key: Callable[[], str | None]) -> None:
        self._api_key = api_key

    def check(self, authorization: str | None) -> None:
        expected = self._api_key()
        if not expected:
            return
        given = bearer_token(authorization)
        if given is None or not hmac.compare_digest(given.encode(), expected.encode()):
            raise APIError(401, "Invalid API key: pass it as 'Authorization: Bearer <key>'.",
                           code="invalid_api_key", error_type="authentication_error")

    async def authenticate(self, authorization: str | None) -> None:
        self.check(authorization)

    async def admit(self, authorization: str | None, model: str, reserve_tokens: int) -> StaticAdmission:
        self.check(authorization)
        return StaticAdmission(model, reserve_tokens)

    async def settle(self, admission: Any, prompt_tokens: int, completion_tokens: int, cached_tokens: int,
                     latency_s: float | None, status_code: int) -> None:
        return None


def estimate_prompt_tokens(text_chars: int) -> int:
    """OpenAI's rate-limit estimate (characters / 4) used before the prompt is tokenized."""
    return text_chars // 4 + 1


# What a chat request without max_tokens holds against its key's TPM limit besides its prompt (it may run to
# the end of the context; holding all of that would refuse most chats on a TPM-limited key). It settles to
# the real count when the request ends. Documented in docs/api-keys.md.
UNBOUNDED_RESERVE_TOKENS = 256
