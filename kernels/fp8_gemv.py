"""Batch-1 FP8 weight-only GEMV: `y[n] = (Σ_k q_w[n, k] · x[k]) · w_scale[n] (+ bias[n]) (+ residual[n])`,
with the RMSNorm / SiLU-and-mul prologues of `kernels.gemv` (the fused batch-1 decode path).

At batch 1 a decode step is bound by streaming the weights once; FP8 weights halve those bytes. The
weight [N, K] (float8_e4m3fn, rows contiguous) is read once, upcast in registers and multiplied with
the 16-bit activation row in fp32 — the activations are not quantized here (they are one row, free to
keep exact), so this path is more accurate than the W8A8 GEMM used for larger batches. The
per-channel scale and the bias are the epilogue.

Tiling follows `kernels.gemv`: each program owns BLOCK_N output rows and keeps a [BLOCK_N, BLOCK_K]
fp32 partial tile, reduced once after the K loop. An fp8 K-chunk is half the bytes of a bf16 one, so
the default chunk is twice as long. Optional split-K (SPLIT_K programs per row block, each a
contiguous K range) for projections with too few row blocks to fill the GPU: partials go to an fp32
workspace [SPLIT_K, N] and a second launch reduces them in a fixed order (deterministic, no atomics)
and applies the epilogue.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from kernels._common import device_num_sms, next_pow2
from kernels.fp8_gemv_lean import _fp8_lean_k_loop
from kernels.fp8_gemv_ring import _fp8_ring_k_loop
from kernels.fp8_quant import FP8_DTYPE

# The prologue / epilogue helpers of the bf16 fused GEMV: FP8 layers round exactly as bf16 ones do.
from kernels.gemv import (  # noqa: I001
    PROLOGUE_NONE,
    PROLOGUE_RMSNORM,
    PROLOGUE_SILU_MUL,
    _epilogue_store,
    _load_x,
    _row_rstd,
)
from kernels.pdl import allow_dependents, trigger_options, wait_for_prior_kernel
from kernels.pdl import kernel_options as pdl_kernel_options
from kernels.quant_gemv_configs import FP8_TUNED_ENV, tuned_entry


class Fp8GemvConfig(NamedTuple):
    block_n: int  # output rows per program
    block_k: int  # K-chunk per loop iteration (fp8 elements)
    num_warps: int
    num_stages: int = 1
    split_k: int = 1  # programs sharing one row block along K
    # 1: tensor-core variant (x as the one live row of a [16, BLOCK_K] fp16 tile, `tl.dot` with the
    # fp16-converted weight tile). The CUDA-core loop needs two conversions per weight (e4m3x2 -> f16x2,
    # then f16 -> f32, both on the SM's narrow conversion pipe: ~2.8e12 weights/s on an H200, about the
    # rate measured); mma takes the f16 weights as they are. 16-bit x only; block_n, block_k >= 16.
    use_dot: int = 0
    # N >= 1 (1-4): the lean CUDA-core loop (`kernels.fp8_gemv_lean`), from its sm_90 SASS: no shared memory and
    # no bar.sync in the K loop, each x element (and its prologue) computed once per thread per chunk for all
    # BLOCK_N rows, one fp32 accumulator per row per thread, and N weight chunks requested per iteration before
    # any math. Barrier-free when block_k = 256 x num_warps (8 columns per thread; other block_k are correct
    # but move x through shared memory again). The lean loop won every 8B projection on an H200 (layer 72.7 ->
    # 67.2 us; kernels.quant_gemv_configs.FP8_TUNED). (Decoding e4m3 on the integer pipe instead of the
    # conversion pipe, in this loop and the plain one, lost 2-5x there and was removed, tenth session.)
    lean: int = 0
    # 1 / 2: the ring loop (`kernels.fp8_gemv_ring`) with that many register slots: the lean loop's layout with
    # weights read as int32 words and the next chunk requested before this chunk's math (bytes in flight all the
    # time). 16-bit x, K % 4 == 0; elsewhere the config's lean / plain loop runs.
    ring: int = 0
    # 1 to lean - 1: with PDL, the lean loop requests only this many chunks of its first iteration before waiting
    # for the kernel that wrote x (the rest right after the wait); 0: all of them. For GEMVs launched while the
    # kernel before them still streams (o after the early-KV attention, qkv after down, down after gate_up): their
    # pre-wait requests queue in DRAM ahead of that kernel's last loads (kernels/quant_gemv_configs.py, H100).
    prewait: int = 0


@triton.jit
def _fp8_gemv_kernel(
    x_ptr, norm_w_ptr, w_ptr, scale_ptr, bias_ptr, res_ptr, out_ptr, ws_ptr,
    N, K, K_PER_SPLIT, stride_wn, eps,
    PROLOGUE: tl.constexpr, HAS_BIAS: tl.constexpr, ADD_RESIDUAL: tl.constexpr, SPLIT: tl.constexpr,
    EVEN_N: tl.constexpr, EVEN_K: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, NORM_BLOCK: tl.constexpr, NUM_STAGES: tl.constexpr,
    USE_DOT: tl.constexpr = False, LEAN: tl.constexpr = 0, PDL: tl.constexpr = False, RING: tl.constexpr = 0,
    ASM: tl.constexpr = 0, TRIGGER: tl.constexpr = False, PREWAIT: tl.constexpr = 0,
):
    allow_dependents(TRIGGER)
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    dtype = out_ptr.dtype.element_ty
    w_rows = w_ptr + offs_n.to(tl.int64)[:, None] * stride_wn
    offs_k0 = tl.arange(0, BLOCK_K)
    k_begin = pid_k * K_PER_SPLIT
    k_end = tl.minimum(k_begin + K_PER_SPLIT, K)

    if PDL and not (LEAN or RING):  # the lean / ring loops wait after their first weight loads (kernels/pdl.py)
        wait_for_prior_kernel()
    rstd = 1.0
    if PROLOGUE == 1 and not (LEAN or RING):  # the lean / ring loops compute it after their first weight loads
        rstd = _row_rstd(x_ptr, K, eps, NORM_BLOCK)

    if RING:
        y = _fp8_ring_k_loop(x_ptr, norm_w_ptr, w_ptr, offs_n, mask_n, stride_wn, k_begin, k_end, K, eps, dtype,
                             PROLOGUE, EVEN_N, BLOCK_N, BLOCK_K, NORM_BLOCK, RING, ASM, PDL)
    elif LEAN:
        y = _fp8_lean_k_loop(x_ptr, norm_w_ptr, w_rows, mask_n, k_begin, k_end, K, eps, dtype, PROLOGUE, EVEN_N,
                             EVEN_K, BLOCK_N, BLOCK_K, NORM_BLOCK, LEAN, PDL, PREWAIT)
    elif USE_DOT:
        # x goes through fp16 scaled by 2^-8 (exact; bf16 values up to 2^24 stay finite, products and
        # sums are fp32 in the mma), as row 0 of a 16-row tile (mma's smallest M); rows 1..15 are zero.
        rows = tl.arange(0, 16)
        acc_d = tl.zeros([16, BLOCK_N], dtype=tl.float32)
        w_cols = w_ptr + offs_n.to(tl.int64)[None, :] * stride_wn  # the weight tile as [BLOCK_K, BLOCK_N]
        for k0 in tl.range(k_begin, k_end, BLOCK_K, num_stages=NUM_STAGES):
            offs_k = k0 + offs_k0
            if EVEN_N and EVEN_K:
                wt = tl.load(w_cols + offs_k[:, None], eviction_policy="evict_first")
            else:
                wt = tl.load(w_cols + offs_k[:, None], mask=(offs_k < k_end)[:, None] & mask_n[None, :], other=0.0,
                             eviction_policy="evict_first")
            xk = _load_x(x_ptr, norm_w_ptr, offs_k, K, rstd, dtype, PROLOGUE) * 0.00390625
            a = tl.where(rows[:, None] == 0, xk[None, :], 0.0).to(tl.float16)
            acc_d = tl.dot(a, wt.to(tl.float16), acc_d)
        y = tl.sum(tl.where(rows[:, None] == 0, acc_d, 0.0), 0) * 256.0  # [BLOCK_N], unscaled
    else:
        acc = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
        for k0 in tl.range(k_begin, k_end, BLOCK_K, num_stages=NUM_STAGES):
            offs_k = k0 + offs_k0
            # Weights are streamed once per step: evict_first keeps x (and the KV cache) in L2.
            if EVEN_N and EVEN_K:
                w = tl.load(w_rows + offs_k[None, :], eviction_policy="evict_first")
            else:
                w = tl.load(w_rows + offs_k[None, :], mask=mask_n[:, None] & (offs_k < k_end)[None, :], other=0.0,
                            eviction_policy="evict_first")
            # x past this split's k_end meets zero weights; past K it is masked inside _load_x.
            acc += w.to(tl.float32) * _load_x(x_ptr, norm_w_ptr, offs_k, K, rstd, dtype, PROLOGUE)[None, :]
        y = tl.sum(acc, 1)  # [BLOCK_N], unscaled

    if SPLIT:
        tl.store(ws_ptr + pid_k * N + offs_n, y, mask=mask_n)
    else:
        y = y * tl.load(scale_ptr + offs_n, mask=mask_n, other=0.0)
        _epilogue_store(y, offs_n, mask_n, bias_ptr, res_ptr, out_ptr, HAS_BIAS, ADD_RESIDUAL)


@triton.jit
def _split_k_reduce_kernel(ws_ptr, scale_ptr, bias_ptr, res_ptr, out_ptr, N, SPLIT_K: tl.constexpr,
                           HAS_BIAS: tl.constexpr, ADD_RESIDUAL: tl.constexpr, BLOCK: tl.constexpr,
                           PDL: tl.constexpr = False, TRIGGER: tl.constexpr = False):
    allow_dependents(TRIGGER)
    if PDL:  # the partials are the GEMV's, just launched
        wait_for_prior_kernel()
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    y = tl.zeros([BLOCK], dtype=tl.float32)
    for s in tl.static_range(SPLIT_K):
        y += tl.load(ws_ptr + s * N + offs, mask=mask, other=0.0)
    y = y * tl.load(scale_ptr + offs, mask=mask, other=0.0)
    _epilogue_store(y, offs, mask, bias_ptr, res_ptr, out_ptr, HAS_BIAS, ADD_RESIDUAL)


def default_config(n: int, k: int, device: torch.device) -> Fp8GemvConfig:
    """Starting tiles (bench/fp8_gemv_bench.py sweeps them on the device): the bf16 GEMV's winners
    with the K-chunk doubled (same bytes per load). Split-K only when the row blocks alone would leave
    the SMs under-filled (fewer than two programs per SM), e.g. small N after tensor-parallel splits."""
    if k <= 8192:
        cfg = Fp8GemvConfig(block_n=8, block_k=min(next_pow2(k), 2048), num_warps=8, num_stages=1)
    else:
        cfg = Fp8GemvConfig(block_n=8, block_k=1024, num_warps=4, num_stages=3)
    blocks = triton.cdiv(n, cfg.block_n)
    target = 2 * device_num_sms(device)
    if device.type == "cuda" and blocks < target:
        split = min(triton.cdiv(target, blocks), max(k // (4 * cfg.block_k), 1), 8)
        cfg = cfg._replace(split_k=max(split, 1))
    return cfg


def pick_config(n: int, k: int, device: torch.device) -> Fp8GemvConfig:
    """This device's swept tile (`kernels.quant_gemv_configs`: FP8_TUNED, overlaid by the file named in
    TESSERA_FP8_GEMV_TUNED), else `default_config`. Fields this version no longer has (an overlay written by an
    older sweep, e.g. `int_convert`) are dropped."""
    entry = tuned_entry(FP8_TUNED_ENV, device, n, k)
    if entry is None:
        return default_config(n, k, device)
    return Fp8GemvConfig(**{key: value for key, value in entry.items() if key in Fp8GemvConfig._fields})


def fp8_gemv(
    x: torch.Tensor,  # [1, K], or [1, 2K] (gate | up) with silu_mul; bf16/fp16/fp32
    w_q: torch.Tensor,  # [N, K] float8_e4m3fn, rows contiguous
    w_scale: torch.Tensor,  # [N] fp32 per output channel
    bias: torch.Tensor | None = None,  # [N]
    *,
    norm_weight: torch.Tensor | None = None,  # [K]: RMSNorm prologue with this gamma
    eps: float = 1e-6,
    silu_mul: bool = False,
    residual: torch.Tensor | None = None,  # [1, N]: y += residual (may alias `out`)
    out: torch.Tensor | None = None,  # [1, N], dtype of x
    config: Fp8GemvConfig | None = None,
    trigger_dependents: bool = False,  # a PDL launch after this GEMV may start as its last kernel's programs start
    programmatic: bool | None = None,  # launch with PDL (kernels/pdl.py); None: as `TESSERA_PDL` says
) -> torch.Tensor:
    """Prologues and epilogue as in `kernels.gemv.fused_gemv` (same rounding: its helpers are reused),
    so the batch-1 fused decode path runs FP8 layers unchanged."""
    assert w_q.dim() == 2 and w_q.dtype == FP8_DTYPE and w_q.stride(1) == 1, (
        f"weight: expected [N, K] float8_e4m3fn with contiguous rows, got {w_q.dtype} {tuple(w_q.shape)} "
        f"strides {w_q.stride()}")
    n, k = w_q.shape
    dtype = x.dtype
    assert not (silu_mul and norm_weight is not None), "one prologue at a time"
    x_len = 2 * k if silu_mul else k
    assert x.dim() == 2 and x.shape == (1, x_len) and x.stride(1) == 1, (
        f"x: expected shape (1, {x_len}), got {tuple(x.shape)}")
    assert w_scale.dtype == torch.float32 and w_scale.shape == (n,) and w_scale.is_contiguous(), (
        f"weight_scale: expected fp32 [{n}], got {w_scale.dtype} {tuple(w_scale.shape)}")
    prologue = PROLOGUE_SILU_MUL if silu_mul else PROLOGUE_NONE
    if norm_weight is not None:
        assert norm_weight.shape == (k,) and norm_weight.is_contiguous(), f"norm_weight {tuple(norm_weight.shape)}"
        prologue = PROLOGUE_RMSNORM
    if bias is not None:
        assert bias.shape == (n,) and bias.is_contiguous(), f"bias {tuple(bias.shape)}"
    if residual is not None:
        assert residual.shape == (1, n) and residual.dtype == dtype and residual.stride(1) == 1, (
            f"residual: expected (1, {n}) {dtype}, got {tuple(residual.shape)} {residual.dtype}")
    if out is None:
        out = torch.empty((1, n), dtype=dtype, device=x.device)
    assert out.shape == (1, n) and out.dtype == dtype and out.is_contiguous(), f"out {tuple(out.shape)} {out.dtype}"
    cfg = config or pick_config(n, k, x.device)
    assert cfg.block_n & (cfg.block_n - 1) == 0 and cfg.block_k & (cfg.block_k - 1) == 0, f"{cfg}: powers of 2"
    assert cfg.num_warps in (1, 2, 4, 8, 16) and cfg.num_stages >= 1, f"{cfg}: num_warps / num_stages"
    use_dot = bool(cfg.use_dot) and dtype in (torch.float16, torch.bfloat16)  # fp32 x: the exact FMA loop
    if use_dot:
        assert cfg.block_n >= 16 and cfg.block_k >= 16, f"{cfg}: the tensor-core variant needs tiles >= 16"
    lean = int(cfg.lean) if not use_dot else 0
    assert 0 <= cfg.ring <= 2, f"{cfg}: ring is the number of register slots (1-2)"
    ring = int(cfg.ring) * int(not use_dot and dtype in (torch.float16, torch.bfloat16) and k % 4 == 0
               and w_q.stride(0) % 4 == 0 and cfg.block_k % 4 == 0)
    assert 0 <= lean <= 4, f"{cfg}: lean is the number of chunks per loop iteration (1-4)"
    assert not lean or cfg.block_k >= 8, f"{cfg}: the lean loop folds 8 columns per thread"
    assert 0 <= cfg.prewait < max(lean, 1), f"{cfg}: prewait is 0 (all) or fewer than lean chunks"
    split = max(int(cfg.split_k), 1)
    # Each split gets whole K-chunks, so only the last split (or a ragged K) needs masks.
    k_per_split = triton.cdiv(triton.cdiv(k, split), cfg.block_k) * cfg.block_k
    split = triton.cdiv(k, k_per_split)
    ws = torch.empty((split, n), dtype=torch.float32, device=x.device) if split > 1 else out
    dummy = w_scale  # any valid pointer for the operands a specialisation does not read
    pdl_meta = pdl_kernel_options(x.device, programmatic)
    _fp8_gemv_kernel[(triton.cdiv(n, cfg.block_n), split)](
        x, norm_weight if norm_weight is not None else dummy, w_q, w_scale, bias if bias is not None else dummy,
        residual if residual is not None else out, out, ws,
        n, k, k_per_split, w_q.stride(0), eps,
        PROLOGUE=prologue, HAS_BIAS=bias is not None, ADD_RESIDUAL=residual is not None and split == 1,
        SPLIT=split > 1, EVEN_N=n % cfg.block_n == 0,
        EVEN_K=k % k_per_split == 0 and k_per_split % cfg.block_k == 0,
        BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, NORM_BLOCK=min(next_pow2(k), 4096),
        NUM_STAGES=cfg.num_stages, USE_DOT=use_dot, LEAN=0 if ring else lean, RING=ring,
        ASM=int(x.device.type == "cuda"), PREWAIT=cfg.prewait, num_warps=cfg.num_warps, **pdl_meta,
        **trigger_options(x.device, trigger_dependents and split == 1),
    )
    if split > 1:
        block = min(next_pow2(n), 1024)
        _split_k_reduce_kernel[(triton.cdiv(n, block),)](
            ws, w_scale, bias if bias is not None else dummy, residual if residual is not None else out, out, n,
            SPLIT_K=split, HAS_BIAS=bias is not None, ADD_RESIDUAL=residual is not None, BLOCK=block, num_warps=4,
            **pdl_meta, **trigger_options(x.device, trigger_dependents))
    return out
