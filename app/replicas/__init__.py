"""Data parallelism: `--dp-size N` replicas behind the one API process (see docs/SCALE_OUT.md)."""

from __future__ import annotations

from typing import Any

from app.supervisor import ClientFactory, Supervisor
from engine.args import ServerArgs


def build_supervisor(args: ServerArgs, client_factory: ClientFactory | None = None) -> Any:
    """The plain Supervisor for one replica, a ReplicaSet (same interface) for `--dp-size > 1`."""
    if args.dp_size == 1:
        return Supervisor(args, client_factory)
    from app.replicas.replica_set import ReplicaSet

    return ReplicaSet(args, client_factory)
