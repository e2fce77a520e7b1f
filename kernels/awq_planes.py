"""The nibble-plane arithmetic of the batch-1 AWQ GEMV (`kernels.awq_gemv`): per-plane helpers and the two
group loop that `AwqGemvConfig.lean` selects. Split from awq_gemv.py so that module keeps the config,
the kernels and the launcher. The group loops return the 8 plane accumulators; Triton inlines every helper
(the SASS is the same as when they were written out in the kernel: `bench/kernel_sass.py awq`)."""

from __future__ import annotations

import triton
import triton.language as tl

from kernels.gemv import _epilogue_store

MAGIC_2P23 = 0x4B000000  # the bits of 2^23 as fp32: a runtime argument (a register) for the lean loop's LOP3

# Where each nibble plane sits and what it is worth. AutoAWQ's nibble i holds column AWQ_ORDER[i] of its pack.
# Planes 0-4 are masked in place in the word (bits 4i..4i+3, value q * 16^i); planes 5-7 in the word shifted
# right by 12 (bits 8..19, value q * 2^(8 + 4(i-5))), so every plane's value stays below 2^20 and ORing it into
# the mantissa of 2^23 gives 2^23 + value exactly.


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
def _plane_bits(word, MASK: tl.constexpr, magic, LEAN: tl.constexpr, ASM: tl.constexpr):
    # (word & MASK) | 2^23's bits, as fp32: 2^23 + (a plane's value), exact. LEAN: 2^23 comes in a register
    # (`magic`), one LOP3; else as an immediate (the and / or pair, two LOP3s).
    if LEAN:
        return _mask_or(word, MASK, magic, ASM)
    return ((word & MASK) | 0x4B000000).to(tl.float32, bitcast=True)


@triton.jit
def _plane_dot(word, MASK: tl.constexpr, magic, zc, x, LEAN: tl.constexpr, ASM: tl.constexpr):
    # (2^23 + q p) - (2^23 + z p) = (q - z) p, exact; times x. Per weight: the LOP3(s), an fsub, an fma.
    return (_plane_bits(word, MASK, magic, LEAN, ASM) - zc[None, :]) * x


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
def _zero_planes(zw, magic, LEAN: tl.constexpr, ASM: tl.constexpr):
    # The 8 planes' 2^23 + z p of one group's zero word (planes 5-7 from the word shifted right by 12).
    zh = zw >> 12
    return (_plane_bits(zw, 0xF, magic, LEAN, ASM), _plane_bits(zw, 0xF0, magic, LEAN, ASM),
            _plane_bits(zw, 0xF00, magic, LEAN, ASM), _plane_bits(zw, 0xF000, magic, LEAN, ASM),
            _plane_bits(zw, 0xF0000, magic, LEAN, ASM), _plane_bits(zh, 0xF00, magic, LEAN, ASM),
            _plane_bits(zh, 0xF000, magic, LEAN, ASM), _plane_bits(zh, 0xF0000, magic, LEAN, ASM))


@triton.jit
def _zero_tiles(BLOCK_K: tl.constexpr, PACKS: tl.constexpr):
    z = tl.zeros((BLOCK_K, PACKS), dtype=tl.float32)
    return z, z, z, z, z, z, z, z


@triton.jit
def _plane_dots(w, xk, magic, z0, z1, z2, z3, z4, z5, z6, z7, g_0, g_1, g_2, g_3, g_4, g_5, g_6, g_7,
                LEAN: tl.constexpr, ASM: tl.constexpr):
    # One chunk of words into the 8 plane sums (planes 5-7 from the words shifted right by 12).
    wh = w >> 12
    return (g_0 + _plane_dot(w, 0xF, magic, z0, xk, LEAN, ASM), g_1 + _plane_dot(w, 0xF0, magic, z1, xk, LEAN, ASM),
            g_2 + _plane_dot(w, 0xF00, magic, z2, xk, LEAN, ASM),
            g_3 + _plane_dot(w, 0xF000, magic, z3, xk, LEAN, ASM),
            g_4 + _plane_dot(w, 0xF0000, magic, z4, xk, LEAN, ASM),
            g_5 + _plane_dot(wh, 0xF00, magic, z5, xk, LEAN, ASM),
            g_6 + _plane_dot(wh, 0xF000, magic, z6, xk, LEAN, ASM),
            g_7 + _plane_dot(wh, 0xF0000, magic, z7, xk, LEAN, ASM))


