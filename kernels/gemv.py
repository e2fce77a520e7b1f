"""Fused single-row GEMV for batch-1 decode: `y = prologue(x) @ W^T (+ bias) (+ residual)` in one launch.

At batch 1 a decode step is bound by streaming the weights once. cuBLAS streams them well, but around
each projection sit latency-bound launches: RMSNorm before the QKV and gate/up projections,
SiLU-and-mul before the down projection, the residual add after o/down, and cuBLAS's own split-K
reduces. Each costs 1-3 us of a ~6 ms step, 5 per layer. Here they become the prologue / epilogue of
the projection itself:

- `PROLOGUE_RMSNORM`: every program recomputes the row's sum of squares (the row is 8-28 KiB and sits
  in L2), then normalises each K-chunk on the fly with HF `LlamaRMSNorm` rounding.
- `PROLOGUE_SILU_MUL`: x is the packed [gate | up] row; each chunk is `silu(gate) * up`, rounded like
  HF's `act_fn(gate) * up`.
- `ADD_RESIDUAL`: the epilogue adds the running residual (HF's `residual + hidden` in the model dtype);
  each program owns its output slice, so `out` may alias `residual`.

Each program owns BLOCK_N output rows and walks all of K, so no split-K reduction (and no
atomics: the result is bit-identical run to run). Partial products stay in a [BLOCK_N, BLOCK_K] fp32
tile and are reduced across threads once, after the loop.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from kernels._common import next_pow2

PROLOGUE_NONE = 0
PROLOGUE_RMSNORM = 1
PROLOGUE_SILU_MUL = 2


class GemvConfig(NamedTuple):
    block_n: int  # output rows per program
    block_k: int  # K-chunk per loop iteration
    num_warps: int
    num_stages: int = 1  # Triton's software pipelining of the K loop


@triton.jit
def _load_w(w_rows, offs_k, mask_n, K, EVEN_N: tl.constexpr, EVEN_K: tl.constexpr):
    # Weights are read exactly once per step: do not let them push x or the KV cache out of L2.
    if EVEN_N and EVEN_K:
        return tl.load(w_rows + offs_k[None, :], eviction_policy="evict_first")
    return tl.load(w_rows + offs_k[None, :], mask=mask_n[:, None] & (offs_k < K)[None, :], other=0.0,
                   eviction_policy="evict_first")


@triton.jit
def _load_x(x_ptr, norm_w_ptr, offs_k, K, rstd, dtype, PROLOGUE: tl.constexpr):
    """One K-chunk of the GEMV input as fp32, after the prologue (rounded as the unfused ops round)."""
    mask_k = offs_k < K
    if PROLOGUE == 1:
        xv = tl.load(x_ptr + offs_k, mask=mask_k, other=0.0, eviction_policy="evict_last").to(tl.float32)
        normed = (xv * rstd).to(dtype).to(tl.float32)
        gamma = tl.load(norm_w_ptr + offs_k, mask=mask_k, other=0.0, eviction_policy="evict_last")
        return (normed * gamma.to(tl.float32)).to(dtype).to(tl.float32)
    elif PROLOGUE == 2:
        gate = tl.load(x_ptr + offs_k, mask=mask_k, other=0.0, eviction_policy="evict_last").to(tl.float32)
        up = tl.load(x_ptr + K + offs_k, mask=mask_k, other=0.0, eviction_policy="evict_last").to(tl.float32)
        act = (gate / (1.0 + tl.exp(-gate))).to(dtype).to(tl.float32)
        return (act * up).to(dtype).to(tl.float32)
    else:
        return tl.load(x_ptr + offs_k, mask=mask_k, other=0.0, eviction_policy="evict_last").to(tl.float32)


@triton.jit
def _gemv_kernel(
    x_ptr, norm_w_ptr, w_ptr, bias_ptr, res_ptr, out_ptr,
    N, K, stride_wn, eps,
    PROLOGUE: tl.constexpr, HAS_BIAS: tl.constexpr, ADD_RESIDUAL: tl.constexpr,
    EVEN_N: tl.constexpr, EVEN_K: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, NORM_BLOCK: tl.constexpr, NUM_STAGES: tl.constexpr,
):
    pid = tl.program_id(0)
    offs_n = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    dtype = out_ptr.dtype.element_ty
    w_rows = w_ptr + offs_n.to(tl.int64)[:, None] * stride_wn
    offs_k0 = tl.arange(0, BLOCK_K)

    rstd = 1.0
    if PROLOGUE == 1:
        sum_sq = tl.zeros([NORM_BLOCK], dtype=tl.float32)
        for k0 in range(0, K, NORM_BLOCK):
            offs = k0 + tl.arange(0, NORM_BLOCK)
            xv = tl.load(x_ptr + offs, mask=offs < K, other=0.0, eviction_policy="evict_last").to(tl.float32)
            sum_sq += xv * xv
        rstd = tl.rsqrt(tl.sum(sum_sq, 0) / K + eps)

    acc = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
    for k0 in tl.range(0, K, BLOCK_K, num_stages=NUM_STAGES):
        w = _load_w(w_rows, k0 + offs_k0, mask_n, K, EVEN_N, EVEN_K)
        acc += w.to(tl.float32) * _load_x(x_ptr, norm_w_ptr, k0 + offs_k0, K, rstd, dtype, PROLOGUE)[None, :]

    y = tl.sum(acc, 1)  # [BLOCK_N]
    if HAS_BIAS:
        y += tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)
    y = y.to(dtype)
    if ADD_RESIDUAL:
        res = tl.load(res_ptr + offs_n, mask=mask_n, other=0.0)
        y = (y.to(tl.float32) + res.to(tl.float32)).to(dtype)
    tl.store(out_ptr + offs_n, y, mask=mask_n)


def default_config(k: int) -> GemvConfig:
    """Tiles from the H100 sweep in bench/gemv_bench.py (2026-11-22), which picked the same winners for
    every Llama-3.1-8B projection: 8 output rows per program; whole 1 KiB-element K-chunks with 8 warps
    for K up to 8192; for the long down projection (K 14336), 512-element chunks with 4 warps and
    3-stage pipelining (every N from 4096 to 128256 took the same tile). Smaller blocks leave too few
    bytes in flight, larger ones too few programs."""
    if k <= 8192:
        return GemvConfig(block_n=8, block_k=min(next_pow2(k), 1024), num_warps=8, num_stages=1)
    return GemvConfig(block_n=8, block_k=512, num_warps=4, num_stages=3)


def _check_vec(name: str, t: torch.Tensor, length: int, dtype: torch.dtype) -> None:
    assert t.dim() == 2 and t.shape[0] == 1 and t.shape[1] == length, (
        f"{name}: expected shape (1, {length}), got {tuple(t.shape)}")
    assert t.stride(1) == 1, f"{name}: last dim must be contiguous, got strides {t.stride()}"
    assert t.dtype == dtype, f"{name}: expected {dtype}, got {t.dtype}"


def fused_gemv(
    x: torch.Tensor,  # [1, K], or [1, 2K] (gate | up) with silu_mul
    weight: torch.Tensor,  # [N, K], rows contiguous
    *,
    norm_weight: torch.Tensor | None = None,  # [K]: RMSNorm prologue with this gamma
    eps: float = 1e-6,
    silu_mul: bool = False,
    bias: torch.Tensor | None = None,  # [N]
    residual: torch.Tensor | None = None,  # [1, N]: y += residual (may alias `out`)
    out: torch.Tensor | None = None,  # [1, N]
    config: GemvConfig | None = None,
) -> torch.Tensor:  # [1, N], dtype of x
    assert weight.dim() == 2 and weight.stride(1) == 1, (
        f"weight: expected [N, K] with contiguous rows, got {tuple(weight.shape)} strides {weight.stride()}")
    n, k = weight.shape
    dtype = x.dtype
    assert weight.dtype == dtype, f"weight dtype {weight.dtype} != x dtype {dtype}"
    assert not (silu_mul and norm_weight is not None), "one prologue at a time"
    _check_vec("x", x, 2 * k if silu_mul else k, dtype)
    prologue = PROLOGUE_SILU_MUL if silu_mul else PROLOGUE_NONE
    if norm_weight is not None:
        assert norm_weight.shape == (k,) and norm_weight.is_contiguous(), f"norm_weight {tuple(norm_weight.shape)}"
        prologue = PROLOGUE_RMSNORM
    if bias is not None:
        assert bias.shape == (n,) and bias.is_contiguous(), f"bias {tuple(bias.shape)}"
    if residual is not None:
        _check_vec("residual", residual, n, dtype)
    if out is None:
        out = torch.empty((1, n), dtype=dtype, device=x.device)
    _check_vec("out", out, n, dtype)
    cfg = config or default_config(k)
    assert cfg.block_n & (cfg.block_n - 1) == 0 and cfg.block_k & (cfg.block_k - 1) == 0, f"{cfg}: powers of 2"
    _gemv_kernel[(triton.cdiv(n, cfg.block_n),)](
        x, norm_weight if norm_weight is not None else x, weight, bias if bias is not None else x,
        residual if residual is not None else out, out,
        n, k, weight.stride(0), eps,
        PROLOGUE=prologue, HAS_BIAS=bias is not None, ADD_RESIDUAL=residual is not None,
        EVEN_N=n % cfg.block_n == 0, EVEN_K=k % cfg.block_k == 0,
        BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, NORM_BLOCK=min(next_pow2(k), 4096),
        NUM_STAGES=cfg.num_stages, num_warps=cfg.num_warps,
    )
    return out
