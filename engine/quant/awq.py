"""AWQ int4 weights (AutoAWQ GEMM packing, `quant_method: awq`): W = (q - z) * s per group of input rows.

Stored per linear layer as in the checkpoint (layout in kernels/awq_gemm.py): `qweight` int32 [in, out/8],
`qzeros` int32 [in/G, out/8], `scales` [in/G, out]. TP: column-parallel layers split the packed output
axis (out/8 columns), row-parallel layers split the input axis by whole groups.

CUDA runs the tensor-core CUDA kernels (kernels/awq_gemv_cuda.py: batch-1 GEMV, small batches) where the layer
has their weight copy, the Triton GEMV at one row otherwise, and dequantize + cuBLAS for larger batches and
prefill (row thresholds below). The CPU is the reference path: the weight is dequantized once at load into the
model dtype and multiplied with `F.linear`. Once, not per call: the CPU path exists for tests and the demo, where a
per-call unpack would make every step several times slower for no gain in what the tests check (the unpack itself
is the same torch code either way).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from engine.args import ArgsError
from engine.quant.base import LinearMethod, ShardLayout, UnquantizedLinearMethod, add_param
from engine.quant.config import QuantConfig

logger = logging.getLogger(__name__)

PACK = 8  # int4 values per int32
# Nibble i of a packed int32 holds column AWQ_PACK_ORDER[i] of its 8 (AutoAWQ's order, made for its
# CUDA dequant); logical column c therefore sits at nibble AWQ_UNPACK_NIBBLE[c].
AWQ_PACK_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
AWQ_UNPACK_NIBBLE = (0, 4, 1, 5, 2, 6, 3, 7)
# Batches of 2..AWQ_CUDA_MAX_ROWS rows run the CUDA kernel's small-batch form (`awq_gemm_cuda`: up to 32 rows per
# pass over the int4 weights) when the layer has its copy. H100, 8B layer (`bench/awq_cuda_bench.py --rows
# 16,24,32,48,64`, 2026-12-05, after the dequantize kernel became 3x faster): 118.8 / 216.7 / 266.7 / 386.7 / 536.5 us
# at 16 / 24 / 32 / 48 / 64 rows against 373-377 us for dequantize + cuBLAS at every one of them: crossover ~45 rows.
AWQ_CUDA_MAX_ROWS = int(os.environ.get("TESSERA_AWQ_CUDA_MAX_ROWS") or 40)
# Batches the CUDA kernel does not take (more rows, or no CUDA copy) go through dequantize + cuBLAS from this many
# rows (below: the Triton GEMM). The Triton GEMM lost wherever it was timed: H100, 8B layer at 16-64 rows 2,515-2,682 us vs
# 373-377 (the same bench); H200 at 64 / 256 rows 2,687 / 7,167 vs 1,120 / 1,182 with the old dequantize (2026-12-02).
# From 2 to 16 rows it runs the same 16-row tiles and K split, so fewer rows do not make it cheaper.
# `bench/quant_gemv_sweep.py --kind awq` writes a measured crossover to awq_dequant_min_rows.txt for
# TESSERA_AWQ_DEQUANT_MIN_ROWS.
DEQUANT_MATMUL_MIN_ROWS = int(os.environ.get("TESSERA_AWQ_DEQUANT_MIN_ROWS") or 2)
# The CUDA GEMV's weight copy may take at most this share of the GPU memory free after loading (the KV cache's
# source) unless TESSERA_AWQ_CUDA_GEMV=1 insists; TESSERA_AWQ_CUDA_GEMV=0 turns it off.
AWQ_CUDA_COPY_MAX_SHARE = 0.10


def cuda_gemv_plan(extra_bytes: int, free_bytes: int, env: str | None) -> tuple[bool, str]:
    """(use the CUDA GEMV, why) for a weight copy of `extra_bytes` with `free_bytes` free on the GPU."""
    gib = f"{extra_bytes / 2**30:.2f} GiB weight copy"
    if env == "0":
        return False, "TESSERA_AWQ_CUDA_GEMV=0"
    if env == "1":
        return True, f"{gib}, forced by TESSERA_AWQ_CUDA_GEMV=1"
    if extra_bytes > AWQ_CUDA_COPY_MAX_SHARE * free_bytes:
        return False, (f"its {gib} would take more than {AWQ_CUDA_COPY_MAX_SHARE:.0%} of the "
                       f"{free_bytes / 2**30:.1f} GiB free for the KV cache; TESSERA_AWQ_CUDA_GEMV=1 forces it")
    return True, gib


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """[R, C/8] int32 (AWQ order) -> [R, C] int32 values in 0..15."""
    shifts = torch.tensor(AWQ_UNPACK_NIBBLE, dtype=torch.int32, device=packed.device) * 4
    return ((packed.unsqueeze(-1) >> shifts) & 0xF).reshape(packed.shape[0], -1)


def dequantize_awq(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
                   group_size: int) -> torch.Tensor:
    """The torch reference: W^T as [in, out] in scales' dtype."""
    q = unpack_int4(qweight)  # [in, out]
    z = unpack_int4(qzeros).repeat_interleave(group_size, dim=0)  # [in, out]
    s = scales.repeat_interleave(group_size, dim=0)
    return (q - z).to(scales.dtype) * s


