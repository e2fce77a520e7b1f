"""Batch-1 AWQ GEMV on tensor cores (`AwqGemvConfig.mma=1`; 2026-12-03 ninth session, prepared from sm_90 SASS
without a device, bench/NOTES.md "AWQ tensor-core GEMV").

The lean nibble-plane loop (`kernels.awq_planes`) spends ~4.4 SASS instructions per weight (LOP3 + FADD + FFMA
+ address math): one fp32 FMA per weight on the CUDA cores, issue/latency-bound at ~1.3 TB/s. Here the int4
weights become fp16 pairs with integer tricks (as Marlin / the AWQ CUDA kernels do) and the multiply-accumulate
runs on the tensor cores:

- Dequantize (per int32 word, 8 weights): `lop3(q & 0x000F000F | 0x64006400)` is the fp16 pair (1024 + n0,
  1024 + n4); with mask 0x00F000F0 it is (1024 + 16 n1, 1024 + 16 n5); the same two on q >> 8 give nibbles
  2/6 and 3/7. AutoAWQ's order (nibble i holds column (0, 2, 4, 6, 1, 3, 5, 7)[i]) makes nibbles j and j + 4
  the columns 2j and 2j + 1: each pair is two adjacent output columns. The zero point comes off with one
  fp16x2 op per pair: `add.f16x2 v, -(1024 + z)` or `fma.f16x2 v, 1/16, -(64 + z)`, whose constants are one
  LOP3 of the group's zero word (the zero nibbles land in the same bit positions). Every value is an integer
  below 2^11: exact in fp16, so the tile holds exactly q - z (|q - z| <= 15). 1 SHF + 4 LOP3 + 4 HADD2/HFMA2
  per 8 weights.
- Multiply: x is row 0 of a [16, BLOCK_K] fp16 tile (mma's smallest M; rows 1..15 are zero), `tl.dot` with the
  [BLOCK_K, BLOCK_N] tile of (q - z), fp32 accumulation in the mma, chained over a group's chunks. The group's
  scale multiplies the group's column sums once (fp32), so scales never round in fp16. bf16 x goes through
  fp16 scaled by 2^-8 (as `kernels.fp8_gemv`'s use_dot: bf16 values up to 2^24 stay finite), fp16 x as it is.
  Products (|q - z| <= 15 times an fp16) are exact; the sums are the mma's fp32.
- The prologues (RMSNorm, SiLU-mul) and the bias / residual epilogue are `kernels.gemv`'s helpers (same
  rounding of x). Each thread computes its BLOCK_K * 16 / threads elements of the B tile, i.e. 16 / BLOCK_N
  prologue evaluations per weight: RMSNorm +0.2-0.5, SiLU-mul +0.9-1.9 SASS instructions per weight (still
  below the lean loop with the same prologue: bench/NOTES.md).

ASM=0 (the CPU interpreter, which cannot run inline asm) computes the same tile with plain integer ops
(nibble - zero, converted to fp16: the same exact values).
"""

from __future__ import annotations

import triton
import triton.language as tl

from kernels.gemv import _epilogue_store, _load_x, _row_rstd

# fp16x2 bit patterns as int32 (Triton would widen the unsigned literals to int64).
_NEG_1024_PAIR = tl.constexpr(0xE400E400 - (1 << 32))  # (-1024, -1024): OR the zero nibbles in -> -(1024 + z)
_NEG_64_PAIR = tl.constexpr(0xD400D400 - (1 << 32))  # (-64, -64): OR z << 4 in -> -(64 + z) (ulp 1/16 at 64)


@triton.jit
def _zero_consts(zw, ASM: tl.constexpr):
    # Per group and pack, the 4 fp16x2 constants that take the zero points off: pairs 0 / 2 (nibbles in bits
    # 0-3 / 16-19 of zw / zw >> 8) are -(1024 + z), pairs 1 / 3 (bits 4-7 / 20-23) are -(64 + z). ASM: one
    # LOP3 each (ptxas keeps the second constant in a register; as plain ops it emitted an AND and an OR).
    if ASM:
        return tl.inline_asm_elementwise(
            "{\n\t.reg .b32 h;\n\tshr.u32 h, $4, 8;\n\t"
            "lop3.b32 $0, $4, 0x000F000F, 0xE400E400, 0xEA;\n\t"
            "lop3.b32 $1, $4, 0x00F000F0, 0xD400D400, 0xEA;\n\t"
            "lop3.b32 $2, h, 0x000F000F, 0xE400E400, 0xEA;\n\t"
            "lop3.b32 $3, h, 0x00F000F0, 0xD400D400, 0xEA;\n\t}",
            "=r,=r,=r,=r,r", [zw], dtype=(tl.int32, tl.int32, tl.int32, tl.int32), is_pure=True, pack=1)
    zh = zw >> 8
    return ((zw & 0x000F000F) | _NEG_1024_PAIR, (zw & 0x00F000F0) | _NEG_64_PAIR,
            (zh & 0x000F000F) | _NEG_1024_PAIR, (zh & 0x00F000F0) | _NEG_64_PAIR)


