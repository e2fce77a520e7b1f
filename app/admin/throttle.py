"""Failed-login throttling, per client IP and per username.

After `max_failures` failures inside `window_s`, further attempts (even with the right password) are
refused for a lockout that doubles with each extra failure, capped at `max_lockout_s`. Counting per
username stops a distributed guess at the admin password; counting per IP stops one client trying many
names. In memory per process: a restart clears it, which only an operator can trigger.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class _Failures:
    times: deque[float] = field(default_factory=deque)
    locked_until: float = 0.0


class LoginThrottle:
    def __init__(self, *, max_failures: int = 5, window_s: float = 900.0, base_lockout_s: float = 30.0,
                 max_lockout_s: float = 900.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.base_lockout_s = base_lockout_s
        self.max_lockout_s = max_lockout_s
        self._clock = clock
        self._lock = threading.Lock()  # login handlers run in FastAPI's thread pool
        self._state: dict[str, _Failures] = {}

    @staticmethod
    def _keys(ip: str | None, username: str) -> list[str]:
        return [f"ip:{ip or '?'}", f"user:{username.lower()}"]

    def retry_after(self, ip: str | None, username: str) -> int:
        """Seconds until this client may try again; 0 when it may try now."""
        now = self._clock()
        with self._lock:
            wait = max((self._state[k].locked_until - now for k in self._keys(ip, username) if k in self._state),
                       default=0.0)
        return math.ceil(wait) if wait > 0 else 0

    def failure(self, ip: str | None, username: str) -> None:
        now = self._clock()
        with self._lock:
            for k in self._keys(ip, username):
                st = self._state.setdefault(k, _Failures())
                while st.times and st.times[0] <= now - self.window_s:
                    st.times.popleft()
                st.times.append(now)
                extra = len(st.times) - self.max_failures
                if extra >= 0:
                    st.locked_until = now + min(self.max_lockout_s, self.base_lockout_s * (2**extra))
            if len(self._state) > 10_000:  # bound memory under a spray of made-up names
                for k in [k for k, v in self._state.items() if v.locked_until < now][:5_000]:
                    del self._state[k]

    def success(self, ip: str | None, username: str) -> None:
        with self._lock:
            for k in self._keys(ip, username):
                self._state.pop(k, None)