@dataclass(frozen=True)
class AWQConfig(QuantConfig):
    group_size: int = 128
    modules_to_not_convert: tuple[str, ...] = ()

    name = "awq"

    @classmethod
    def from_checkpoint(cls, quant_cfg: dict) -> AWQConfig:
        bits = quant_cfg.get("bits", quant_cfg.get("w_bit", 4))
        group_size = quant_cfg.get("group_size", quant_cfg.get("q_group_size", 128))
        version = str(quant_cfg.get("version", "gemm")).lower()
        if bits != 4:
            raise ArgsError(f"AWQ with {bits}-bit weights is not supported (only 4-bit)")
        if version != "gemm":
            raise ArgsError(f"AWQ version {version!r} is not supported (only AutoAWQ's GEMM packing, 'gemm')")
        if not quant_cfg.get("zero_point", True):
            raise ArgsError("AWQ without zero points (zero_point: false) is not supported")
        if not isinstance(group_size, int) or group_size <= 0 or group_size % PACK:
            raise ArgsError(f"AWQ group_size must be a positive multiple of 8, got {group_size!r}")
        return cls(group_size=group_size, modules_to_not_convert=tuple(quant_cfg.get("modules_to_not_convert") or ()))

    @classmethod
    def from_flag(cls, is_dummy_load: bool) -> AWQConfig:
        if is_dummy_load:  # benchmarks: AWQ-shaped random weights, AutoAWQ's usual group size
            return cls()
        return super().from_flag(is_dummy_load)

    def is_skipped(self, checkpoint_name: str) -> bool:
        return any(m in checkpoint_name for m in self.modules_to_not_convert)

    def check_model(self, hf_config, tp_size: int) -> None:
        """Every quantized linear's per-rank input must hold whole groups, its per-rank output whole packs."""
        head_dim = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // hf_config.num_attention_heads
        num_kv = getattr(hf_config, "num_key_value_heads", None) or hf_config.num_attention_heads
        hidden, inter = hf_config.hidden_size, hf_config.intermediate_size
        q_out, kv_out = hf_config.num_attention_heads * head_dim, num_kv * head_dim
        # (module, per-rank input, per-rank outputs, how the input was split)
        shapes = [("q_proj/k_proj/v_proj", hidden, [q_out // tp_size, kv_out // tp_size], ""),
                  ("o_proj", q_out // tp_size, [hidden], f" = {q_out} / tp_size {tp_size}"),
                  ("gate_proj/up_proj", hidden, [inter // tp_size], ""),
                  ("down_proj", inter // tp_size, [hidden], f" = {inter} / tp_size {tp_size}")]
        for module, in_local, outs, how in shapes:
            names = [f"model.layers.{i}.{part}" for i in range(hf_config.num_hidden_layers)
                     for part in module.split("/")]
            if all(self.is_skipped(n) for n in names):
                continue
            if in_local % self.group_size:
                raise ArgsError(f"AWQ group size {self.group_size} does not divide {module}'s input per rank "
                                f"({in_local}{how})")
            if any(o % PACK for o in outs):
                raise ArgsError(f"AWQ {module}: output per rank {outs} is not a multiple of {PACK} "
                                f"(tp_size {tp_size})")

    def linear_method(self, checkpoint_names: list[str]) -> LinearMethod:
        skipped = [self.is_skipped(n) for n in checkpoint_names]
        if checkpoint_names and all(skipped):
            return UnquantizedLinearMethod()
        if any(skipped):
            raise ArgsError(f"AWQ modules_to_not_convert skips part of a packed layer: {checkpoint_names}")
        return AWQLinearMethod(self.group_size)


class AWQLinearMethod(LinearMethod):
    # Batch-1 decode on CUDA: the packed tensors go straight into `kernels.awq_gemv.awq_gemv` with the RMSNorm /
    # SiLU prologue and the residual epilogue (engine/models/llama.py `_row_gemv`); 4 launches per layer
    # instead of 7 (two add-RMSNorms and a SiLU-and-mul less).
    supports_fused_gemv = True

    def __init__(self, group_size: int) -> None:
        self.group_size = group_size

    def create_weights(self, layer: nn.Module, in_features: int, out_features: list[int],
                       dtype: torch.dtype) -> None:
        g = self.group_size
        if in_features % g:
            raise ValueError(f"AWQ group size {g} does not divide the input size per rank {in_features}")
        if any(o % PACK for o in out_features):
            raise ValueError(f"AWQ output sizes per rank {out_features} must be multiples of {PACK}")
        out = sum(out_features)
        add_param(layer, "qweight", torch.empty(in_features, out // PACK, dtype=torch.int32),
                  ShardLayout(output_dim=1, input_dim=0, output_pack=PACK))
        add_param(layer, "qzeros", torch.empty(in_features // g, out // PACK, dtype=torch.int32),
                  ShardLayout(output_dim=1, input_dim=0, output_pack=PACK, input_block=g))
        # |q - z| <= 15: dummy scales this small keep dummy weights within the unquantized +-0.02.
        add_param(layer, "scales", torch.empty(in_features // g, out, dtype=dtype),
                  ShardLayout(output_dim=1, input_dim=0, input_block=g, dummy_range=(0.0005, 0.0013)))

    def process_weights_after_loading(self, layer: nn.Module) -> None:
        if layer.qweight.is_cuda:
            from kernels.awq_gemv import gemv_locks

            # Split-K arrival counters (GEMV, small-M GEMM): allocated here, never inside a CUDA-graph capture.
            # N/8 counters cover the GEMM's tiles too (block_m 16 at M <= 64: 4 * N/128 <= N/8).
            layer.register_buffer("awq_gemv_locks", gemv_locks(layer.scales.shape[1], layer.scales.device),
                                  persistent=False)
            layer.awq_cuda_weights = None  # `finish_loading` decides, for the whole model
            return
        weight = dequantize_awq(layer.qweight, layer.qzeros, layer.scales, self.group_size)  # [in, out]
        for name in ("qweight", "qzeros", "scales"):
            delattr(layer, name)
        layer.weight = nn.Parameter(weight.t().contiguous(), requires_grad=False)  # [out, in]

    @classmethod
    def finish_loading(cls, layers: list[nn.Module]) -> None:
        """Batch-1 decode through the tensor-core CUDA GEMV (kernels/awq_gemv_cuda.py) for the layers it takes:
        a second copy of their int4 weights in its layout (~0.5 byte per weight; prefill and small batches keep
        AutoAWQ's), made only when `cuda_gemv_plan` says the memory allows it."""
        from kernels import awq_gemv_cuda

        layers = [layer for layer in layers if hasattr(layer, "awq_cuda_weights")]  # CUDA, packed
        eligible = [layer for layer in layers if awq_gemv_cuda.supports(
            layer.scales.shape[1], layer.qweight.shape[0], layer.quant_method.group_size, layer.scales.dtype,
            layer.scales.device)]
        if not eligible:
            return
        device = eligible[0].scales.device
        extra = sum(layer.qweight.numel() * 4 + layer.scales.numel() * 4 for layer in eligible)
        free, _ = torch.cuda.mem_get_info(device)
        use, reason = cuda_gemv_plan(extra, free, os.environ.get("TESSERA_AWQ_CUDA_GEMV"))
        logger.info("AWQ batch-1 GEMV: %s (%d of %d layers eligible; %s)", "CUDA" if use else "Triton",
                    len(eligible), len(layers), reason)
        if use:
            for layer in eligible:
                layer.awq_cuda_weights = awq_gemv_cuda.repack_awq_for_cuda(layer.qweight, layer.qzeros,
                                                                           layer.scales, layer.quant_method.group_size)

    def apply(self, layer: nn.Module, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        if not x.is_cuda:
            return F.linear(x, layer.weight, bias)
        from kernels.awq_gemm import awq_dequantize, awq_gemm
        from kernels.awq_gemv import awq_gemv

        shape = x.shape
        x = x.reshape(-1, shape[-1])
        if x.stride(-1) != 1:
            x = x.contiguous()
        packed = (layer.qweight, layer.qzeros, layer.scales, self.group_size)
        cuda_rows = 1 if x.shape[0] == 1 else AWQ_CUDA_MAX_ROWS
        if x.shape[0] <= cuda_rows and layer.awq_cuda_weights is not None and x.dtype == layer.scales.dtype:
            from kernels.awq_gemv_cuda import awq_gemm_cuda, awq_gemv_cuda

            x = x.contiguous()
            out = (awq_gemv_cuda(x, layer.awq_cuda_weights) if x.shape[0] == 1
                   else awq_gemm_cuda(x, layer.awq_cuda_weights))
        elif x.shape[0] == 1:
            out = awq_gemv(x, *packed, locks=layer.awq_gemv_locks)
        elif x.shape[0] >= DEQUANT_MATMUL_MIN_ROWS:
            out = x @ awq_dequantize(*packed)
        else:
            out = awq_gemm(x, *packed, locks=layer.awq_gemv_locks)
        if bias is not None:
            out += bias
        return out.reshape(*shape[:-1], out.shape[-1])
