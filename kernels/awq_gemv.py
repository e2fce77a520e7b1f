"""Batch-1 W4A16 GEMV on AutoAWQ GEMM-packed weights (layout: `kernels.awq_gemm`): one row, split over K so a
4096-wide output still fills the GPU; splits hold whole groups.

- The nibble-plane loop (default, `planes=1`) keeps each of the 8 nibble positions as its own 2-D tile in the
  layout the int32 words were loaded in: a mask-and-OR into 2^23's mantissa, one fsub (removing 2^23 and the
  zero point at once, exactly) and an FMA per weight, the scale once per group, one cross-thread reduction at
  the end. It also runs the fused decode path's RMSNorm / SiLU prologues and bias / residual epilogue
  (`kernels.gemv`'s helpers, same rounding).
- The older loop (`planes=0`) factors scale and zero out of a group and reduces a 3-D tile every group.
- `use_gemm=1` runs the row through `kernels.awq_gemm.awq_gemm` as a 16-row tile.

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
    # N >= 1 (nibble-plane loop; runs the lean loop's math): the pipelined group loop (`_awq_pipe_groups`).
    # N weight chunks stay requested across the group boundary (a ring carried by the group loop: chunk
    # i + N is loaded as chunk i is used, into the next group near a group's end), and the next group's zero
    # word one group ahead. The lean loop drains at every group end (ptxas does not pipeline across the loop's
    # back edge) and waits on the zero word at every group start. Same sums in the same order as lean=1.
    pipe: int = 0
    # 1 (pipe >= 1, CUDA only: the interpreter skips it): each chunk also asks L2 for the same chunk of the next
    # group (`prefetch.global.L2`, one per thread and row, no register). A prefetch has no consumer for ptxas
    # to sink it towards, so it stays a whole group (~1000 instructions) ahead, and the register loads (which
    # ptxas schedules only ~150-300 instructions before their use) mostly hit L2.
    l2_prefetch: int = 0


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


MAGIC_2P23 = 0x4B000000  # the bits of 2^23 as fp32: a runtime argument (a register) for the lean loop's LOP3

# Where each nibble plane sits and what it is worth. AutoAWQ's nibble i holds column AWQ_ORDER[i] of its pack.
# Planes 0-4 are masked in place in the word (bits 4i..4i+3, value q * 16^i); planes 5-7 in the word shifted
# right by 12 (bits 8..19, value q * 2^(8 + 4(i-5))), so every plane's value stays below 2^20 and ORing it into
# the mantissa of 2^23 gives 2^23 + value exactly.


@triton.jit
def _plane_dot(word, MASK: tl.constexpr, zc, x):
    # (2^23 + q p) - (2^23 + z p) = (q - z) p, exact; times x. Per weight: a lop3 (and + or), an fsub, an fma.
    f = ((word & MASK) | 0x4B000000).to(tl.float32, bitcast=True)
    return (f - zc[None, :]) * x


@triton.jit
def _mask_or(word, MASK: tl.constexpr, magic, ASM: tl.constexpr):
    # (word & MASK) | magic as fp32 bits. ptxas fused the and/or pair into one LOP3 for ~3 of 4 weights only
    # (magic in a register); ASM=1 (CUDA) asks for the lop3 itself, ASM=0 is the same op for the interpreter.
    if ASM:
        bits = tl.inline_asm_elementwise("lop3.b32 $0, $1, $2, $3, 0xEA;", "=r,r,r,r", [word, MASK, magic],
                                         dtype=tl.int32, is_pure=True, pack=1)
    else:
        bits = (word & MASK) | magic
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _plane_dot_lean(word, MASK: tl.constexpr, magic, zc, x, ASM: tl.constexpr):
    # `_plane_dot` with 2^23's bits in a register (`magic`): one LOP3 ((word & MASK) | magic) instead of two.
    return (_mask_or(word, MASK, magic, ASM) - zc[None, :]) * x


@triton.jit
def _plane_zero(zword, MASK: tl.constexpr):
    return ((zword & MASK) | 0x4B000000).to(tl.float32, bitcast=True)  # 2^23 + z p


@triton.jit
def _plane_scale(sc_ptr, g, N, offs_p, mask_p, COL: tl.constexpr, INV_POW: tl.constexpr):
    # s / p (exact: p is a power of 2), so that sum (q - z) p x * s / p = sum (q - z) x s.
    return tl.load(sc_ptr + g * N + offs_p * 8 + COL, mask=mask_p, other=0.0).to(tl.float32) * INV_POW


@triton.jit
def _plane_out(y, offs_p, mask_p, part_ptr, bias_ptr, res_ptr, out_ptr, COL: tl.constexpr, SPLIT_K: tl.constexpr,
               HAS_BIAS: tl.constexpr, ADD_RESIDUAL: tl.constexpr):
    # One plane's column sums: the epilogue straight to the output, or this split's fp32 partial.
    offs_n = offs_p * 8 + COL
    if SPLIT_K == 1:
        _epilogue_store(y, offs_n, mask_p, bias_ptr, res_ptr, out_ptr, HAS_BIAS, ADD_RESIDUAL)
    else:
        tl.store(part_ptr + offs_n, y, mask=mask_p)


@triton.jit
def _plane_zero_lean(zword, MASK: tl.constexpr, magic, ASM: tl.constexpr):
    return _mask_or(zword, MASK, magic, ASM)  # 2^23 + z p


@triton.jit
def _load_x_lean(x_rows, nw_rows, K, rstd, dtype, PROLOGUE: tl.constexpr):
    # `kernels.gemv._load_x` (same rounding) without the K mask: a split holds whole groups, so every row
    # exists, and the caller's row pointers take the chunk offset as an immediate.
    if PROLOGUE == 1:
        normed = (tl.load(x_rows).to(tl.float32) * rstd).to(dtype).to(tl.float32)
        return (normed * tl.load(nw_rows).to(tl.float32)).to(dtype).to(tl.float32)
    elif PROLOGUE == 2:
        gate = tl.load(x_rows).to(tl.float32)
        up = tl.load(x_rows + K).to(tl.float32)
        act = (gate / (1.0 + tl.exp(-gate))).to(dtype).to(tl.float32)
        return (act * up).to(dtype).to(tl.float32)
    else:
        return tl.load(x_rows).to(tl.float32)


@triton.jit
def _awq_lean_groups(x_ptr, norm_w_ptr, qw_ptr, qz_ptr, sc_ptr, N, K, stride_q, magic, rstd, k_start, k_end,
                     offs_p, mask_p, rows, a0, a1, a2, a3, a4, a5, a6, a7, dtype, GROUP: tl.constexpr,
                     BLOCK_K: tl.constexpr, PROLOGUE: tl.constexpr, ASM: tl.constexpr):
    # The nibble-plane group loop of `_awq_gemv_planes_kernel` (same sums, same order per plane), leaner in
    # SASS (AwqGemvConfig.lean): x as a [BLOCK_K] vector broadcast along the packs (its slice layout of the
    # weight tile: no shared-memory round trip, no bar.sync in the loop), one LOP3 per weight, and the
    # weight pointers built once and advanced by a scalar.
    w_ptrs = qw_ptr + (k_start + rows)[:, None] * stride_q + offs_p[None, :]
    x_rows = x_ptr + k_start + rows
    nw_rows = norm_w_ptr + k_start + rows
    for g0 in range(k_start, k_end, GROUP):
        g = g0 // GROUP
        zw = tl.load(qz_ptr + g * stride_q + offs_p, mask=mask_p, other=0)
        zh = zw >> 12
        z0 = _plane_zero_lean(zw, 0xF, magic, ASM)
        z1 = _plane_zero_lean(zw, 0xF0, magic, ASM)
        z2 = _plane_zero_lean(zw, 0xF00, magic, ASM)
        z3 = _plane_zero_lean(zw, 0xF000, magic, ASM)
        z4 = _plane_zero_lean(zw, 0xF0000, magic, ASM)
        z5 = _plane_zero_lean(zh, 0xF00, magic, ASM)
        z6 = _plane_zero_lean(zh, 0xF000, magic, ASM)
        z7 = _plane_zero_lean(zh, 0xF0000, magic, ASM)
        g_0 = tl.zeros((BLOCK_K, offs_p.shape[0]), dtype=tl.float32)
        g_1 = tl.zeros((BLOCK_K, offs_p.shape[0]), dtype=tl.float32)
        g_2 = tl.zeros((BLOCK_K, offs_p.shape[0]), dtype=tl.float32)
        g_3 = tl.zeros((BLOCK_K, offs_p.shape[0]), dtype=tl.float32)
        g_4 = tl.zeros((BLOCK_K, offs_p.shape[0]), dtype=tl.float32)
        g_5 = tl.zeros((BLOCK_K, offs_p.shape[0]), dtype=tl.float32)
        g_6 = tl.zeros((BLOCK_K, offs_p.shape[0]), dtype=tl.float32)
        g_7 = tl.zeros((BLOCK_K, offs_p.shape[0]), dtype=tl.float32)
        # The group's first chunks are requested before any math, then one more per chunk (source order is
        # what ptxas keeps: with one load per chunk it left a thread ~2 weight loads in flight).
        wa = tl.load(w_ptrs, mask=mask_p[None, :], other=0)
        wb = wa
        wc = wa
        if BLOCK_K < GROUP:
            wb = tl.load(w_ptrs + BLOCK_K * stride_q, mask=mask_p[None, :], other=0)
        if 2 * BLOCK_K < GROUP:
            wc = tl.load(w_ptrs + 2 * BLOCK_K * stride_q, mask=mask_p[None, :], other=0)
        for kk in tl.static_range(0, GROUP, BLOCK_K):
            xk = _load_x_lean(x_rows + kk, nw_rows + kk, K, rstd, dtype, PROLOGUE)[:, None]
            w = wa
            wa = wb
            wb = wc
            if kk + 3 * BLOCK_K < GROUP:
                wc = tl.load(w_ptrs + (kk + 3 * BLOCK_K) * stride_q, mask=mask_p[None, :], other=0)
            wh = w >> 12
            g_0 += _plane_dot_lean(w, 0xF, magic, z0, xk, ASM)
            g_1 += _plane_dot_lean(w, 0xF0, magic, z1, xk, ASM)
            g_2 += _plane_dot_lean(w, 0xF00, magic, z2, xk, ASM)
            g_3 += _plane_dot_lean(w, 0xF000, magic, z3, xk, ASM)
            g_4 += _plane_dot_lean(w, 0xF0000, magic, z4, xk, ASM)
            g_5 += _plane_dot_lean(wh, 0xF00, magic, z5, xk, ASM)
            g_6 += _plane_dot_lean(wh, 0xF000, magic, z6, xk, ASM)
            g_7 += _plane_dot_lean(wh, 0xF0000, magic, z7, xk, ASM)
        w_ptrs += GROUP * stride_q
        x_rows += GROUP
        nw_rows += GROUP
        a0 += g_0 * _plane_scale(sc_ptr, g, N, offs_p, mask_p, 0, 1.0)[None, :]
        a1 += g_1 * _plane_scale(sc_ptr, g, N, offs_p, mask_p, 2, 0.0625)[None, :]
        a2 += g_2 * _plane_scale(sc_ptr, g, N, offs_p, mask_p, 4, 0.00390625)[None, :]
        a3 += g_3 * _plane_scale(sc_ptr, g, N, offs_p, mask_p, 6, 0.000244140625)[None, :]
        a4 += g_4 * _plane_scale(sc_ptr, g, N, offs_p, mask_p, 1, 0.0000152587890625)[None, :]
        a5 += g_5 * _plane_scale(sc_ptr, g, N, offs_p, mask_p, 3, 0.00390625)[None, :]
        a6 += g_6 * _plane_scale(sc_ptr, g, N, offs_p, mask_p, 5, 0.000244140625)[None, :]
        a7 += g_7 * _plane_scale(sc_ptr, g, N, offs_p, mask_p, 7, 0.0000152587890625)[None, :]
    return a0, a1, a2, a3, a4, a5, a6, a7


@triton.jit
def _pipe_load(w_ptrs, g0, k_last, stride_q, mask_p, J: tl.constexpr, BLOCK_K: tl.constexpr, GROUP: tl.constexpr):
    # Chunk J (counted from the group at g0) of this split's weights. Chunks in the group: a constant offset.
    # Past it (the next group's first chunks): clamped to the split's last chunk, so the loads issued ahead
    # of the split's end stay in bounds; those chunks are never used.
    if J * BLOCK_K < GROUP:
        return tl.load(w_ptrs + J * BLOCK_K * stride_q, mask=mask_p[None, :], other=0)
    else:
        off = tl.minimum(g0 + J * BLOCK_K, k_last) - g0
        return tl.load(w_ptrs + off * stride_q, mask=mask_p[None, :], other=0)


@triton.jit
def _l2_prefetch(ptrs, ASM: tl.constexpr):
    # prefetch.global.L2 of the line at each pointer (a side effect: kept although its dummy result is unused).
    if ASM:
        tl.inline_asm_elementwise("prefetch.global.L2 [$1];\n\tmov.u32 $0, 0;", "=r,l", [ptrs], dtype=tl.int32,
                                  is_pure=False, pack=1)


@triton.jit
def _awq_pipe_groups(x_ptr, norm_w_ptr, qw_ptr, qz_ptr, sc_ptr, N, K, stride_q, magic, rstd, k_start, k_end,
                     offs_p, mask_p, rows, a0, a1, a2, a3, a4, a5, a6, a7, dtype, GROUP: tl.constexpr,
                     BLOCK_K: tl.constexpr, PROLOGUE: tl.constexpr, ASM: tl.constexpr, PIPE: tl.constexpr,
                     p_start, L2_PREFETCH: tl.constexpr):
    # `_awq_lean_groups` (same math, same order per plane: the same bits) with its loads software-pipelined
    # over the whole split (AwqGemvConfig.pipe): a ring of PIPE chunk registers p0.. carried by the group
    # loop. At the top of a group p0..p{PIPE-1} hold its chunks 0..PIPE-1; using chunk c loads chunk c + PIPE,
    # which near the group's end is the next group's, so a thread keeps PIPE loads in flight through the
    # group boundary instead of draining to zero there. The next group's zero word is loaded a group ahead
    # (its z planes are needed before the group's first FADD). Named registers, not a list: what a Triton
    # loop carries must be plain tensors; constexpr-guarded slots past PIPE are never assigned in the loop,
    # so the loop does not carry them. L2_PREFETCH: see AwqGemvConfig.l2_prefetch (row pointers [BLOCK_K] to
    # the first pack of this program's slice: one line per row for block_n=256, half of one for 128).
    w_ptrs = qw_ptr + (k_start + rows)[:, None] * stride_q + offs_p[None, :]
    x_rows = x_ptr + k_start + rows
    nw_rows = norm_w_ptr + k_start + rows
    k_last = k_end - BLOCK_K  # the split's last chunk: where the loads past its end are clamped
    pf_rows = qw_ptr + rows * stride_q + p_start
    g_last = (k_end - 1) // GROUP
    p0 = _pipe_load(w_ptrs, k_start, k_last, stride_q, mask_p, 0, BLOCK_K, GROUP)
    p1 = p0
    p2 = p0
    p3 = p0
    p4 = p0
    p5 = p0
    p6 = p0
    p7 = p0
    if PIPE > 1:
        p1 = _pipe_load(w_ptrs, k_start, k_last, stride_q, mask_p, 1, BLOCK_K, GROUP)
    if PIPE > 2:
        p2 = _pipe_load(w_ptrs, k_start, k_last, stride_q, mask_p, 2, BLOCK_K, GROUP)
    if PIPE > 3:
        p3 = _pipe_load(w_ptrs, k_start, k_last, stride_q, mask_p, 3, BLOCK_K, GROUP)
    if PIPE > 4:
        p4 = _pipe_load(w_ptrs, k_start, k_last, stride_q, mask_p, 4, BLOCK_K, GROUP)
    if PIPE > 5:
        p5 = _pipe_load(w_ptrs, k_start, k_last, stride_q, mask_p, 5, BLOCK_K, GROUP)
    if PIPE > 6:
        p6 = _pipe_load(w_ptrs, k_start, k_last, stride_q, mask_p, 6, BLOCK_K, GROUP)
    if PIPE > 7:
        p7 = _pipe_load(w_ptrs, k_start, k_last, stride_q, mask_p, 7, BLOCK_K, GROUP)
    zw = tl.load(qz_ptr + (k_start // GROUP) * stride_q + offs_p, mask=mask_p, other=0)
    for g0 in range(k_start, k_end, GROUP):
        g = g0 // GROUP
        # Clamped like the weight chunks: the last group reloads its own zero word (in bounds, unused).
        zw_next = tl.load(qz_ptr + tl.minimum(g + 1, g_last) * stride_q + offs_p, mask=mask_p, other=0)
        zh = zw >> 12
        z0 = _plane_zero_lean(zw, 0xF, magic, ASM)
        z1 = _plane_zero_lean(zw, 0xF0, magic, ASM)
        z2 = _plane_zero_lean(zw, 0xF00, magic, ASM)
        z3 = _plane_zero_lean(zw, 0xF000, magic, ASM)
        z4 = _plane_zero_lean(zw, 0xF0000, magic, ASM)
        z5 = _plane_zero_lean(zh, 0xF00, magic, ASM)
        z6 = _plane_zero_lean(zh, 0xF000, magic, ASM)
        z7 = _plane_zero_lean(zh, 0xF0000, magic, ASM)
        g_0 = tl.zeros((BLOCK_K, offs_p.shape[0]), dtype=tl.float32)
        g_1 = tl.zeros((BLOCK_K, offs_p.shape[0]), dtype=tl.float32)
        g_2 = tl.zeros((BLOCK_K, offs_p.shape[0]), dtype=tl.float32)
        g_3 = tl.zeros((BLOCK_K, offs_p.shape[0]), dtype=tl.float32)
        g_4 = tl.zeros((BLOCK_K, offs_p.shape[0]), dtype=tl.float32)
        g_5 = tl.zeros((BLOCK_K, offs_p.shape[0]), dtype=tl.float32)
        g_6 = tl.zeros((BLOCK_K, offs_p.shape[0]), dtype=tl.float32)
        g_7 = tl.zeros((BLOCK_K, offs_p.shape[0]), dtype=tl.float32)
        for c in tl.static_range(0, GROUP // BLOCK_K):
            if L2_PREFETCH:  # the same chunk of the next group (clamped at the split's end, like the loads)
                _l2_prefetch(pf_rows + tl.minimum(g0 + GROUP + c * BLOCK_K, k_last) * stride_q, ASM)
            xk = _load_x_lean(x_rows + c * BLOCK_K, nw_rows + c * BLOCK_K, K, rstd, dtype, PROLOGUE)[:, None]
            # Rotate the ring and refill its tail with chunk c + PIPE (SSA renames: no moves in SASS).
            w = p0
            nxt = _pipe_load(w_ptrs, g0, k_last, stride_q, mask_p, c + PIPE, BLOCK_K, GROUP)
            if PIPE == 1:
                p0 = nxt
            else:
                p0 = p1
            if PIPE == 2:
                p1 = nxt
            elif PIPE > 2:
                p1 = p2
            if PIPE == 3:
                p2 = nxt
            elif PIPE > 3:
                p2 = p3
            if PIPE == 4:
                p3 = nxt
            elif PIPE > 4:
                p3 = p4
            if PIPE == 5:
                p4 = nxt
            elif PIPE > 5:
                p4 = p5
            if PIPE == 6:
                p5 = nxt
            elif PIPE > 6:
                p5 = p6
            if PIPE == 7:
                p6 = nxt
            elif PIPE > 7:
                p6 = p7
            if PIPE == 8:
                p7 = nxt
            wh = w >> 12
            g_0 += _plane_dot_lean(w, 0xF, magic, z0, xk, ASM)
            g_1 += _plane_dot_lean(w, 0xF0, magic, z1, xk, ASM)
            g_2 += _plane_dot_lean(w, 0xF00, magic, z2, xk, ASM)
            g_3 += _plane_dot_lean(w, 0xF000, magic, z3, xk, ASM)
            g_4 += _plane_dot_lean(w, 0xF0000, magic, z4, xk, ASM)
            g_5 += _plane_dot_lean(wh, 0xF00, magic, z5, xk, ASM)
            g_6 += _plane_dot_lean(wh, 0xF000, magic, z6, xk, ASM)
            g_7 += _plane_dot_lean(wh, 0xF0000, magic, z7, xk, ASM)
        w_ptrs += GROUP * stride_q
        x_rows += GROUP
        nw_rows += GROUP
        zw = zw_next
        a0 += g_0 * _plane_scale(sc_ptr, g, N, offs_p, mask_p, 0, 1.0)[None, :]
        a1 += g_1 * _plane_scale(sc_ptr, g, N, offs_p, mask_p, 2, 0.0625)[None, :]
        a2 += g_2 * _plane_scale(sc_ptr, g, N, offs_p, mask_p, 4, 0.00390625)[None, :]
        a3 += g_3 * _plane_scale(sc_ptr, g, N, offs_p, mask_p, 6, 0.000244140625)[None, :]
        a4 += g_4 * _plane_scale(sc_ptr, g, N, offs_p, mask_p, 1, 0.0000152587890625)[None, :]
        a5 += g_5 * _plane_scale(sc_ptr, g, N, offs_p, mask_p, 3, 0.00390625)[None, :]
        a6 += g_6 * _plane_scale(sc_ptr, g, N, offs_p, mask_p, 5, 0.000244140625)[None, :]
        a7 += g_7 * _plane_scale(sc_ptr, g, N, offs_p, mask_p, 7, 0.0000152587890625)[None, :]
    return a0, a1, a2, a3, a4, a5, a6, a7


@triton.jit
def _awq_gemv_planes_kernel(x_ptr, norm_w_ptr, qw_ptr, qz_ptr, sc_ptr, bias_ptr, res_ptr, part_ptr, lock_ptr, out_ptr,
                            N, K, K_PER_SPLIT, stride_q, eps, magic,
                            GROUP: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                            SPLIT_K: tl.constexpr, PROLOGUE: tl.constexpr, HAS_BIAS: tl.constexpr,
                            ADD_RESIDUAL: tl.constexpr, NORM_BLOCK: tl.constexpr, LEAN: tl.constexpr = 0,
                            ASM: tl.constexpr = 0, PIPE: tl.constexpr = 0, L2_PREFETCH: tl.constexpr = 0):
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
    a0 = tl.zeros((BLOCK_K, PACKS), dtype=tl.float32)
    a1 = tl.zeros((BLOCK_K, PACKS), dtype=tl.float32)
    a2 = tl.zeros((BLOCK_K, PACKS), dtype=tl.float32)
    a3 = tl.zeros((BLOCK_K, PACKS), dtype=tl.float32)
    a4 = tl.zeros((BLOCK_K, PACKS), dtype=tl.float32)
    a5 = tl.zeros((BLOCK_K, PACKS), dtype=tl.float32)
    a6 = tl.zeros((BLOCK_K, PACKS), dtype=tl.float32)
    a7 = tl.zeros((BLOCK_K, PACKS), dtype=tl.float32)
    k_start = pid_k * K_PER_SPLIT  # splits hold whole groups
    k_end = tl.minimum(k_start + K_PER_SPLIT, K)
    if PIPE:
        a0, a1, a2, a3, a4, a5, a6, a7 = _awq_pipe_groups(
            x_ptr, norm_w_ptr, qw_ptr, qz_ptr, sc_ptr, N, K, stride_q, magic, rstd, k_start, k_end, offs_p, mask_p,
            rows, a0, a1, a2, a3, a4, a5, a6, a7, dtype, GROUP, BLOCK_K, PROLOGUE, ASM, PIPE, pid_n * PACKS,
            L2_PREFETCH)
    elif LEAN:
        a0, a1, a2, a3, a4, a5, a6, a7 = _awq_lean_groups(
            x_ptr, norm_w_ptr, qw_ptr, qz_ptr, sc_ptr, N, K, stride_q, magic, rstd, k_start, k_end, offs_p, mask_p,
            rows, a0, a1, a2, a3, a4, a5, a6, a7, dtype, GROUP, BLOCK_K, PROLOGUE, ASM)
    else:
        for g0 in range(k_start, k_end, GROUP):
            g = g0 // GROUP
            zw = tl.load(qz_ptr + g * stride_q + offs_p, mask=mask_p, other=0)
            zh = zw >> 12
            z0 = _plane_zero(zw, 0xF)
            z1 = _plane_zero(zw, 0xF0)
            z2 = _plane_zero(zw, 0xF00)
            z3 = _plane_zero(zw, 0xF000)
            z4 = _plane_zero(zw, 0xF0000)
            z5 = _plane_zero(zh, 0xF00)
            z6 = _plane_zero(zh, 0xF000)
            z7 = _plane_zero(zh, 0xF0000)
            g_0 = tl.zeros((BLOCK_K, PACKS), dtype=tl.float32)
            g_1 = tl.zeros((BLOCK_K, PACKS), dtype=tl.float32)
            g_2 = tl.zeros((BLOCK_K, PACKS), dtype=tl.float32)
            g_3 = tl.zeros((BLOCK_K, PACKS), dtype=tl.float32)
            g_4 = tl.zeros((BLOCK_K, PACKS), dtype=tl.float32)
            g_5 = tl.zeros((BLOCK_K, PACKS), dtype=tl.float32)
            g_6 = tl.zeros((BLOCK_K, PACKS), dtype=tl.float32)
            g_7 = tl.zeros((BLOCK_K, PACKS), dtype=tl.float32)
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
                wh = w >> 12
                g_0 += _plane_dot(w, 0xF, z0, xk)
                g_1 += _plane_dot(w, 0xF0, z1, xk)
                g_2 += _plane_dot(w, 0xF00, z2, xk)
                g_3 += _plane_dot(w, 0xF000, z3, xk)
                g_4 += _plane_dot(w, 0xF0000, z4, xk)
                g_5 += _plane_dot(wh, 0xF00, z5, xk)
                g_6 += _plane_dot(wh, 0xF000, z6, xk)
                g_7 += _plane_dot(wh, 0xF0000, z7, xk)
            # Plane i holds column AWQ_ORDER[i] = (0, 2, 4, 6, 1, 3, 5, 7)[i] of each pack, worth p_i =
            # (1, 16, 256, 4096, 65536, 256, 4096, 65536)[i] per unit of q.
            a0 += g_0 * _plane_scale(sc_ptr, g, N, offs_p, mask_p, 0, 1.0)[None, :]
            a1 += g_1 * _plane_scale(sc_ptr, g, N, offs_p, mask_p, 2, 0.0625)[None, :]
            a2 += g_2 * _plane_scale(sc_ptr, g, N, offs_p, mask_p, 4, 0.00390625)[None, :]
            a3 += g_3 * _plane_scale(sc_ptr, g, N, offs_p, mask_p, 6, 0.000244140625)[None, :]
            a4 += g_4 * _plane_scale(sc_ptr, g, N, offs_p, mask_p, 1, 0.0000152587890625)[None, :]
            a5 += g_5 * _plane_scale(sc_ptr, g, N, offs_p, mask_p, 3, 0.00390625)[None, :]
            a6 += g_6 * _plane_scale(sc_ptr, g, N, offs_p, mask_p, 5, 0.000244140625)[None, :]
            a7 += g_7 * _plane_scale(sc_ptr, g, N, offs_p, mask_p, 7, 0.0000152587890625)[None, :]
    part = part_ptr + pid_k * N
    _plane_out(tl.sum(a0, axis=0), offs_p, mask_p, part, bias_ptr, res_ptr, out_ptr, 0, SPLIT_K, HAS_BIAS, ADD_RESIDUAL)
    _plane_out(tl.sum(a1, axis=0), offs_p, mask_p, part, bias_ptr, res_ptr, out_ptr, 2, SPLIT_K, HAS_BIAS, ADD_RESIDUAL)
    _plane_out(tl.sum(a2, axis=0), offs_p, mask_p, part, bias_ptr, res_ptr, out_ptr, 4, SPLIT_K, HAS_BIAS, ADD_RESIDUAL)
    _plane_out(tl.sum(a3, axis=0), offs_p, mask_p, part, bias_ptr, res_ptr, out_ptr, 6, SPLIT_K, HAS_BIAS, ADD_RESIDUAL)
    _plane_out(tl.sum(a4, axis=0), offs_p, mask_p, part, bias_ptr, res_ptr, out_ptr, 1, SPLIT_K, HAS_BIAS, ADD_RESIDUAL)
    _plane_out(tl.sum(a5, axis=0), offs_p, mask_p, part, bias_ptr, res_ptr, out_ptr, 3, SPLIT_K, HAS_BIAS, ADD_RESIDUAL)
    _plane_out(tl.sum(a6, axis=0), offs_p, mask_p, part, bias_ptr, res_ptr, out_ptr, 5, SPLIT_K, HAS_BIAS, ADD_RESIDUAL)
    _plane_out(tl.sum(a7, axis=0), offs_p, mask_p, part, bias_ptr, res_ptr, out_ptr, 7, SPLIT_K, HAS_BIAS, ADD_RESIDUAL)
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
    path; they run on the nibble-plane loop."""
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
    if fused and (cfg.use_gemm or not cfg.planes):
        cfg = AwqGemvConfig()  # only the nibble-plane loop has the prologues and the epilogue
    assert cfg.block_n >= PACK and (cfg.block_n & (cfg.block_n - 1)) == 0, f"{cfg}: block_n a power of 2 >= 8"
    assert 0 <= cfg.pipe <= 8, f"{cfg}: pipe is 0 (off) or 1..8 chunks in flight"
    if cfg.use_gemm:
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
    if cfg.planes:
        prologue = PROLOGUE_SILU_MUL if silu_mul else PROLOGUE_RMSNORM if norm_weight is not None else PROLOGUE_NONE
        _awq_gemv_planes_kernel[(num_n, split)](
            x, norm_weight if norm_weight is not None else x, qweight, qzeros, scales,
            bias if bias is not None else out, residual if residual is not None else out, partials,
            locks if locks is not None else out, out, n, k, k_per_split, n // PACK, eps, MAGIC_2P23,
            GROUP=group_size, BLOCK_N=cfg.block_n, BLOCK_K=block_k, SPLIT_K=split, PROLOGUE=prologue,
            HAS_BIAS=bias is not None, ADD_RESIDUAL=residual is not None, NORM_BLOCK=min(next_pow2(k), 4096),
            LEAN=cfg.lean, ASM=int(x.device.type == "cuda"), PIPE=cfg.pipe,
            L2_PREFETCH=cfg.l2_prefetch, num_warps=cfg.num_warps)
        return out
    _awq_gemv_kernel[(num_n, split)](x, qweight, qzeros, scales, partials, locks if locks is not None else out,
                                     out, n, k, k_per_split, n // PACK, GROUP=group_size, BLOCK_N=cfg.block_n,
                                     BLOCK_K=block_k, SPLIT_K=split, num_warps=cfg.num_warps,
                                     num_stages=cfg.num_stages)
    return out
