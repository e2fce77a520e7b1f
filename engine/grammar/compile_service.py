"""Grammar compilation off the scheduler thread: a cache keyed by (kind, spec), failures included,
and a few daemon worker threads. The scheduler only ever polls futures, so a slow compile never
stalls the running batch; a compile that outlives its request's timeout keeps running and its
result still lands in the cache for the next request with the same spec.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

logger = logging.getLogger(__name__)

# Test hook: "SECONDS:SUBSTRING" delays compiles of specs containing SUBSTRING (a fake slow compiler).
DELAY_ENV = "TESSERA_TEST_GRAMMAR_COMPILE_DELAY"
CACHE_ENTRIES = 1024


class CompileService:
    def __init__(self, make_backend: Callable[[], Any], num_workers: int = 2) -> None:
        self._make_backend = make_backend
        self._backend: Any = None
        self._backend_error: BaseException | None = None
        self._backend_lock = threading.Lock()
        self._cache: OrderedDict[tuple[str, str], Future] = OrderedDict()
        self._jobs: queue.Queue[tuple[tuple[str, str], Future]] = queue.Queue()
        self._delay = _parse_delay(os.environ.get(DELAY_ENV))
        self.num_compiles = 0
        self.num_cache_hits = 0
        self.compile_seconds: list[float] = []
        for i in range(max(1, num_workers)):
            threading.Thread(target=self._work, name=f"grammar-compile-{i}", daemon=True).start()

    @property
    def built_backend(self) -> Any:
        """The backend if it was built, else None (never builds it)."""
        return self._backend

    @property
    def backend(self) -> Any:
        """Built on first use (a 128K vocabulary takes about a second); raises if unavailable."""
        with self._backend_lock:
            if self._backend is None and self._backend_error is None:
                try:
                    self._backend = self._make_backend()
                except BaseException as exc:  # cached: every later request gets the same error
                    self._backend_error = exc
            if self._backend_error is not None:
                raise self._backend_error
            return self._backend

    def prepare(self) -> None:
        """Builds the backend now; a failure is kept and reported to constrained requests."""
        try:
            _ = self.backend
        except BaseException as exc:
            logger.warning("constrained decoding unavailable: %s", exc)

    def submit(self, kind: str, spec: str) -> Future:
        key = (kind, spec)
        fut = self._cache.get(key)
        if fut is not None:
            self._cache.move_to_end(key)
            self.num_cache_hits += 1
            return fut
        fut = Future()
        self._cache[key] = fut
        while len(self._cache) > CACHE_ENTRIES:
            old_key, old = next(iter(self._cache.items()))
            if not old.done():
                break  # never drop a pending compile: a waiting request holds it
            del self._cache[old_key]
        self._jobs.put((key, fut))
        return fut

    def _work(self) -> None:
        while True:
            (kind, spec), fut = self._jobs.get()
            try:
                backend = self.backend  # built once; not part of any compile's time
                start = time.perf_counter()
                if self._delay and self._delay[1] in spec:
                    time.sleep(self._delay[0])
                result = backend.compile(kind, spec)
            except BaseException as exc:
                fut.set_exception(exc)
                continue
            fut.set_result(result)
            self.num_compiles += 1
            self.compile_seconds.append(time.perf_counter() - start)
            del self.compile_seconds[:-1000]


def _parse_delay(raw: str | None) -> tuple[float, str] | None:
    if not raw:
        return None
    seconds, _, marker = raw.partition(":")
    return float(seconds), marker
