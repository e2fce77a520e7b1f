"""Tensor-parallel linear layers.

Column-parallel layers split the output dimension across ranks (no communication); row-parallel
layers split the input dimension and all-reduce the partial sums. What a layer stores and how it
multiplies is its `quant_method` (engine/quant/base.py: unquantized `weight`, AWQ `qweight`/`qzeros`/
`scales`, ...); the layer owns the TP slicing. Each parameter carries a
`weight_loader(param, loaded, shard_id=None)` that copies this rank's slice of a checkpoint tensor,
reading the parameter's `ShardLayout` to know which axes are split and how they are packed.
"""

from __future__ import annotations

import torch
from torch import nn

from engine.distributed.parallel_state import TPContext
from engine.quant.base import ShardLayout, add_param, create_linear_method


def _default_loader(param: nn.Parameter, loaded: torch.Tensor) -> None:
    if param.shape != loaded.shape:
        raise ValueError(f"checkpoint tensor shape {tuple(loaded.shape)} != parameter {tuple(param.shape)}")
    param.data.copy_(loaded)


def _narrow(loaded: torch.Tensor, dim: int, start: int, size: int) -> torch.Tensor:
    if loaded.dim() <= dim or loaded.shape[dim] < start + size:
        raise ValueError(f"checkpoint tensor shape {tuple(loaded.shape)} is too small for rows "
                         f"{start}..{start + size} of dim {dim}")
    return loaded.narrow(dim, start, size)


class _LinearBase(nn.Module):
    """Creates the weights through the quant method and a bias [out_local] (never quantized)."""

    def __init__(self, in_local: int, out_local_sizes: list[int], bias: bool, quant_config,
                 checkpoint_names: list[str]) -> None:
        super().__init__()
        self.quant_method = create_linear_method(quant_config, checkpoint_names)
        self.quant_method.create_weights(self, in_local, out_local_sizes, torch.get_default_dtype())
        if bias:
            add_param(self, "bias", torch.empty(sum(out_local_sizes)), ShardLayout(output_dim=0))
        else:
            self.bias = None
        for param in self.parameters(recurse=False):
            param.weight_loader = self._load
        # A method whose checkpoint tensors come in several shapes wraps these loaders (FP8 scales).
        self.quant_method.attach_loaders(self)

    def _load(self, param: nn.Parameter, loaded: torch.Tensor, shard_id: int | None = None) -> None:
        _default_loader(param, loaded)


class ReplicatedLinear(_LinearBase):
    def __init__(self, in_features: int, out_features: int, bias: bool = False, quant_config=None,
                 checkpoint_names: list[str] | None = None) -> None:
        super().__init__(in_features, [out_features], bias, quant_config, checkpoint_names or [])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.quant_method.apply(self, x, self.bias)


class ColumnParallelLinear(_LinearBase):
    """y = x W^T with W split by output rows; `shard_sizes` lists the logical sub-matrices packed
    into this layer (e.g. gate and up), each split across ranks separately."""

    def __init__(self, in_features: int, shard_sizes: list[int], tp: TPContext, bias: bool = False,
                 quant_config=None, checkpoint_names: list[str] | None = None) -> None:
        for s in shard_sizes:
            if s % tp.size:
                raise ValueError(f"output size {s} is not divisible by tp_size {tp.size}")
        self.tp = tp
        self.local_sizes = [s // tp.size for s in shard_sizes]
        super().__init__(in_features, self.local_sizes, bias, quant_config, checkpoint_names or [])

    def _load(self, param: nn.Parameter, loaded: torch.Tensor, shard_id: int | None = None) -> None:
        layout: ShardLayout = param.shard_layout
        idx = shard_id or 0
        if layout.per_shard:  # one entry per packed sub-matrix, not split across ranks
            param.data[idx].copy_(loaded.reshape(param.data[idx].shape))
            return
        if layout.output_dim is None:
            _default_loader(param, loaded)
            return
        dim, pack = layout.output_dim, layout.output_pack
        size = self.local_sizes[idx] // pack
        start = sum(self.local_sizes[:idx]) // pack
        piece = _narrow(loaded, dim, self.tp.rank * size, size)
        dst = param.data.narrow(dim, start, size)
        if dst.shape != piece.shape:
            raise ValueError(f"checkpoint tensor shape {tuple(loaded.shape)} does not fit {tuple(param.shape)}")
        dst.copy_(piece)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.quant_method.apply(self, x, self.bias)


class QKVParallelLinear(ColumnParallelLinear):
    """q, k and v projections packed into one matmul, split across ranks by heads."""

    def __init__(self, hidden_size: int, head_dim: int, num_heads: int, num_kv_heads: int, tp: TPContext,
                 bias: bool = False, quant_config=None, checkpoint_names: list[str] | None = None) -> None:
        if num_heads % tp.size or num_kv_heads % tp.size:
            raise ValueError(f"attention heads ({num_heads} q, {num_kv_heads} kv) must be divisible by "
                             f"tp_size {tp.size}")
        super().__init__(hidden_size, [num_heads * head_dim, num_kv_heads * head_dim, num_kv_heads * head_dim],
                         tp, bias, quant_config, checkpoint_names)


class RowParallelLinear(_LinearBase):
    """y = x W^T with W split by input columns; partial results are summed across ranks."""

    def __init__(self, in_features: int, out_features: int, tp: TPContext, bias: bool = False,
                 quant_config=None, checkpoint_names: list[str] | None = None) -> None:
        if in_features % tp.size:
            raise ValueError(f"input size {in_features} is not divisible by tp_size {tp.size}")
        self.tp = tp
        self.in_local = in_features // tp.size
        super().__init__(self.in_local, [out_features], bias, quant_config, checkpoint_names or [])

    def _load(self, param: nn.Parameter, loaded: torch.Tensor, shard_id: int | None = None) -> None:
        layout: ShardLayout = param.shard_layout
        if layout.input_dim is None:  # bias, per-tensor scales: whole on every rank
            _default_loader(param, loaded)
            return
        size = self.in_local // layout.input_block
        _default_loader(param, _narrow(loaded, layout.input_dim, self.tp.rank * size, size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.tp.all_reduce(self.quant_method.apply(self, x))
        # The bias is added once, after the reduction, so it is not counted tp_size times.
        return out + self.bias if self.bias is not None else out
