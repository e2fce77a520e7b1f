"""Starting engine ranks as child interpreters (`python -m engine.rank_process <rank>`), not via
multiprocessing's spawn, so callers of `Engine` need no `if __name__ == "__main__"` guard."""

from __future__ import annotations

import os
import subprocess
import sys

from engine.args import ServerArgs
from engine.parent_watch import PARENT_PID_ENV


def local_ranks(args: ServerArgs) -> range:
    per_node = args.tp_size // args.nnodes
    return range(args.node_rank * per_node, (args.node_rank + 1) * per_node)


def rank_env(payload: str) -> dict[str, str]:
    """The environment of a rank's child interpreter: ours, plus its payload, our pid (parent_watch), the
    repository on PYTHONPATH and a pinned MKL code path."""
    env = {**os.environ, "TESSERA_RANK_PAYLOAD": payload, PARENT_PID_ENV: str(os.getpid())}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])
    # MKL's conditional numerical reproducibility, pinned to its AVX2 code path: on AVX-512 hosts its default
    # sgemm rounds a row differently by the row's place in a 5-7 or 9-11 row batch, so two requests with
    # the same prompt prefix in one CPU step got different logprobs (SGLang select compares them for
    # equality). Measured no slower on the CPU path's shapes. STRICT too: on a Sapphire Rapids-class Xeon plain
    # AVX2 still rounded rows 7-9 / 13 of a batch differently (2026-12-06; AVX2,STRICT: none, and no slower).
    # A value the caller set wins.
    env.setdefault("MKL_CBWR", "AVX2,STRICT")
    return env


class RankProcess:
    """One engine rank as a child interpreter: `python -m engine.rank_process <rank>`."""

    def __init__(self, rank: int, payload: str) -> None:
        self.name = f"tessera-rank{rank}"
        env = rank_env(payload)
        # Own session, so its own process group: a terminal's Ctrl-C (sent to the foreground group)
        # reaches only the API process, which drains and stops the ranks; they die with it (parent_watch).
        # PR_SET_PDEATHSIG follows the spawning *thread*: spawn from a thread that lives as long as the client.
        self.popen = subprocess.Popen([sys.executable, "-m", "engine.rank_process", str(rank)], env=env,
                                      stdin=subprocess.DEVNULL, start_new_session=True)
        self.pid = self.popen.pid

    def is_alive(self) -> bool:
        return self.popen.poll() is None

    @property
    def exitcode(self) -> int | None:
        return self.popen.poll()

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()

    def terminate(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()

    def join(self, timeout: float | None = None) -> None:
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
