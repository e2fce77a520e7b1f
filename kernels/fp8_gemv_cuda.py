"""Batch-1 FP8 weight-only GEMV on tensor cores (CUDA, `kernels/cuda/fp8_gemv.cu`, built by NVRTC at run time);
opt-in (`TESSERA_FP8_CUDA_GEMV=1`): measured slower than the Triton GEMV on an H200 (see `ENABLED`).

The Triton FP8 GEMV (`kernels.fp8_gemv`) converts each weight twice on the SM's narrow conversion pipe (e4m3x2 ->
f16x2, then f16 -> f32 for the FMA) and streams 2.5-3.7 TB/s on an H200 (layer 67.2 us at the 8B shape). This
kernel converts once per two weights (`cvt.rn.f16x2.e4m3x2`) straight into an f16 mma's A operand and leaves the
multiply-adds to the tensor cores; the design is in the .cu file's header.

It reads the layer's own `weight` [N, K] float8_e4m3fn (rows contiguous) and `weight_scale` [N] fp32, the
tensors prefill's `_scaled_mm` uses: no repack, no second copy. Requirements: N % 16 == 0, K % 64 == 0, bf16 or
fp16 activations, an sm_89+ GPU (the e4m3 conversion) with NVRTC (`kernels.cuda_rtc`); other layers keep the
Triton GEMV.
"""

from __future__ import annotations

import ctypes
import functools
import os
from typing import NamedTuple

import torch

from kernels import cuda_rtc
from kernels._common import check_vectors
from kernels.fp8_quant import FP8_DTYPE

# TESSERA_FP8_CUDA_GEMV=1 puts the FP8 layers that fit on this kernel. Off by default: on an H200 (8B shapes,
# 2026-12-05, `bench/fp8_cuda_bench.py`) it streamed 2.2-3.1 TB/s against the Triton lean loop's 2.5-3.5 (layer
# 83.1 vs 68.4 us at each shape's best config) and the batch-1 step went 2.826 -> 3.423 ms
# (`bench/step_ab.py --switch fp8-cuda`). Correct (GPU tests), kept for the next attempt: see bench/NOTES.md.
ENABLED = os.environ.get("TESSERA_FP8_CUDA_GEMV", "0") == "1"

TILE_N = 16
CHUNK_K = 64
DTYPES = (torch.bfloat16, torch.float16)
PROLOGUE_NONE, PROLOGUE_RMSNORM, PROLOGUE_SILU_MUL = 0, 1, 2


class Fp8CudaConfig(NamedTuple):
    tiles: int = 1  # 16-row tiles per CTA
    warps: int = 8  # warps per CTA, splitting K by chunks of 64
    depth: int = 2  # chunks of weights in flight per warp


def _bool(v: bool) -> str:
    return str(bool(v)).lower()


@functools.cache
def _builds_on(index: int, dtype: torch.dtype) -> bool:
    return cuda_rtc.loads_or_warns("fp8_gemv.cu", f"fp8_gemv_mma<1, 8, 2, 0, false, false, "
                                   f"{_bool(dtype == torch.bfloat16)}>", index, "FP8 CUDA GEMV")


def supports(weight: torch.Tensor, dtype: torch.dtype) -> bool:
    """Whether `fp8_gemv_cuda` takes this weight with activations of `dtype` (else the Triton GEMV does): shape,
    layout and dtype fit, and the kernel builds and loads on the weight's device (checked once per device and
    dtype; a failure logs one warning)."""
    if not (weight.is_cuda and weight.dtype == FP8_DTYPE and weight.dim() == 2 and dtype in DTYPES):
        return False
    n, k = weight.shape
    if n % TILE_N or k % CHUNK_K or weight.stride() != (k, 1) or weight.data_ptr() % 16:
        return False
    if torch.cuda.get_device_capability(weight.device) < (8, 9):
        return False
    index = weight.device.index if weight.device.index is not None else torch.cuda.current_device()
    return _builds_on(index, dtype)


def default_config(n: int, k: int) -> Fp8CudaConfig:
    """Before any GPU measurement: 8 warps per CTA (16 for the long K of down, as the AWQ kernel measured best),
    2 tiles per CTA for the wide projections, 2 chunks in flight per warp."""
    return Fp8CudaConfig(tiles=2 if n >= 16384 or k > 8192 else 1, warps=16 if k > 8192 else 8, depth=2)


def fp8_gemv_cuda(x: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor,
                  bias: torch.Tensor | None = None, *, norm_weight: torch.Tensor | None = None, eps: float = 1e-6,
                  silu_mul: bool = False, residual: torch.Tensor | None = None,
                  config: Fp8CudaConfig | None = None) -> torch.Tensor:
    """x [1, K] ([1, 2K] with silu_mul) -> [1, N] in x's dtype; the signature, prologues (RMSNorm with
    `norm_weight`, or SiLU(gate) * up) and epilogue (* weight_scale, + bias in fp32, then + residual) of
    `kernels.fp8_gemv.fp8_gemv`."""
    n, k = weight.shape
    assert weight.dtype == FP8_DTYPE and weight.stride() == (k, 1), "weight: [N, K] float8_e4m3fn, rows contiguous"
    assert n % TILE_N == 0 and k % CHUNK_K == 0, f"[N={n}, K={k}]: N % {TILE_N} and K % {CHUNK_K} must be 0"
    assert not (silu_mul and norm_weight is not None), "one prologue at a time"
    width = 2 * k if silu_mul else k
    assert x.dim() == 2 and x.shape == (1, width) and x.is_contiguous(), f"x: expected contiguous [1, {width}]"
    assert x.dtype in DTYPES and x.is_cuda, f"x: bf16 / fp16 on a GPU, got {x.dtype} on {x.device}"
    assert weight_scale.dtype == torch.float32 and weight_scale.shape == (n,) and weight_scale.is_contiguous(), (
        f"weight_scale: expected contiguous fp32 [{n}]")
    check_vectors(x.dtype, ("norm_weight", norm_weight, k), ("bias", bias, n), ("residual", residual, n))
    cfg = config or default_config(n, k)
    prologue = PROLOGUE_SILU_MUL if silu_mul else PROLOGUE_RMSNORM if norm_weight is not None else PROLOGUE_NONE
    expr = (f"fp8_gemv_mma<{cfg.tiles}, {cfg.warps}, {cfg.depth}, {prologue}, {_bool(bias is not None)}, "
            f"{_bool(residual is not None)}, {_bool(x.dtype == torch.bfloat16)}>")
    fn = cuda_rtc.get_function("fp8_gemv.cu", expr, x.device)
    out = torch.empty((1, n), dtype=x.dtype, device=x.device)
    shared = 2 * k + 4 * cfg.warps * cfg.tiles * TILE_N + 4 * 32
    grid = (-(-n // (TILE_N * cfg.tiles)), 1, 1)
    fn.launch(grid, (32 * cfg.warps, 1, 1), shared,
              [ctypes.c_void_p(x.data_ptr()), cuda_rtc.pointer(norm_weight, x), ctypes.c_void_p(weight.data_ptr()),
               ctypes.c_void_p(weight_scale.data_ptr()), cuda_rtc.pointer(bias, x), cuda_rtc.pointer(residual, x),
               ctypes.c_void_p(out.data_ptr()), ctypes.c_int32(n), ctypes.c_int32(k), ctypes.c_float(eps)])
    return out