@triton.jit
def _dequant_f16(w, c0, c1, c2, c3, ASM: tl.constexpr):
    """int32 words [R, P] (AutoAWQ packs) -> 8 fp16 tiles [R, P]: q - z of the pack's columns 0..7."""
    if ASM:
        return tl.inline_asm_elementwise(
            "{\n\t.reg .b32 a, b, c, d, h, s;\n\t"
            "lop3.b32 a, $8, 0x000F000F, 0x64006400, 0xEA;\n\t"
            "lop3.b32 b, $8, 0x00F000F0, 0x64006400, 0xEA;\n\t"
            "shr.u32 h, $8, 8;\n\t"
            "lop3.b32 c, h, 0x000F000F, 0x64006400, 0xEA;\n\t"
            "lop3.b32 d, h, 0x00F000F0, 0x64006400, 0xEA;\n\t"
            "mov.b32 s, 0x2C002C00;\n\t"  # (1/16, 1/16)
            "add.f16x2 a, a, $9;\n\t"
            "fma.rn.f16x2 b, b, s, $10;\n\t"
            "add.f16x2 c, c, $11;\n\t"
            "fma.rn.f16x2 d, d, s, $12;\n\t"
            "mov.b32 {$0, $1}, a;\n\tmov.b32 {$2, $3}, b;\n\tmov.b32 {$4, $5}, c;\n\tmov.b32 {$6, $7}, d;\n\t}",
            "=h,=h,=h,=h,=h,=h,=h,=h,r,r,r,r,r", [w, c0, c1, c2, c3],
            dtype=(tl.float16, tl.float16, tl.float16, tl.float16, tl.float16, tl.float16, tl.float16, tl.float16),
            is_pure=True, pack=1)
    else:
        # The same values: nibble i is column (0, 2, 4, 6, 1, 3, 5, 7)[i]; the zero nibble sits in the same
        # bits of the constants (c0: bits 0 / 16, c1: 4 / 20, c2: 8 / 24 of zw = 0 / 16 of zw >> 8, ...).
        return ((w & 0xF) - (c0 & 0xF)).to(tl.float16), (((w >> 16) & 0xF) - ((c0 >> 16) & 0xF)).to(tl.float16), \
            (((w >> 4) & 0xF) - ((c1 >> 4) & 0xF)).to(tl.float16), \
            (((w >> 20) & 0xF) - ((c1 >> 20) & 0xF)).to(tl.float16), \
            (((w >> 8) & 0xF) - (c2 & 0xF)).to(tl.float16), (((w >> 24) & 0xF) - ((c2 >> 16) & 0xF)).to(tl.float16), \
            (((w >> 12) & 0xF) - ((c3 >> 4) & 0xF)).to(tl.float16), \
            (((w >> 28) & 0xF) - ((c3 >> 20) & 0xF)).to(tl.float16)


@triton.jit
def _weight_tile(w, c0, c1, c2, c3, ASM: tl.constexpr):
    # [BLOCK_K, PACKS] int32 -> [BLOCK_K, PACKS * 8] fp16 in logical column order. tl.join adds a minor dim in
    # registers; the pack's column index is 4 j1 + 2 j0 + h, so the joins go j1, then j0, then h.
    v0, v1, v2, v3, v4, v5, v6, v7 = _dequant_f16(w, c0, c1, c2, c3, ASM)
    lo = tl.join(tl.join(v0, v4), tl.join(v2, v6))  # columns 0, 4 | 2, 6 -> [R, P, j1, j0] = column 4 j1 + 2 j0
    hi = tl.join(tl.join(v1, v5), tl.join(v3, v7))
    t = tl.join(lo, hi)  # [R, P, 2, 2, 2]
    return tl.reshape(t, (w.shape[0], w.shape[1] * 8))


@triton.jit
def _x_tile(x_ptr, norm_w_ptr, k0, rows, m16, K, rstd, dtype, PROLOGUE: tl.constexpr, X_SCALE: tl.constexpr):
    # The mma's B operand [BLOCK_K, 16]: x (after the prologue, rounded as `kernels.gemv._load_x` rounds) in
    # all 16 columns, so every output column of the mma is the same sums. Loaded as a 2-D tile whose
    # contiguity hint (rows, stride 0 along the columns) gives each thread 4-8 consecutive rows in one vector
    # load, stored to shared memory K-major in one vector store: the cheapest B tile found (a [BLOCK_K] vector
    # broadcast or joined into 16 columns went through 16 STS.U16 or 4 layout conversions per thread).
    offs = tl.max_contiguous(tl.multiple_of((k0 + rows)[:, None] + 0 * m16[None, :], [16, 1]), [16, 1])
    return (_load_x(x_ptr, norm_w_ptr, offs, K, rstd, dtype, PROLOGUE) * X_SCALE).to(tl.float16)


