"""The exceptions a `lang` program can see: each prints as one line that says what to do."""

from __future__ import annotations


class LangError(Exception):
    """Base class of every error raised by `lang`."""


class ServerError(LangError):
    """The server answered with an error; `message` is the server's own text."""

    def __init__(self, status: int, message: str, url: str = "") -> None:
        super().__init__(f"server error {status} from {url}: {message}" if url else f"server error {status}: {message}")
        self.status = status
        self.message = message
        self.url = url


class ServerUnreachable(LangError):
    """No HTTP answer at all (connection refused, DNS, timeout)."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach the server at {url}: {reason}")
        self.url = url
        self.reason = reason
