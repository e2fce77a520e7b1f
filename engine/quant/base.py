"""Per-linear quantization methods: how one linear layer's weights are created, loaded, post-processed and
applied. The layers in engine/layers/linear.py own TP sharding; a method only says, per parameter, which
dims are the output and input axes (`ShardLayout`), and the layer's weight_loader slices accordingly.

How to add a method (e.g. FP8):
1. In engine/quant/<name>.py write a `QuantConfig` subclass (engine/quant/config.py): `from_checkpoint`
   parses config.json's `quantization_config`, `from_flag` handles `--quantization <name>` on an
   unquantized checkpoint (e.g. quantize at load), `check_model` validates shapes against TP,
   `linear_method(checkpoint_names)` returns the method (or `UnquantizedLinearMethod()` for skipped
   modules). Register the family in `QUANT_FAMILIES` (and checkpoint spellings in `CHECKPOINT_METHODS`).
2. Write a `LinearMethod` subclass:
   - `create_weights(layer, in_features, out_features, dtype)`: register this rank's parameters on the
     layer under the checkpoint's tensor names (`qweight`, `weight_scale`, ...) with `add_param`, giving each
     a `ShardLayout`: `output_dim`/`input_dim` (None = not split on that axis), `output_pack` (checkpoint
     elements per stored element along the output axis, 8 for int4 in int32), `input_block` (input
     features per row along the input axis, the group size for group scales), `per_shard` (one entry per
     packed sub-matrix, e.g. a per-tensor scale each for q, k and v: stored at index shard_id of dim 0).
     `in_features` is the per-rank input size; `out_features` lists the per-rank output size of every
     packed sub-matrix (q, k, v or gate, up), one entry for an ordinary layer.
   - `attach_loaders(layer)` (optional): wrap the layer's `weight_loader`s once they are set, for a
     checkpoint tensor that comes in more than one shape (FP8 scales: scalar or per-channel).
   - `process_weights_after_loading(layer)`: repack/convert once after all tensors loaded (also after
     dummy fill); weights are on the device by then.
   - `apply(layer, x, bias)`: y = x W^T (+ bias) for x [T, in_features] -> [T, sum(out_features)]. A
     row-parallel layer calls it with bias=None and adds its bias after the all-reduce.
   - `supports_fused_gemv`: leave False unless the layer keeps a plain model-dtype `.weight` [out, in], an
     FP8 `.weight` with `.weight_scale` [out], or AWQ `.qweight` / `.qzeros` / `.scales` (the batch-1 fused
     GEMV path in engine/models/llama.py, `_row_gemv`, reads them directly).
3. Dummy weights (`--load-format dummy`): integer parameters get random bits, float ones (float8 included,
   drawn in fp32) uniform(-0.02, 0.02); give a parameter whose range that is wrong (scales) a `dummy_range`
   in its ShardLayout. `process_weights_after_loading` runs after the dummy fill too.
4. Tests: build a tiny checkpoint in your format from the tiny HF models (see tests/fixtures/awq_checkpoint.py
   and tests/engine/test_awq_engine.py) and compare with HF transformers on the dequantized weights.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ShardLayout:
    """How a stored parameter maps onto the logical [out, in] matrix, for TP slicing and packed shards."""

    output_dim: int | None = None
    input_dim: int | None = None
    output_pack: int = 1
    input_block: int = 1
    per_shard: bool = False
    dummy_range: tuple[float, float] | None = None


def add_param(layer: nn.Module, name: str, tensor: torch.Tensor, layout: ShardLayout) -> nn.Parameter:
    param = nn.Parameter(tensor, requires_grad=False)
    param.shard_layout = layout
    layer.register_parameter(name, param)
    return param


class LinearMethod(ABC):
    supports_fused_gemv: bool = False

    @abstractmethod
    def create_weights(self, layer: nn.Module, in_features: int, out_features: list[int],
                       dtype: torch.dtype) -> None: ...

    def attach_loaders(self, layer: nn.Module) -> None:
        """Called once the layer has set every parameter's `weight_loader` (its TP slicing): a method
        may wrap them, e.g. to accept a checkpoint tensor in more than one shape. Default: as set."""
        return None

    def process_weights_after_loading(self, layer: nn.Module) -> None:
        return None

    @classmethod
    def finish_loading(cls, layers: list[nn.Module]) -> None:
        """Called once per method class after every layer's `process_weights_after_loading`, with all the
        layers of this class: for decisions that need the whole model (e.g. memory for extra copies)."""
        return None

    @abstractmethod
    def apply(self, layer: nn.Module, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor: ...


class UnquantizedLinearMethod(LinearMethod):
    """A plain `weight` [out, in] in the model dtype; `F.linear` (cuBLAS), exactly today's path."""

    supports_fused_gemv = True

    def create_weights(self, layer: nn.Module, in_features: int, out_features: list[int],
                       dtype: torch.dtype) -> None:
        add_param(layer, "weight", torch.empty(sum(out_features), in_features, dtype=dtype),
                  ShardLayout(output_dim=0, input_dim=1))

    def apply(self, layer: nn.Module, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        return F.linear(x, layer.weight, bias)


def create_linear_method(quant_config, checkpoint_names: list[str]) -> LinearMethod:
    """The method for one linear layer; `quant_config` None means unquantized."""
    if quant_config is None:
        return UnquantizedLinearMethod()
    return quant_config.linear_method(checkpoint_names)


def is_quantized(module: nn.Module) -> bool:
    """True when any linear layer in `module` runs a method other than the plain unquantized one."""
    return any(not isinstance(m.quant_method, UnquantizedLinearMethod)
               for m in module.modules() if hasattr(m, "quant_method"))


@torch.no_grad()
def process_weights_after_loading(model: nn.Module) -> None:
    by_class: dict[type, list[nn.Module]] = {}
    for module in model.modules():
        method = getattr(module, "quant_method", None)
        if method is not None:
            method.process_weights_after_loading(module)
            by_class.setdefault(type(method), []).append(module)
    for cls, layers in by_class.items():
        cls.finish_loading(layers)
