"""Tensor-parallel linear layers.

Column-parallel layers split the output dimension across ranks (no communication); row-parallel
layers split the input dimension and all-reduce the partial sums. Each parameter carries a
`weight_loader(param, loaded, shard_id=None)` that copies this rank's slice of a checkpoint tensor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.distributed.parallel_state import TPContext


def _param(*shape: int) -> nn.Parameter:
    return nn.Parameter(torch.empty(*shape), requires_grad=False)


def _default_loader(param: nn.Parameter, loaded: torch.Tensor) -> None:
    if param.shape != loaded.shape:
        raise ValueError(f"checkpoint tensor shape {tuple(loaded.shape)} != parameter {tuple(param.shape)}")
    param.data.copy_(loaded)


class ReplicatedLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias: bool = False) -> None:
        super().__init__()
        self.weight = _param(out_features, in_features)
        self.weight.weight_loader = lambda p, w, shard_id=None: _default_loader(p, w)
        self.bias = None
        if bias:
            self.bias = _param(out_features)
            self.bias.weight_loader = lambda p, w, shard_id=None: _default_loader(p, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class ColumnParallelLinear(nn.Module):
    """y = x W^T with W split by output rows; `shard_sizes` lists the logical sub-matrices packed
    into this layer (e.g. gate and up), each split across ranks separately."""

    def __init__(self, in_features: int, shard_sizes: list[int], tp: TPContext, bias: bool = False) -> None:
        super().__init__()
        for s in shard_sizes:
            if s % tp.size:
                raise ValueError(f"output size {s} is not divisible by tp_size {tp.size}")
        self.tp = tp
        self.local_sizes = [s // tp.size for s in shard_sizes]
        out_local = sum(self.local_sizes)
        self.weight = _param(out_local, in_features)
        self.weight.weight_loader = self._load
        self.bias = None
        if bias:
            self.bias = _param(out_local)
            self.bias.weight_loader = self._load

    def _load(self, param: nn.Parameter, loaded: torch.Tensor, shard_id: int | None = None) -> None:
        idx = shard_id or 0
        size = self.local_sizes[idx]
        start = sum(self.local_sizes[:idx])
        piece = loaded.narrow(0, self.tp.rank * size, size)
        dst = param.data.narrow(0, start, size)
        if dst.shape != piece.shape:
            raise ValueError(f"checkpoint tensor shape {tuple(loaded.shape)} does not fit {tuple(param.shape)}")
        dst.copy_(piece)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class QKVParallelLinear(ColumnParallelLinear):
    """q, k and v projections packed into one matmul, split across ranks by heads."""

    def __init__(self, hidden_size: int, head_dim: int, num_heads: int, num_kv_heads: int, tp: TPContext,
                 bias: bool = False) -> None:
        if num_heads % tp.size or num_kv_heads % tp.size:
            raise ValueError(f"attention heads ({num_heads} q, {num_kv_heads} kv) must be divisible by "
                             f"tp_size {tp.size}")
        super().__init__(hidden_size, [num_heads * head_dim, num_kv_heads * head_dim, num_kv_heads * head_dim],
                         tp, bias)


class RowParallelLinear(nn.Module):
    """y = x W^T with W split by input columns; partial results are summed across ranks."""

    def __init__(self, in_features: int, out_features: int, tp: TPContext, bias: bool = False) -> None:
        super().__init__()
        if in_features % tp.size:
            raise ValueError(f"input size {in_features} is not divisible by tp_size {tp.size}")
        self.tp = tp
        self.in_local = in_features // tp.size
        self.weight = _param(out_features, self.in_local)
        self.weight.weight_loader = self._load
        self.bias = None
        if bias:
            self.bias = _param(out_features)
            self.bias.weight_loader = lambda p, w, shard_id=None: _default_loader(p, w)

    def _load(self, param: nn.Parameter, loaded: torch.Tensor, shard_id: int | None = None) -> None:
        _default_loader(param, loaded.narrow(1, self.tp.rank * self.in_local, self.in_local))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.tp.all_reduce(F.linear(x, self.weight))
        # The bias is added once, after the reduction, so it is not counted tp_size times.
        return out + self.bias if self.bias is not None else out
