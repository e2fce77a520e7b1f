"""Engine ranks die with the process that started them, on every path.

- `PR_SET_PDEATHSIG` (Linux, via prctl): the kernel sends SIGKILL to the rank when its parent exits,
  however it exits (SIGKILL included).
- A watchdog thread polls the parent pid as a second line (non-Linux, or a parent that died before
  the prctl call took effect): when the rank has been re-parented, it exits at once.
- SIGINT is ignored: ranks run in their own process group (see rank_launcher) so a terminal's Ctrl-C
  reaches only the API process, which drains and then stops the ranks itself.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import threading
import time

logger = logging.getLogger(__name__)

PARENT_PID_ENV = "TESSERA_PARENT_PID"
PR_SET_PDEATHSIG = 1
POLL_S = 0.5


def _set_pdeathsig(sig: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch(parent_pid: int) -> None:
    while True:
        time.sleep(POLL_S)
        if os.getppid() != parent_pid:
            os._exit(1)  # no cleanup: the supervisor that would want it is gone


def die_with_parent(parent_pid: int | None = None) -> None:
    """Call first thing in a rank process. `parent_pid` defaults to $TESSERA_PARENT_PID (else getppid)."""
    if parent_pid is None:
        env = os.environ.get(PARENT_PID_ENV)
        parent_pid = int(env) if env and env.isdigit() else os.getppid()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _set_pdeathsig(signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before prctl: nobody would ever stop us
        os._exit(1)
    threading.Thread(target=_watch, args=(parent_pid,), name="parent-watch", daemon=True).start()