@triton.jit
def _planes_out(a0, a1, a2, a3, a4, a5, a6, a7, offs_p, mask_p, part_ptr, bias_ptr, res_ptr, out_ptr,
                SPLIT_K: tl.constexpr, HAS_BIAS: tl.constexpr, ADD_RESIDUAL: tl.constexpr):
    # Each plane's column sums (one cross-thread reduction) to its columns AWQ_ORDER[i] of the packs.
    _plane_out(tl.sum(a0, axis=0), offs_p, mask_p, part_ptr, bias_ptr, res_ptr, out_ptr, 0, SPLIT_K, HAS_BIAS,
               ADD_RESIDUAL)
    _plane_out(tl.sum(a1, axis=0), offs_p, mask_p, part_ptr, bias_ptr, res_ptr, out_ptr, 2, SPLIT_K, HAS_BIAS,
               ADD_RESIDUAL)
    _plane_out(tl.sum(a2, axis=0), offs_p, mask_p, part_ptr, bias_ptr, res_ptr, out_ptr, 4, SPLIT_K, HAS_BIAS,
               ADD_RESIDUAL)
    _plane_out(tl.sum(a3, axis=0), offs_p, mask_p, part_ptr, bias_ptr, res_ptr, out_ptr, 6, SPLIT_K, HAS_BIAS,
               ADD_RESIDUAL)
    _plane_out(tl.sum(a4, axis=0), offs_p, mask_p, part_ptr, bias_ptr, res_ptr, out_ptr, 1, SPLIT_K, HAS_BIAS,
               ADD_RESIDUAL)
    _plane_out(tl.sum(a5, axis=0), offs_p, mask_p, part_ptr, bias_ptr, res_ptr, out_ptr, 3, SPLIT_K, HAS_BIAS,
               ADD_RESIDUAL)
    _plane_out(tl.sum(a6, axis=0), offs_p, mask_p, part_ptr, bias_ptr, res_ptr, out_ptr, 5, SPLIT_K, HAS_BIAS,
               ADD_RESIDUAL)
    _plane_out(tl.sum(a7, axis=0), offs_p, mask_p, part_ptr, bias_ptr, res_ptr, out_ptr, 7, SPLIT_K, HAS_BIAS,
               ADD_RESIDUAL)


@triton.jit
def _add_scaled_planes(sc_ptr, g, N, offs_p, mask_p, g_0, g_1, g_2, g_3, g_4, g_5, g_6, g_7,
                       a0, a1, a2, a3, a4, a5, a6, a7):
    # acc += group sum x s / p per plane. Plane i holds column AWQ_ORDER[i] = (0, 2, 4, 6, 1, 3, 5, 7)[i] of
    # each pack, worth p_i = (1, 16, 256, 4096, 65536, 256, 4096, 65536)[i] per unit of q.
    return (a0 + g_0 * _plane_scale(sc_ptr, g, N, offs_p, mask_p, 0, 1.0)[None, :],
            a1 + g_1 * _plane_scale(sc_ptr, g, N, offs_p, mask_p, 2, 0.0625)[None, :],
            a2 + g_2 * _plane_scale(sc_ptr, g, N, offs_p, mask_p, 4, 0.00390625)[None, :],
            a3 + g_3 * _plane_scale(sc_ptr, g, N, offs_p, mask_p, 6, 0.000244140625)[None, :],
            a4 + g_4 * _plane_scale(sc_ptr, g, N, offs_p, mask_p, 1, 0.0000152587890625)[None, :],
            a5 + g_5 * _plane_scale(sc_ptr, g, N, offs_p, mask_p, 3, 0.00390625)[None, :],
            a6 + g_6 * _plane_scale(sc_ptr, g, N, offs_p, mask_p, 5, 0.000244140625)[None, :],
            a7 + g_7 * _plane_scale(sc_ptr, g, N, offs_p, mask_p, 7, 0.0000152587890625)[None, :])


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
        z0, z1, z2, z3, z4, z5, z6, z7 = _zero_planes(zw, magic, 1, ASM)
        g_0, g_1, g_2, g_3, g_4, g_5, g_6, g_7 = _zero_tiles(BLOCK_K, offs_p.shape[0])
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
            g_0, g_1, g_2, g_3, g_4, g_5, g_6, g_7 = _plane_dots(
                w, xk, magic, z0, z1, z2, z3, z4, z5, z6, z7, g_0, g_1, g_2, g_3, g_4, g_5, g_6, g_7, 1, ASM)
        w_ptrs += GROUP * stride_q
        x_rows += GROUP
        nw_rows += GROUP
        a0, a1, a2, a3, a4, a5, a6, a7 = _add_scaled_planes(sc_ptr, g, N, offs_p, mask_p, g_0, g_1, g_2, g_3, g_4,
                                                            g_5, g_6, g_7, a0, a1, a2, a3, a4, a5, a6, a7)
    return a0, a1, a2, a3, a4, a5, a6, a7
