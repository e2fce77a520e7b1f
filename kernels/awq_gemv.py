"""Batch-1 W4A16 GEMV on AutoAWQ GEMM-packed weights (layout: `kernels.awq_gemm`): one row, split over K so a
4096-wide output still fills the GPU; splits hold whole groups.

- The nibble-plane loop (default, `planes=1`) keeps each of the 8 nibble positions as its own 2-D tile in the
  layout the int32 words were loaded in: a mask-and-OR into 2^23's mantissa, one fsub (removing 2^23 and the
  zero point at once, exactly) and an FMA per weight, the scale once per group, one cross-thread reduction at
  the end. It also runs the fused decode path's RMSNorm / SiLU prologues and bias / residual epilogue
  (`kernels.gemv`'s helpers, same rounding).
  `lean=1` runs its group loop leaner in SASS (`kernels.awq_planes`, with the per-plane helpers). A pipelined
  variant (weight loads kept in flight across groups, an L2 prefetch of the next group) tied or lost on an
  H200 and was removed (bench/RESULTS.md, ninth session).
- The older loop (`planes=0`) factors scale and zero out of a group and reduces a 3-D tile every group.
- `use_gemm=1` runs the row through `kernels.awq_gemm.awq_gemm` as a 16-row tile.
- `mma=1` (`kernels.awq_mma`): int4 -> fp16 (q - z) pairs by LOP3 + one fp16x2 op per pair, the multiply-add
  on the tensor cores (wgmma, x as a 16-column B tile), the scale once per group in fp32; with the prologues
  and the epilogue. ~2.0-2.8 SASS instructions per weight against the lean loop's 4.3-4.7 (no device timing yet).

Partial sums go to an fp32 [split_k, N] buffer; the last split to finish a column block (an arrival counter)
sums them in a fixed order, so the result is the same bits run to run and the whole op is one launch.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from kernels._common import device_num_sms, next_pow2
from kernels.awq_gemm import PACK, AwqGemmConfig, _block_k, _check_packed, _check_x, awq_gemm
from kernels.awq_mma import _awq_mma_kernel
from kernels.awq_planes import (
    MAGIC_2P23,
    _add_scaled_planes,
    _awq_lean_groups,
    _plane_dots,
    _planes_out,
    _zero_planes,
    _zero_tiles,
)
from kernels.gemv import (
    PROLOGUE_NONE,
    PROLOGUE_RMSNORM,
    PROLOGUE_SILU_MUL,
    _epilogue_store,
    _load_x,
    _row_rstd,
)
from kernels.quant_gemv_configs import AWQ_TUNED_ENV, tuned_entry


class AwqGemvConfig(NamedTuple):
    # The defaults are the nibble-plane loop's H200 winner for 3 of the 8B shape's 4 projections (2026-12-03).
    block_n: int = 128  # output columns per program (a power of 2 >= 8: whole packs)
    block_k: int = 16  # K rows per loop step; must divide the group size
    num_warps: int = 4
    split_k: int | None = None  # None: enough K splits for ~4 programs per SM
    num_stages: int = 1  # the older loop only: Triton's software pipelining of the group loop
    # 1: run the row through `awq_gemm` (x as a 16-row tile, block_n / block_k / warps / stages / split_k
    # from here): mma instead of one fp32 FMA per weight, weights pipelined through shared memory.
    use_gemm: int = 0
    # 1: the nibble-plane loop (`_awq_gemv_planes_kernel`): 2-D tiles only, ~3 ops per weight, no
    # cross-thread reduction until the end (its num_stages is unused: a group's loads are unrolled).
    # 0: the older loop (one [BLOCK_K, PACKS, 8] reduction per group; no fused prologues).
    planes: int = 1
    # 1 (nibble-plane loop only): the lean group loop, from its sm_90 SASS (bench/kernel_sass.py, bench/NOTES.md
    # 2026-12-03 eighth session). x is loaded as a [BLOCK_K] row vector and broadcast (the [BLOCK_K, PACKS]
    # x load got its own layout and went through shared memory: 2 bar.syncs per K chunk, which kept a
    # thread to ~1 weight load in flight); 2^23's exponent is a runtime register, so mask-and-OR is one LOP3
    # (two immediates took two); weight pointers advance by a scalar instead of being rebuilt per chunk.
    lean: int = 0
    # 1: the tensor-core loop (`kernels.awq_mma`, 2026-12-03 ninth session): int4 -> fp16 (q - z) pairs with
    # LOP3 + one fp16x2 op per pair, x as row 0 of a 16-row fp16 tile, `tl.dot` (fp32 mma accumulation over a
    # group), the scale once per group in fp32. ~1.1 CUDA-core instructions per weight for the dequant instead
    # of the plane loop's ~4.4 for dequant + FFMA. 16-bit x only (fp32 x runs the plane loop); block_n and
    # block_k >= 16. Has the prologues and the epilogue. The other loop fields (planes, lean) are unused.
    mma: int = 0


@triton.jit
def _awq_gemv_kernel(x_ptr, qw_ptr, qz_ptr, sc_ptr, part_ptr, lock_ptr, out_ptr, N, K, K_PER_SPLIT, stride_q,
                     GROUP: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr):
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    PACKS: tl.constexpr = BLOCK_N // 8
    offs_p = pid_n * PACKS + tl.arange(0, PACKS)  # packed columns [PACKS]
    cols = tl.arange(0, 8)
    shifts = ((cols // 2) + (cols % 2) * 4) * 4  # [8]
    offs_n = offs_p[:, None] * 8 + cols[None, :]  # [PACKS, 8] logical columns
    mask_p = offs_p < N // 8
    mask_n = offs_n < N
    acc = tl.zeros((PACKS, 8), dtype=tl.float32)
    k_start = pid_k * K_PER_SPLIT  # splits hold whole groups
    k_end = tl.minimum(k_start + K_PER_SPLIT, K)
    for g0 in range(k_start, k_end, GROUP):
        # Within a group: per-thread sums of x*q and of x, no cross-thread traffic; the one reduction over
        # K and the group's scale and zero come after (sum_k x (q - z) s = s (sum_k x q - z sum_k x)).
        xq3 = tl.zeros((BLOCK_K, PACKS, 8), dtype=tl.float32)
        xs2 = tl.zeros((BLOCK_K, PACKS), dtype=tl.float32)
        # Unrolled (a group is a few chunks): all of a group's weight loads can be issued before the
        # first FMA, so a program keeps GROUP rows in flight instead of one BLOCK_K chunk per round trip.
        for kk in tl.static_range(0, GROUP, BLOCK_K):
            offs_k = g0 + kk + tl.arange(0, BLOCK_K)
            # x in the same [BLOCK_K, PACKS] layout as the weights: each thread loads only its own rows.
            xk = tl.load(x_ptr + offs_k[:, None] + 0 * offs_p[None, :]).to(tl.float32)
            packed = tl.load(qw_ptr + offs_k[:, None] * stride_q + offs_p[None, :], mask=mask_p[None, :], other=0,
                             eviction_policy="evict_first")  # [BLOCK_K, PACKS] int32
            # int4 -> fp32 without the (quarter-rate) int-to-float convert: OR the nibble into the mantissa
            # of 2^23, then subtract 2^23; both steps are exact.
            nib = (packed[:, :, None] >> shifts[None, None, :]) & 0xF
            q = (nib | 0x4B000000).to(tl.float32, bitcast=True) - 8388608.0  # [BLOCK_K, PACKS, 8]
            xq3 += q * xk[:, :, None]
            xs2 += xk
        g = g0 // GROUP
        zp = tl.load(qz_ptr + g * stride_q + offs_p, mask=mask_p, other=0)  # [PACKS]
        z = ((zp[:, None] >> shifts[None, :]) & 0xF).to(tl.float32)  # [PACKS, 8]
        s = tl.load(sc_ptr + g * N + offs_n, mask=mask_n, other=0.0).to(tl.float32)  # [PACKS, 8]
        acc += s * (tl.sum(xq3, axis=0) - z * tl.sum(xs2, axis=0)[:, None])
    if SPLIT_K == 1:
        tl.store(out_ptr + offs_n, acc.to(out_ptr.dtype.element_ty), mask=mask_n)
    else:
        tl.store(part_ptr + pid_k * N + offs_n, acc, mask=mask_n)
        # The last of this column block's SPLIT_K programs to arrive (acq_rel: the others' partials are
        # visible to it) sums the partials in split order, so the result is the same bits every run, and
        # resets the counter for the next launch. One launch, no separate reduce or cast kernel.
        tl.debug_barrier()  # every thread's partial stores precede the (single-thread, releasing) arrival
        arrived = tl.atomic_add(lock_ptr + pid_n, 1, sem="acq_rel", scope="gpu")
        if arrived == SPLIT_K - 1:
            total = tl.zeros((PACKS, 8), dtype=tl.float32)
            for split_idx in range(SPLIT_K):
                total += tl.load(part_ptr + split_idx * N + offs_n, mask=mask_n, other=0.0, cache_modifier=".cg")
            tl.store(out_ptr + offs_n, total.to(out_ptr.dtype.element_ty), mask=mask_n)
            tl.atomic_xchg(lock_ptr + pid_n, 0)


@triton.jit
def _awq_gemv_planes_kernel(x_ptr, norm_w_ptr, qw_ptr, qz_ptr, sc_ptr, bias_ptr, res_ptr, part_ptr, lock_ptr, out_ptr,
                            N, K, K_PER_SPLIT, stride_q, eps, magic,
                            GROUP: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                            SPLIT_K: tl.constexpr, PROLOGUE: tl.constexpr, HAS_BIAS: tl.constexpr,
                            ADD_RESIDUAL: tl.constexpr, NORM_BLOCK: tl.constexpr, LEAN: tl.constexpr = 0,
                            ASM: tl.constexpr = 0):
    # The prologues (RMSNorm of x, SiLU(gate) * up) and the epilogue (bias, residual) are those of
    # `kernels.gemv` (its helpers, so the rounding is the same): the batch-1 fused decode path.
    # The weight tile stays [BLOCK_K, PACKS] int32 as loaded (16-byte loads along the packs); each of the 8
    # nibble planes is a [BLOCK_K, PACKS] fp32 tile in the same register layout, so nothing is reshaped or
    # shuffled between threads in the loop. Per group, per plane: g = sum over the group's rows of (q - z) x
    # (in-thread, rows stay rows), then acc += g * s (elementwise, once per group); the rows are summed across
    # threads once, at the end. The older `_awq_gemv_kernel` reduced a [BLOCK_K, PACKS, 8] tile every group.
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    PACKS: tl.constexpr = BLOCK_N // 8
    offs_p = pid_n * PACKS + tl.arange(0, PACKS)
    mask_p = offs_p < stride_q
    rows = tl.arange(0, BLOCK_K)
    dtype = out_ptr.dtype.element_ty
    rstd = 1.0
    if PROLOGUE == 1:
        rstd = _row_rstd(x_ptr, K, eps, NORM_BLOCK)
    # Eight named tiles, not a list: what a Triton loop carries must be plain tensors.
    a0, a1, a2, a3, a4, a5, a6, a7 = _zero_tiles(BLOCK_K, PACKS)
    k_start = pid_k * K_PER_SPLIT  # splits hold whole groups
    k_end = tl.minimum(k_start + K_PER_SPLIT, K)
    if LEAN:
        a0, a1, a2, a3, a4, a5, a6, a7 = _awq_lean_groups(
            x_ptr, norm_w_ptr, qw_ptr, qz_ptr, sc_ptr, N, K, stride_q, magic, rstd, k_start, k_end, offs_p, mask_p,
            rows, a0, a1, a2, a3, a4, a5, a6, a7, dtype, GROUP, BLOCK_K, PROLOGUE, ASM)
    else:
        for g0 in range(k_start, k_end, GROUP):
            g = g0 // GROUP
            zw = tl.load(qz_ptr + g * stride_q + offs_p, mask=mask_p, other=0)
            z0, z1, z2, z3, z4, z5, z6, z7 = _zero_planes(zw, magic, 0, ASM)
            g_0, g_1, g_2, g_3, g_4, g_5, g_6, g_7 = _zero_tiles(BLOCK_K, PACKS)
            # Unrolled: all of a group's weight loads can be in flight before the first FMA.
            for kk in tl.static_range(0, GROUP, BLOCK_K):
                offs_k = g0 + kk + rows
                if PROLOGUE == 0:
                    # x in the weights' layout: each thread loads only its own rows (an L1 broadcast).
                    xk = tl.load(x_ptr + offs_k[:, None] + 0 * offs_p[None, :]).to(tl.float32)
                else:
                    xk = _load_x(x_ptr, norm_w_ptr, offs_k, K, rstd, dtype, PROLOGUE)[:, None]
                w = tl.load(qw_ptr + offs_k[:, None] * stride_q + offs_p[None, :], mask=mask_p[None, :], other=0,
                            eviction_policy="evict_first")
                g_0, g_1, g_2, g_3, g_4, g_5, g_6, g_7 = _plane_dots(
                    w, xk, magic, z0, z1, z2, z3, z4, z5, z6, z7, g_0, g_1, g_2, g_3, g_4, g_5, g_6, g_7, 0, ASM)
            a0, a1, a2, a3, a4, a5, a6, a7 = _add_scaled_planes(sc_ptr, g, N, offs_p, mask_p, g_0, g_1, g_2, g_3,
                                                                g_4, g_5, g_6, g_7, a0, a1, a2, a3, a4, a5, a6, a7)
    _planes_out(a0, a1, a2, a3, a4, a5, a6, a7, offs_p, mask_p, part_ptr + pid_k * N, bias_ptr, res_ptr, out_ptr,
                SPLIT_K, HAS_BIAS, ADD_RESIDUAL)
    if SPLIT_K > 1:  # the last split to arrive sums the partials in split order (as `_awq_gemv_kernel`)
        tl.debug_barrier()
        arrived = tl.atomic_add(lock_ptr + pid_n, 1, sem="acq_rel", scope="gpu")
        if arrived == SPLIT_K - 1:
            offs_n = offs_p[:, None] * 8 + tl.arange(0, 8)[None, :]
            mask_n = offs_n < N
            total = tl.zeros((PACKS, 8), dtype=tl.float32)
            for split_idx in range(SPLIT_K):
                total += tl.load(part_ptr + split_idx * N + offs_n, mask=mask_n, other=0.0, cache_modifier=".cg")
            _epilogue_store(total, offs_n, mask_n, bias_ptr, res_ptr, out_ptr, HAS_BIAS, ADD_RESIDUAL)
            tl.atomic_xchg(lock_ptr + pid_n, 0)


def gemv_locks(n: int, device: torch.device) -> torch.Tensor:
    """Split-K arrival counters for outputs up to `n` wide, enough for any block_n: zeros that every
    launch leaves zeroed. Allocate once per layer at load; launches then allocate nothing but their fp32
    partials (CUDA-graph friendly)."""
    return torch.zeros(triton.cdiv(n, PACK), dtype=torch.int32, device=device)


def awq_gemv(x: torch.Tensor, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
             group_size: int, config: AwqGemvConfig | None = None,
             locks: torch.Tensor | None = None, *,
             norm_weight: torch.Tensor | None = None,  # [K]: RMSNorm prologue with this gamma
             eps: float = 1e-6,
             silu_mul: bool = False,  # x is [1, 2K] (gate | up): SiLU(gate) * up prologue
             bias: torch.Tensor | None = None,  # [N], added in fp32 before the rounding
             residual: torch.Tensor | None = None) -> torch.Tensor:  # [1, N]: y += residual
    """x [1, K] -> [1, N] in x's dtype. `locks`: from `gemv_locks` (a zeroed buffer is made if None);
    two launches must not share one concurrently (one per layer, one stream, is safe). The keyword
    prologues / epilogue are `kernels.gemv.fused_gemv`'s (same rounding), for the batch-1 fused decode
    path; they run on the nibble-plane loop and on the tensor-core loop (`mma=1`)."""
    k, n = _check_packed(qweight, qzeros, scales, group_size)
    assert not (silu_mul and norm_weight is not None), "one prologue at a time"
    _check_x(x, 2 * k if silu_mul else k, scales)
    assert x.shape[0] == 1, f"x: awq_gemv takes one row, got {x.shape[0]}"
    fused = silu_mul or norm_weight is not None or bias is not None or residual is not None
    if norm_weight is not None:
        assert norm_weight.shape == (k,), f"norm_weight: expected [{k}], got {tuple(norm_weight.shape)}"
    if bias is not None:
        assert bias.shape == (n,), f"bias: expected [{n}], got {tuple(bias.shape)}"
    if residual is not None:
        assert residual.shape == (1, n) and residual.is_contiguous(), f"residual: expected [1, {n}] contiguous"
    if config is None:
        # This device's swept tile (kernels.quant_gemv_configs: AWQ_TUNED / TESSERA_AWQ_GEMV_TUNED), keyed
        # by the logical [N, K]; tiles whose block_k does not divide this group size fall back to defaults.
        entry = tuned_entry(AWQ_TUNED_ENV, x.device, n, k)
        config = AwqGemvConfig(**entry) if entry is not None else None
        if config is not None and group_size % min(config.block_k, group_size):
            config = None
    cfg = config or AwqGemvConfig()
    if cfg.mma and x.dtype not in (torch.float16, torch.bfloat16):
        cfg = cfg._replace(mma=0, planes=1)  # the tensor-core loop rounds x to fp16: fp32 x takes the plane loop
    if fused and not cfg.mma and (cfg.use_gemm or not cfg.planes):
        cfg = AwqGemvConfig()  # only the nibble-plane and tensor-core loops have the prologues and the epilogue
    assert cfg.block_n >= PACK and (cfg.block_n & (cfg.block_n - 1)) == 0, f"{cfg}: block_n a power of 2 >= 8"
    if cfg.mma:
        assert cfg.block_n >= 16 and cfg.block_k >= 16, f"{cfg}: the tensor-core loop needs block_n, block_k >= 16"
    if cfg.use_gemm and not cfg.mma:
        gemm_cfg = AwqGemmConfig(block_m=16, block_n=cfg.block_n, block_k=cfg.block_k, num_warps=cfg.num_warps,
                                 num_stages=cfg.num_stages, split_k=cfg.split_k)
        return awq_gemm(x, qweight, qzeros, scales, group_size, config=gemm_cfg, locks=locks)
    block_k = _block_k(group_size, cfg.block_k)
    num_n = triton.cdiv(n, cfg.block_n)
    num_groups = k // group_size
    split = cfg.split_k or max(1, min(num_groups, triton.cdiv(4 * device_num_sms(x.device), num_n)))
    k_per_split = triton.cdiv(num_groups, split) * group_size  # whole groups per split
    split = triton.cdiv(k, k_per_split)
    out = torch.empty((1, n), dtype=x.dtype, device=x.device)
    partials = out
    if split > 1:
        partials = torch.empty((split, n), dtype=torch.float32, device=x.device)
        if locks is None:
            locks = gemv_locks(n, x.device)
        assert locks.dtype == torch.int32 and locks.numel() >= num_n, f"locks: need {num_n} int32 counters"
    prologue = PROLOGUE_SILU_MUL if silu_mul else PROLOGUE_RMSNORM if norm_weight is not None else PROLOGUE_NONE
    if cfg.mma:
        # bf16 x goes through fp16 scaled by 2^-8 (its range); fp16 x is exact as it is.
        _awq_mma_kernel[(num_n, split)](
            x, norm_weight if norm_weight is not None else x, qweight, qzeros, scales,
            bias if bias is not None else out, residual if residual is not None else out, partials,
            locks if locks is not None else out, out, n, k, k_per_split, n // PACK, eps,
            GROUP=group_size, BLOCK_N=cfg.block_n, BLOCK_K=block_k, SPLIT_K=split, PROLOGUE=prologue,
            HAS_BIAS=bias is not None, ADD_RESIDUAL=residual is not None, NORM_BLOCK=min(next_pow2(k), 4096),
            X_SCALE=0.00390625 if x.dtype == torch.bfloat16 else 1.0, ASM=int(x.device.type == "cuda"),
            num_warps=cfg.num_warps, num_stages=cfg.num_stages)
        return out
    if cfg.planes:
        _awq_gemv_planes_kernel[(num_n, split)](
            x, norm_weight if norm_weight is not None else x, qweight, qzeros, scales,
            bias if bias is not None else out, residual if residual is not None else out, partials,
            locks if locks is not None else out, out, n, k, k_per_split, n // PACK, eps, MAGIC_2P23,
            GROUP=group_size, BLOCK_N=cfg.block_n, BLOCK_K=block_k, SPLIT_K=split, PROLOGUE=prologue,
            HAS_BIAS=bias is not None, ADD_RESIDUAL=residual is not None, NORM_BLOCK=min(next_pow2(k), 4096),
            LEAN=cfg.lean, ASM=int(x.device.type == "cuda"), num_warps=cfg.num_warps)
        return out
    _awq_gemv_kernel[(num_n, split)](x, qweight, qzeros, scales, partials, locks if locks is not None else out,
                                     out, n, k, k_per_split, n // PACK, GROUP=group_size, BLOCK_N=cfg.block_n,
                                     BLOCK_K=block_k, SPLIT_K=split, num_warps=cfg.num_warps,
                                     num_stages=cfg.num_stages)
    return out
