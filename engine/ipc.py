"""Addresses the client and the rank processes share (ZMQ ipc paths, torch.distributed port)."""

from __future__ import annotations

import socket
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class IpcConfig:
    request_addr: str  # client PUSH (bind) -> rank 0 PULL (connect)
    output_addr: str  # rank 0 PUSH (connect) -> client PULL (bind)
    dist_port: int  # torch.distributed rendezvous on 127.0.0.1 (single node)

    def to_dict(self) -> dict:
        return asdict(self)


def find_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
