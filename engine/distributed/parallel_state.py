"""Tensor-parallel process groups and collectives.

`TPContext` is the one place that knows the rank layout: the tensor group (NCCL on GPU, gloo on
CPU) for activations, and a gloo CPU group for control messages that rank 0 fans out. With
tp_size 1 every collective is a no-op, so models run unchanged in a single process.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass
class TPContext:
    rank: int = 0
    size: int = 1
    cpu_group: Any = None

    @property
    def is_first(self) -> bool:
        return self.rank == 0

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        if self.size > 1:
            dist.all_reduce(x)
        return x

    def all_gather_last_dim(self, x: torch.Tensor) -> torch.Tensor:
        if self.size == 1:
            return x
        parts = [torch.empty_like(x) for _ in range(self.size)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=-1)

    def broadcast_objects(self, objs: list[Any] | None) -> list[Any]:
        """Rank 0's list reaches every rank (control plane, gloo)."""
        if self.size == 1:
            return objs or []
        box = [objs if self.is_first else None]
        dist.broadcast_object_list(box, src=0, group=self.cpu_group)
        return box[0] or []

    def broadcast_tensor(self, x: torch.Tensor) -> torch.Tensor:
        if self.size > 1:
            dist.broadcast(x, src=0)
        return x


def init_tp(rank: int, size: int, device: str, init_addr: str) -> TPContext:
    """Joins the TP group; `init_addr` is host:port of the rendezvous."""
    if size == 1:
        return TPContext()
    backend = "nccl" if device == "cuda" else "gloo"
    # Idle ranks block in broadcast until a request arrives; don't let that time out.
    timeout = datetime.timedelta(days=7)
    dist.init_process_group(backend, init_method=f"tcp://{init_addr}", rank=rank, world_size=size,
                            timeout=timeout)
    cpu_group = dist.new_group(backend="gloo", timeout=timeout) if backend != "gloo" else dist.group.WORLD
    return TPContext(rank=rank, size=size, cpu_group=cpu_group)


def destroy_tp() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
