"""FP8 (float8_e4m3fn) weights: Hub checkpoints and quantize-at-load.

Checkpoint layouts accepted (config.json `quantization_config`):
- `quant_method: fp8` (AutoFP8 / vLLM / SGLang): `weight` e4m3fn [out, in], `weight_scale` a scalar per
  checkpoint module (per-tensor) or [out] / [out, 1] (per-channel), `input_scale` a scalar when
  `activation_scheme: static`. Block-wise scales (`weight_block_size`) are refused.
- `quant_method: compressed-tensors` (llm-compressor), FP8 schemes only: every config group has
  `weights: {num_bits: 8, type: float, strategy: tensor | channel}`; `input_activations` dynamic
  (per-token or per-tensor), static per-tensor (`input_scale` tensors), or absent (weight-only).
- `--quantization fp8` on a 16/32-bit checkpoint: the weights load as usual and are quantized once,
  per output channel, before the first step.

Storage, whatever the layout: `weight` e4m3fn [out_local, in_local] and `weight_scale` fp32 [out_local],
one scale per output row. A per-tensor checkpoint scale is expanded to its module's rows when it loads,
so a packed layer (qkv, gate_up) whose q/k/v scales differ keeps each shard's own scale exactly — no
requantization to a common scale (which would cost the smaller-scale shards precision) — and one
kernel contract (row-wise scales) serves every layout.

Activations: dynamic per-token e4m3 scales by default. A static checkpoint's `input_scale`s are used as
given (packed shards share one input, so the largest of their scales, as calibrated per module, is
the one that cannot clip). Dispatch (`Fp8LinearMethod.apply`): on CUDA one row goes through the
weight-only FP8 GEMV (the Triton `kernels.fp8_gemv`, or with TESSERA_FP8_CUDA_GEMV=1 the tensor-core CUDA
kernel `kernels.fp8_gemv_cuda` where it builds, sm_89+; activations stay 16-bit; at TP 1 the model's fused
batch-1 path calls it with the norm / SiLU prologues and residual epilogue), more rows through `_scaled_mm`
(`kernels.fp8_gemm`); on CPU the weights are dequantized to the compute dtype (`fp8_linear_ref`).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import torch
from torch import nn

from engine.args import ArgsError
from engine.quant.base import LinearMethod, ShardLayout, UnquantizedLinearMethod, add_param
from engine.quant.config import QuantConfig
from kernels.fp8_quant import FP8_DTYPE, FP8_MAX, quantize_weight_per_channel

logger = logging.getLogger(__name__)

# Dummy weights (--load-format dummy): e4m3 codes over the whole range times 0.02 / 448 give the same
# ±0.02 weights the unquantized dummy fill uses.
_DUMMY_WEIGHT_RANGE = (-FP8_MAX, FP8_MAX)
_DUMMY_SCALE = 0.02 / FP8_MAX


@dataclass(frozen=True)
class Fp8Config(QuantConfig):
    # "fp8" / "compressed-tensors": the checkpoint holds FP8 weights; "quantize-at-load": 16/32-bit
    # weights quantized after loading; "dummy": FP8 parameters filled with random values.
    source: str
    static_activations: bool = False  # checkpoint `input_scale`s are loaded and used
    ignore: tuple[str, ...] = ()  # checkpoint module patterns left unquantized
    name = "fp8"

    # ---------------------------------------------------------------------------- parsing
    @classmethod
    def from_checkpoint(cls, quant_cfg: dict) -> Fp8Config:
        method = str(quant_cfg.get("quant_method", "")).lower()
        if method == "compressed-tensors":
            return cls._from_compressed_tensors(quant_cfg)
        fmt = str(quant_cfg.get("fmt", "e4m3")).lower()
        if fmt != "e4m3":
            raise ArgsError(f"FP8 checkpoint format {fmt!r} is not supported (only e4m3 weights)")
        if quant_cfg.get("weight_block_size"):
            raise ArgsError(f"block-wise FP8 (weight_block_size {quant_cfg['weight_block_size']}) is not "
                            "supported; per-tensor and per-channel weight scales are")
        scheme = str(quant_cfg.get("activation_scheme", "dynamic")).lower()
        if scheme not in ("dynamic", "static"):
            raise ArgsError(f"FP8 activation_scheme must be dynamic or static, got {scheme!r}")
        ignore = quant_cfg.get("ignored_layers") or quant_cfg.get("modules_to_not_convert") or []
        return cls(source="fp8", static_activations=scheme == "static", ignore=tuple(ignore))

    @classmethod
    def _from_compressed_tensors(cls, quant_cfg: dict) -> Fp8Config:
        fmt = quant_cfg.get("format")
        if fmt not in (None, "float-quantized", "naive-quantized"):
            raise ArgsError(f"compressed-tensors format {fmt!r} is not supported; only FP8 "
                            "(float-quantized) checkpoints are")
        groups = quant_cfg.get("config_groups") or {}
        if not groups:
            raise ArgsError("compressed-tensors quantization_config has no config_groups")
        statics = set()
        for name, group in groups.items():
            weights = group.get("weights") or {}
            if weights.get("num_bits") != 8 or weights.get("type") != "float":
                raise ArgsError(f"compressed-tensors group {name!r}: only FP8 weights (num_bits 8, type float) "
                                f"are supported, got num_bits {weights.get('num_bits')} type {weights.get('type')}")
            if weights.get("strategy") not in ("tensor", "channel"):
                raise ArgsError(f"compressed-tensors group {name!r}: FP8 weight strategy "
                                f"{weights.get('strategy')!r} is not supported (tensor or channel)")
            acts = group.get("input_activations")
            if acts is None:
                statics.add(False)  # weight-only checkpoint: activations quantized per token at run time
                continue
            if acts.get("num_bits") != 8 or acts.get("type") != "float":
                raise ArgsError(f"compressed-tensors group {name!r}: input activations must be FP8 or absent")
            if acts.get("dynamic"):
                statics.add(False)
            elif acts.get("strategy") == "tensor":
                statics.add(True)
            else:
                raise ArgsError(f"compressed-tensors group {name!r}: static {acts.get('strategy')!r} activation "
                                "scales are not supported (static per-tensor or dynamic)")
        if len(statics) > 1:
            raise ArgsError("compressed-tensors groups mix static and dynamic activation scales")
        if quant_cfg.get("kv_cache_scheme"):
            logger.warning("compressed-tensors kv_cache_scheme is ignored (use --kv-cache-dtype)")
        return cls(source="compressed-tensors", static_activations=statics.pop(),
                   ignore=tuple(quant_cfg.get("ignore") or ()))

    @classmethod
    def from_flag(cls, is_dummy_load: bool) -> Fp8Config:
        return cls(source="dummy" if is_dummy_load else "quantize-at-load")

    # ---------------------------------------------------------------------------- methods
    def _ignored(self, name: str) -> bool:
        for pattern in self.ignore:
            if pattern.startswith("re:"):
                if re.fullmatch(pattern[3:], name) or re.fullmatch(pattern[3:], name.removeprefix("model.")):
                    return True
            elif name == pattern or name.endswith("." + pattern) or name.removeprefix("model.") == pattern:
                return True
        return False

    def linear_method(self, checkpoint_names: list[str]) -> LinearMethod:
        ignored = [self._ignored(n) for n in checkpoint_names]
        if ignored and all(ignored):
            return UnquantizedLinearMethod()
        if any(ignored):
            raise ArgsError(f"FP8 checkpoint quantizes only some of the packed modules {checkpoint_names}")
        if self.source == "quantize-at-load":
            return Fp8QuantizeAtLoadMethod()
        return Fp8LinearMethod(static_activations=self.static_activations)


# -------------------------------------------------------------------------------- loaders
def _scale_rows(layer: nn.Module, shard_id: int | None) -> tuple[int, int]:
    """(start, size) of one packed shard's output rows in this rank's layer."""
    sizes = getattr(layer, "local_sizes", None)
    if sizes is None:  # row-parallel / replicated: one shard, all output rows
        return 0, layer.weight_scale.shape[0]
    idx = shard_id or 0
    return sum(sizes[:idx]), sizes[idx]


def _make_weight_scale_loader(layer: nn.Module, layer_loader):
    """A per-tensor scale (0-dim or [1]) fills its shard's rows; a per-channel one ([out] or [out, 1])
    is sliced by the layer like any output-split tensor."""

    def load(param: nn.Parameter, loaded: torch.Tensor, shard_id: int | None = None) -> None:
        if loaded.numel() == 1:
            start, size = _scale_rows(layer, shard_id)
            param.data.narrow(0, start, size).fill_(float(loaded.reshape(())))
        else:
            layer_loader(param, loaded.reshape(-1).float(), shard_id)

    return load


def _make_input_scale_loader():
    def load(param: nn.Parameter, loaded: torch.Tensor, shard_id: int | None = None) -> None:
        if loaded.numel() != 1:
            raise ValueError(f"input_scale must be a scalar (static per-tensor), got shape {tuple(loaded.shape)}")
        param.data[shard_id or 0] = float(loaded.reshape(()))

    return load


# -------------------------------------------------------------------------------- methods
class Fp8LinearMethod(LinearMethod):
    """FP8 weights as stored in the checkpoint (or dummy-filled), per-output-row fp32 scales."""

    # Batch-1 decode may run these layers in the fused GEMV path (`engine.models.llama._row_gemv`:
    # `kernels.fp8_gemv` with the RMSNorm / SiLU prologues and residual epilogue).
    supports_fused_gemv = True

    def __init__(self, static_activations: bool = False) -> None:
        self.static_activations = static_activations

    def create_weights(self, layer: nn.Module, in_features: int, out_features: list[int],
                       dtype: torch.dtype) -> None:
        out = sum(out_features)
        layer.fp8_act_dtype = dtype  # the activations' dtype, for the batch-1 kernel choice (`finish_loading`)
        add_param(layer, "weight", torch.empty(out, in_features, dtype=FP8_DTYPE),
                  ShardLayout(output_dim=0, input_dim=1, dummy_range=_DUMMY_WEIGHT_RANGE))
        add_param(layer, "weight_scale", torch.empty(out, dtype=torch.float32),
                  ShardLayout(output_dim=0, dummy_range=(_DUMMY_SCALE, _DUMMY_SCALE)))
        if self.static_activations:
            # One slot per packed checkpoint module; reduced to one scale after loading.
            add_param(layer, "input_scale", torch.ones(len(out_features), dtype=torch.float32),
                      ShardLayout(per_shard=True, dummy_range=(1.0, 1.0)))

    def attach_loaders(self, layer: nn.Module) -> None:
        """Scale loaders that accept every published scale shape (see `_make_weight_scale_loader`)."""
        layer.weight_scale.weight_loader = _make_weight_scale_loader(layer, layer.weight_scale.weight_loader)
        if self.static_activations:
            layer.input_scale.weight_loader = _make_input_scale_loader()

    def process_weights_after_loading(self, layer: nn.Module) -> None:
        if self.static_activations:
            # q/k/v (gate/up) read the same input: the largest calibrated scale never clips it.
            layer.input_scale = nn.Parameter(layer.input_scale.data.max().reshape(()), requires_grad=False)

    @classmethod
    def finish_loading(cls, layers: list[nn.Module]) -> None:
        """With TESSERA_FP8_CUDA_GEMV=1, batch-1 decode through the tensor-core CUDA GEMV
        (kernels/fp8_gemv_cuda.py, opt-in: slower than the Triton GEMV on an H200) for the layers it takes
        (`layer.fp8_cuda_gemv`); it reads the same weight tensor, so this costs no memory. Built here, once, so
        a GPU or driver that refuses it falls back to the Triton GEMV at load with one warning."""
        from kernels import fp8_gemv_cuda

        layers = [layer for layer in layers if layer.weight.is_cuda and layer.weight.dtype == FP8_DTYPE]
        if not layers or not fp8_gemv_cuda.ENABLED:
            return
        for layer in layers:
            layer.fp8_cuda_gemv = fp8_gemv_cuda.supports(layer.weight, layer.fp8_act_dtype)
        taken = sum(layer.fp8_cuda_gemv for layer in layers)
        logger.info("FP8 batch-1 GEMV: %s (%d of %d layers%s)", "CUDA" if taken else "Triton", taken, len(layers),
                    "" if taken == len(layers) else "; the others need sm_89+, N % 16 == 0, K % 64 == 0, a bf16 / "
                    "fp16 model and NVRTC")

    def apply(self, layer: nn.Module, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        return fp8_apply(x, layer.weight, layer.weight_scale, bias, getattr(layer, "input_scale", None),
                         cuda_gemv=getattr(layer, "fp8_cuda_gemv", False))


class Fp8QuantizeAtLoadMethod(Fp8LinearMethod):
    """`--quantization fp8` on an unquantized checkpoint: load the model-dtype weight, then quantize it
    per output channel (the most accurate choice without calibration data)."""

    def __init__(self) -> None:
        super().__init__(static_activations=False)

    def create_weights(self, layer: nn.Module, in_features: int, out_features: list[int],
                       dtype: torch.dtype) -> None:
        layer.fp8_act_dtype = dtype
        add_param(layer, "weight", torch.empty(sum(out_features), in_features, dtype=dtype),
                  ShardLayout(output_dim=0, input_dim=1))

    def attach_loaders(self, layer: nn.Module) -> None:
        return None

    def process_weights_after_loading(self, layer: nn.Module) -> None:
        if layer.weight.dtype == FP8_DTYPE:
            return  # already processed
        q, scale = quantize_weight_per_channel(layer.weight.data)
        layer.weight = nn.Parameter(q, requires_grad=False)
        layer.weight_scale = nn.Parameter(scale, requires_grad=False)


def fp8_apply(x: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None,
              input_scale: torch.Tensor | None, cuda_gemv: bool = False) -> torch.Tensor:
    """y = x W^T (+ bias) for x [..., in]; picks the kernel by device and row count (module docstring).
    `cuda_gemv`: one row goes through `kernels.fp8_gemv_cuda` (`Fp8LinearMethod.finish_loading` checked it)."""
    from kernels.fp8_gemm import fp8_linear_ref, fp8_linear_scaled_mm, scaled_mm_supported

    shape = x.shape
    x2 = x.reshape(-1, shape[-1])
    n, k = weight.shape
    if not x2.is_cuda or x2.dtype not in (torch.bfloat16, torch.float16):
        y = fp8_linear_ref(x2, weight, weight_scale, bias)
    elif x2.shape[0] == 1 and cuda_gemv:
        from kernels.fp8_gemv_cuda import fp8_gemv_cuda

        y = fp8_gemv_cuda(x2.contiguous(), weight, weight_scale, bias)
    elif x2.shape[0] == 1:
        from kernels.fp8_gemv import fp8_gemv

        y = fp8_gemv(x2.contiguous(), weight, weight_scale, bias)
    elif scaled_mm_supported(n, k):
        y = fp8_linear_scaled_mm(x2, weight, weight_scale, bias, input_scale)
    else:
        y = fp8_linear_ref(x2, weight, weight_scale, bias)
    return y.reshape(*shape[:-1], n)
