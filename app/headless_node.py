"""`tessera serve --nnodes N --node-rank K` with K > 0: this node's tensor-parallel ranks and no HTTP.

Rank 0 (node 0) serves the API and sends every step's work to all ranks over torch.distributed, so the
other nodes only run their rank processes. This process supervises them:
- ranks that exit with code 0 were told to stop by rank 0 (its server shut down): the node exits 0;
- a rank that fails (a peer node died, or this rank crashed) takes the others down: the node restarts
  its ranks, which rejoin rank 0's restarted engine at `--dist-init-addr`;
- SIGTERM/SIGINT stops the ranks and exits 0.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time

from engine.args import ServerArgs
from engine.ipc import IpcConfig
from engine.rank_launcher import RankProcess, local_ranks

logger = logging.getLogger("tessera")
RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0)


def _stop_all(procs: list[RankProcess], grace_s: float) -> None:
    deadline = time.monotonic() + grace_s
    for p in procs:
        while p.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if p.is_alive():
            p.kill()
        p.join(5)


def run_headless_node(args: ServerArgs) -> int:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    # Ranks other than 0 never touch the ZMQ addresses; they rendezvous at --dist-init-addr.
    payload = json.dumps({"args": args.to_dict(),
                          "ipc": IpcConfig(request_addr="", output_addr="", dist_port=0).to_dict()})
    ranks = list(local_ranks(args))
    attempt = 0
    while not stop.is_set():
        procs = [RankProcess(rank, payload) for rank in ranks]
        logger.info("node %d of %d: ranks %s started; rank 0 at %s serves HTTP", args.node_rank, args.nnodes,
                    ranks, args.dist_init_addr)
        started = time.monotonic()
        while not stop.is_set() and all(p.is_alive() for p in procs):
            time.sleep(0.2)
        if stop.is_set():
            logger.info("node %d: stopping ranks", args.node_rank)
            for p in procs:
                if p.is_alive():
                    p.popen.terminate()
            _stop_all(procs, 10)
            return 0
        _stop_all(procs, 10)  # one rank ended: the others cannot go on without it
        codes = [p.exitcode for p in procs]
        if all(code == 0 for code in codes):
            logger.info("node %d: rank 0 stopped the engine; exiting", args.node_rank)
            return 0
        if time.monotonic() - started > 60:
            attempt = 0  # it ran fine for a while: this failure starts a fresh backoff
        delay = RESTART_BACKOFF_S[min(attempt, len(RESTART_BACKOFF_S) - 1)]
        logger.error("node %d: rank exit codes %s; restarting this node's ranks in %.0fs to rejoin rank 0",
                     args.node_rank, codes, delay)
        attempt += 1
        stop.wait(delay)
    return 0
