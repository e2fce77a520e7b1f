"""Small helpers the launchers share (not an op)."""

from __future__ import annotations

import functools

import torch
import triton

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
# KV pools may also hold fp8 (e4m3, per-layer scales: `engine.mem.kv_pool`).
KV_DTYPES = (*FLOAT_DTYPES, torch.float8_e4m3fn)


def next_pow2(n: int) -> int:
    return int(triton.next_power_of_2(max(int(n), 1)))


def dot_precision(dtype: torch.dtype) -> str | None:
    # Triton's default for fp32 operands is TF32 on NVIDIA (10-bit mantissa); an fp32 model should get
    # fp32 attention. fp16/bf16 operands keep Triton's default (None).
    return "ieee" if dtype == torch.float32 else None


@functools.cache
def num_sms(device_index: int) -> int:
    return int(torch.cuda.get_device_properties(device_index).multi_processor_count)


def device_num_sms(device: torch.device) -> int:
    """Streaming multiprocessors of `device`; 1 on the CPU (interpreter), where parallelism is moot."""
    if device.type != "cuda":
        return 1
    return num_sms(device.index if device.index is not None else torch.cuda.current_device())


def check_rows(name: str, t: torch.Tensor, ndim: int, dtypes: tuple[torch.dtype, ...] = FLOAT_DTYPES) -> None:
    """Rows may be strided (views of a fused QKV output), but each row must be one dense run."""
    assert t.dim() == ndim, f"{name}: expected {ndim} dims, got shape {tuple(t.shape)}"
    assert t.dtype in dtypes, f"{name}: unsupported dtype {t.dtype}"
    dense = 1
    for d in range(ndim - 1, 0, -1):
        assert t.stride(d) == dense or t.shape[d] == 1, (
            f"{name}: dims after the first must be contiguous, got strides {t.stride()} for {tuple(t.shape)}")
        dense *= t.shape[d]


def check_index(name: str, t: torch.Tensor, length: int | None = None) -> None:
    assert t.dim() == 1, f"{name}: expected 1 dim, got shape {tuple(t.shape)}"
    assert t.dtype in (torch.int32, torch.int64), f"{name}: expected int32/int64, got {t.dtype}"
    assert t.stride(0) == 1 or t.numel() <= 1, f"{name}: must be contiguous"
    if length is not None:
        assert t.shape[0] == length, f"{name}: expected length {length}, got {t.shape[0]}"


def check_vectors(dtype: torch.dtype, *operands: tuple[str, torch.Tensor | None, int]) -> None:
    """Each given (name, tensor or None, size): a contiguous `dtype` tensor of `size` elements (a GEMV's gamma,
    bias or residual, read as flat vectors by a raw-pointer kernel)."""
    for name, t, size in operands:
        if t is not None:
            assert t.numel() == size and t.dtype == dtype and t.is_contiguous(), (
                f"{name}: expected contiguous {dtype} with {size} elements")
