"""The FP8 x FP8 tensor-core K loop of the batch-1 FP8 GEMV (`kernels.fp8_gemv`, `Fp8GemvConfig.use_dot = 2`).
Triton inlines it into `_fp8_gemv_kernel`.

Why: every CUDA-core loop of the FP8 GEMV converts each weight before it can multiply it (e4m3 -> f16 -> f32, on the
SM's narrow conversion pipe), and the conversions, not the bytes, set its pace: 3.2 TB/s per layer on an H200 where
the bf16 GEMV, one FMA per weight, streams at 3.9 (bench/NOTES.md, tenth session). Hopper's tensor cores multiply
e4m3 by e4m3 directly, so here the weight tile goes from global memory to shared memory (cp.async, software
pipelined over `num_stages` chunks) and into the mma untouched: no per-weight instruction on the SM at all.

The price would be the activation, which must be e4m3 too: one e4m3 term per element loses ~4 % of a dot
product (3 mantissa bits; the W8A8 GEMM of larger batches, `kernels.fp8_gemm`, pays that). Here each K chunk of x
(after the RMSNorm / SiLU prologue, computed in fp32 exactly as the other loops do) is split into three e4m3 terms,
x ~ s * (q0 + q1 / 16 + q2 / 256), where q1 quantizes q0's rounding error and q2 q1's: 8 significant bits or
more, what bf16 x carries. The three terms are three columns of the mma's B tile, which is 16 columns wide in
any case, so the extra terms cost no mma and no weight traffic. Products are rescaled per chunk and summed in
fp32.

Layout: the weight tile [BLOCK_N, BLOCK_K] is the mma's A operand (K-major, as e4m3 mma wants it, and as the
weight rows are stored), x is the B operand as a [BLOCK_K, 16] tile whose column 0 holds the chunk (16 is the
narrowest wgmma N that Triton emits; the other 15 columns are zero). BLOCK_N >= 64 with 4 warps maps onto
Hopper's 64-row wgmma."""

from __future__ import annotations

import triton
import triton.language as tl

from kernels.gemv import _load_x

E4M3_MAX = tl.constexpr(448.0)


@triton.jit
def _round_e4m3(v):
    """fp32 -> the nearest e4m3 value (ties to even; |v| <= 448), still fp32, so that the cast to e4m3 is exact and
    the remainder v - result is exactly what the mma will not see. Normal range: keep 3 mantissa bits on the
    integer pipe; below 2^-6 (subnormals, a fixed 2^-9 step): 1.5 * 2^14 has an ulp of 2^-9, so adding and
    subtracting it rounds to that step. Why not `.to(tl.float8e4nv)` and back: Triton's interpreter rounds values
    just below a power of two to the power below (31.99 -> 16)."""
    bits = v.to(tl.int32, bitcast=True)
    normal = ((bits + 0x7FFFF + ((bits >> 20) & 1)) & -1048576).to(tl.float32, bitcast=True)  # 0xFFF00000
    return tl.where(tl.abs(v) < 0.015625, (v + 24576.0) - 24576.0, normal)


@triton.jit
def _fp8_w8a8_k_loop(x_ptr, norm_w_ptr, w_rows, mask_n, k_begin, k_end, K, rstd, dtype, PROLOGUE: tl.constexpr,
                     EVEN_N: tl.constexpr, EVEN_K: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                     NUM_STAGES: tl.constexpr):
    """y[n] = sum over this program's K range of w[n, k] * x[k], with x quantized per chunk ([BLOCK_N], fp32, not
    yet multiplied by the weight scale)."""
    offs_k0 = tl.arange(0, BLOCK_K)
    cols = tl.arange(0, 16)
    acc = tl.zeros([BLOCK_N, 16], dtype=tl.float32)
    for k0 in tl.range(k_begin, k_end, BLOCK_K, num_stages=NUM_STAGES):
        offs_k = k0 + offs_k0
        # The load feeds the mma and nothing else, so the pipeliner turns it into cp.async into shared memory.
        if EVEN_N and EVEN_K:
            w = tl.load(w_rows + offs_k[None, :], eviction_policy="evict_first")
        else:
            w = tl.load(w_rows + offs_k[None, :], mask=mask_n[:, None] & (offs_k < k_end)[None, :], other=0.0,
                        eviction_policy="evict_first")
        # x past this split's k_end meets zero weights; past K it is zero (masked inside _load_x).
        xk = _load_x(x_ptr, norm_w_ptr, offs_k, K, rstd, dtype, PROLOGUE)
        # Three e4m3 terms, x ~ s * (q0 + q1 / 16 + q2 / 256): q1 quantizes what rounding q0 left over, q2 what q1
        # left. |x / s| <= 448 and e4m3's spacing there is 32, so each remainder is <= 16 and 16x it fits e4m3:
        # one amax per chunk, power-of-2 steps (exact). Columns 0-2 of the B tile; the mma is 16 columns wide
        # anyway, so the extra terms cost no mma instruction and no weight traffic.
        s_x = tl.maximum(tl.max(tl.abs(xk), 0), 1e-30) / E4M3_MAX
        t0 = xk / s_x
        q0 = _round_e4m3(t0)
        t1 = (t0 - q0) * 16.0
        q1 = _round_e4m3(t1)
        q2 = _round_e4m3((t1 - q1) * 16.0)
        # Built as [16, BLOCK_K] and transposed, not as [BLOCK_K, 16]: Triton's default layout for the latter
        # spreads the 16 columns over 16 threads, so every thread would redo the prologue and the rounding above
        # for 1/2 of the chunk (11 SASS instructions per weight); for this shape each x element is one thread's.
        xq = tl.where(cols[:, None] == 0, q0[None, :],
                      tl.where(cols[:, None] == 1, q1[None, :], tl.where(cols[:, None] == 2, q2[None, :], 0.0)))
        col_scale = tl.where(cols == 0, s_x, tl.where(cols == 1, s_x * 0.0625, tl.where(cols == 2, s_x * 0.00390625,
                                                                                          0.0)))  # [16]
        acc += tl.dot(w, tl.trans(xq.to(tl.float8e4nv))) * col_scale[None, :]
    return tl.sum(acc, 1)  # columns 2..15 are zero
