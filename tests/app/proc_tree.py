"""Process-tree helpers for the chaos and shutdown tests: every process a server ever had under it,
its RSS, and the check that none outlives it."""

from __future__ import annotations

import threading
import time

import psutil


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def rss_mb(pid: int) -> float:
    total = 0
    for p in _tree(pid):
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


def _alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def assert_no_orphans(seen: dict[int, psutil.Process], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(list(seen.values())):
        time.sleep(0.1)
    left = _alive(list(seen.values()))
    assert not left, f"orphaned: {[(p.pid, p.cmdline()) for p in left]}"


class TreeWatcher:
    """Remembers every process the server ever had under it (ranks come and go on restarts)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.seen: dict[int, psutil.Process] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for p in _tree(self.pid)[1:]:
                self.seen.setdefault(p.pid, p)
            time.sleep(0.02)

    def stop(self) -> dict[int, psutil.Process]:
        self._stop.set()
        self._thread.join(5)
        return self.seen
