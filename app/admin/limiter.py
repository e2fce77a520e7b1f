"""Per-key RPM / TPM / concurrency limits: in-memory 60 s sliding windows.

All methods are synchronous and never await, so one call is atomic on the event loop; `KeyGate` still
wraps them in an asyncio lock so the check-then-record can never interleave if that changes. The state
lives in this object (owned by the gate), not in module globals; it is per process, like the engine.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

WINDOW_S = 60.0


@dataclass(frozen=True)
class Limits:
    rpm: int | None = None
    tpm: int | None = None
    max_concurrency: int | None = None


@dataclass
class _TokenEntry:
    ts: float
    tokens: int


@dataclass
class _KeyWindow:
    requests: deque[float] = field(default_factory=deque)
    tokens: deque[_TokenEntry] = field(default_factory=deque)
    tokens_sum: int = 0
    in_flight: int = 0

    def expire(self, now: float) -> None:
        while self.requests and self.requests[0] <= now - WINDOW_S:
            self.requests.popleft()
        while self.tokens and self.tokens[0].ts <= now - WINDOW_S:
            self.tokens_sum -= self.tokens.popleft().tokens


@dataclass
class Ticket:
    """What an admitted request holds until it settles."""

    key_id: int
    entry: _TokenEntry | None
    holds_slot: bool
    done: bool = False


@dataclass(frozen=True)
class Decision:
    ticket: Ticket | None  # None when refused
    headers: dict[str, str]
    reason: str | None = None  # requests | tokens | concurrency | too_large (can never fit: do not retry)
    message: str | None = None


def format_reset(seconds: float) -> str:
    """OpenAI's duration style for `x-ratelimit-reset-*`: `20ms`, `1s`, `6m0s`, `1m30.5s`."""
    seconds = max(0.0, seconds)
    if seconds < 1.0:
        return f"{math.ceil(seconds * 1000)}ms"
    minutes, secs = divmod(seconds, 60.0)
    secs_text = f"{secs:.3f}".rstrip("0").rstrip(".")
    return f"{int(minutes)}m{secs_text}s" if minutes else f"{secs_text}s"


class RateLimiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._windows: dict[int, _KeyWindow] = {}

    def _window(self, key_id: int, now: float) -> _KeyWindow:
        win = self._windows.setdefault(key_id, _KeyWindow())
        win.expire(now)
        return win

    def _headers(self, win: _KeyWindow, limits: Limits, now: float) -> dict[str, str]:
        h: dict[str, str] = {}
        if limits.rpm is not None:
            h["x-ratelimit-limit-requests"] = str(limits.rpm)
            h["x-ratelimit-remaining-requests"] = str(max(0, limits.rpm - len(win.requests)))
            # Time until the window is empty again, i.e. the full limit is back.
            h["x-ratelimit-reset-requests"] = format_reset(win.requests[-1] + WINDOW_S - now if win.requests else 0)
        if limits.tpm is not None:
            h["x-ratelimit-limit-tokens"] = str(limits.tpm)
            h["x-ratelimit-remaining-tokens"] = str(max(0, limits.tpm - win.tokens_sum))
            h["x-ratelimit-reset-tokens"] = format_reset(win.tokens[-1].ts + WINDOW_S - now if win.tokens else 0)
        return h

    def try_acquire(self, key_id: int, limits: Limits, reserve_tokens: int) -> Decision:
        now = self._clock()
        win = self._window(key_id, now)
        reserve_tokens = max(0, int(reserve_tokens))
        refusal: tuple[str, str, float] | None = None
        if limits.rpm is not None and len(win.requests) >= limits.rpm:
            wait = win.requests[len(win.requests) - limits.rpm] + WINDOW_S - now if limits.rpm else WINDOW_S
            refusal = ("requests", f"Rate limit reached for requests per min (RPM): limit {limits.rpm}", wait)
        elif limits.tpm is not None and win.tokens_sum + reserve_tokens > limits.tpm:
            if reserve_tokens > limits.tpm:
                refusal = ("too_large", f"Request too large: {reserve_tokens} tokens requested (prompt + max "
                                        f"tokens), more than this key's tokens per min (TPM) limit {limits.tpm}. "
                                        "Reduce the prompt or max_tokens.", 0.0)
            else:
                # Wait until enough of the oldest reservations leave the window to fit this one.
                need, wait = win.tokens_sum + reserve_tokens - limits.tpm, 0.0
                for e in win.tokens:
                    need -= e.tokens
                    wait = e.ts + WINDOW_S - now
                    if need <= 0:
                        break
                refusal = ("tokens", f"Rate limit reached for tokens per min (TPM): limit {limits.tpm}, "
                                     f"used {win.tokens_sum}, requested {reserve_tokens}", wait)
        elif limits.max_concurrency is not None and win.in_flight >= limits.max_concurrency:
            refusal = ("concurrency", f"Too many concurrent requests: limit {limits.max_concurrency}", 1.0)
        if refusal is not None:
            reason, message, wait = refusal
            headers = self._headers(win, limits, now)
            if reason != "too_large":  # waiting never helps a request larger than the limit
                headers["retry-after"] = str(max(1, math.ceil(wait)))
            return Decision(ticket=None, headers=headers, reason=reason, message=message)
        win.requests.append(now)
        entry = _TokenEntry(now, reserve_tokens)
        win.tokens.append(entry)
        win.tokens_sum += reserve_tokens
        win.in_flight += 1
        return Decision(ticket=Ticket(key_id, entry, holds_slot=True), headers=self._headers(win, limits, now))

    def settle(self, ticket: Ticket, actual_tokens: int) -> None:
        """Replaces the reservation with the real count and frees the concurrency slot (idempotent)."""
        if ticket.done:
            return
        ticket.done = True
        win = self._windows.get(ticket.key_id)
        if win is None:
            return
        if ticket.holds_slot:
            win.in_flight = max(0, win.in_flight - 1)
        now = self._clock()
        win.expire(now)
        entry = ticket.entry
        # Entries leave the window in time order, so one younger than the window is still in it; an
        # expired one no longer counts anyway.
        if entry is not None and entry.ts > now - WINDOW_S:
            win.tokens_sum += max(0, int(actual_tokens)) - entry.tokens
            entry.tokens = max(0, int(actual_tokens))

    def usage(self, key_id: int) -> dict[str, int]:
        """Current window state (for the keys page and tests)."""
        win = self._window(key_id, self._clock())
        return {"requests": len(win.requests), "tokens": win.tokens_sum, "in_flight": win.in_flight}