@triton.jit
def _awq_mma_kernel(x_ptr, norm_w_ptr, qw_ptr, qz_ptr, sc_ptr, bias_ptr, res_ptr, part_ptr, lock_ptr, out_ptr,
                    N, K, K_PER_SPLIT, stride_q, eps,
                    GROUP: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr,
                    PROLOGUE: tl.constexpr, HAS_BIAS: tl.constexpr, ADD_RESIDUAL: tl.constexpr,
                    NORM_BLOCK: tl.constexpr, X_SCALE: tl.constexpr, ASM: tl.constexpr):
    # The weights are the mma's A operand ([BLOCK_N, BLOCK_K], the dequantized tile transposed) and x its B
    # operand ([BLOCK_K, 16]): with M = BLOCK_N >= 64 Triton emits Hopper's wgmma (HGMMA, A from registers
    # via ldmatrix, B from shared memory). x as A (M = 16, mma.sync) cost ~1 register move per weight to
    # assemble the B fragments from ldmatrix (4.27 SASS/weight against 2.53 here at 128,32,4; bench/NOTES.md).
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    PACKS: tl.constexpr = BLOCK_N // 8
    offs_p = pid_n * PACKS + tl.arange(0, PACKS)
    mask_p = offs_p < stride_q
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    rows = tl.arange(0, BLOCK_K)
    m16 = tl.arange(0, 16)
    dtype = out_ptr.dtype.element_ty
    k_start = pid_k * K_PER_SPLIT  # splits hold whole groups
    k_end = tl.minimum(k_start + K_PER_SPLIT, K)
    w_ptrs = qw_ptr + (k_start + rows)[:, None] * stride_q + offs_p[None, :]
    rstd = 1.0
    if PROLOGUE == 1:
        rstd = _row_rstd(x_ptr, K, eps, NORM_BLOCK)
    acc = tl.zeros((BLOCK_N, 16), dtype=tl.float32)
    for g0 in range(k_start, k_end, GROUP):
        g = g0 // GROUP
        zw = tl.load(qz_ptr + g * stride_q + offs_p, mask=mask_p, other=0)
        c0, c1, c2, c3 = _zero_consts(zw, ASM)
        acc_g = tl.zeros((BLOCK_N, 16), dtype=tl.float32)
        for kk in tl.static_range(0, GROUP, BLOCK_K):
            w = tl.load(w_ptrs + kk * stride_q, mask=mask_p[None, :], other=0)
            wt = _weight_tile(w, c0[None, :], c1[None, :], c2[None, :], c3[None, :], ASM)
            xb = _x_tile(x_ptr, norm_w_ptr, g0 + kk, rows, m16, K, rstd, dtype, PROLOGUE, X_SCALE)
            acc_g = tl.dot(tl.trans(wt), xb, acc_g)
        w_ptrs += GROUP * stride_q
        # The group's scale on its exact integer-weight sums, in fp32 (scales never round to fp16 here).
        s = tl.load(sc_ptr + g * N + offs_n, mask=mask_n, other=0.0).to(tl.float32)
        acc += acc_g * s[:, None]
    y = tl.sum(tl.where(m16[None, :] == 0, acc, 0.0), axis=1) * (1.0 / X_SCALE)  # column 0 (all 16 are equal)
    if SPLIT_K == 1:
        _epilogue_store(y, offs_n, mask_n, bias_ptr, res_ptr, out_ptr, HAS_BIAS, ADD_RESIDUAL)
    else:
        tl.store(part_ptr + pid_k * N + offs_n, y, mask=mask_n)
        # The last split to arrive sums the partials in split order (as `kernels.awq_gemv`'s kernels).
        tl.debug_barrier()
        arrived = tl.atomic_add(lock_ptr + pid_n, 1, sem="acq_rel", scope="gpu")
        if arrived == SPLIT_K - 1:
            total = tl.zeros((BLOCK_N,), dtype=tl.float32)
            for split_idx in range(SPLIT_K):
                total += tl.load(part_ptr + split_idx * N + offs_n, mask=mask_n, other=0.0, cache_modifier=".cg")
            _epilogue_store(total, offs_n, mask_n, bias_ptr, res_ptr, out_ptr, HAS_BIAS, ADD_RESIDUAL)
            tl.atomic_xchg(lock_ptr + pid_n, 0)
