"""The ring K loop of the batch-1 FP8 GEMV (`kernels.fp8_gemv`, `Fp8GemvConfig.ring`): the lean loop
(`kernels.fp8_gemv_lean`) with the next iteration's weights requested before this iteration's math.

Why: the lean loop requests an iteration's chunks, waits for all of them, does the math, and only then requests
the next ones, so each warp's bytes in flight drop to zero once per iteration. At batch 1 on an H100 the three
FP8 projections after attention stream 2.68 TB/s in a CUDA graph (bench/NOTES.md, nineteenth session) and one
persistent launch of all three was no faster: the launch boundaries were not the loss, the stream inside each
launch is. A register ring (chunk i + 1 in flight during chunk i's math) keeps requests outstanding all the time.
The lean loop could not carry its fp8 tile across iterations: Triton carries fp8 byte by byte (one register per
weight) and repacks it for the conversion. Here the weights are read as int32 words (4 e4m3 per register, loaded
8 bytes per thread and row as in the lean loop), carried as words, and converted with one inline-asm
`cvt.rn.f16x2.e4m3x2` per 2 weights plus an f16 -> f32 per weight (the lean loop's conversions). x is read as
int64 words (4 16-bit values each), so a thread's x words and weight words cover the same K columns (no layout
conversion, no shared memory), and is unpacked with shifts; the prologues round exactly as `kernels.gemv._load_x`.

Sums: each thread accumulates, per row and per word, the 4 products of that word in fp32 (another order than the
lean loop's 8-column fold; same products). 16-bit x only; K and the row stride must be multiples of 4.
"""

from __future__ import annotations

import triton
import triton.language as tl

from kernels.gemv import _row_rstd
from kernels.pdl import wait_for_prior_kernel


@triton.jit
def _e4m3_word_to_f32(w, ASM: tl.constexpr):
    # 4 e4m3 in one int32 (column 4i in the lowest byte) -> 4 fp32 tensors, exactly.
    if ASM:
        return tl.inline_asm_elementwise(
            "{ .reg .b16 lo, hi; .reg .b32 p, q; .reg .f16 a, b, c, d;"
            " mov.b32 {lo, hi}, $4; cvt.rn.f16x2.e4m3x2 p, lo; cvt.rn.f16x2.e4m3x2 q, hi;"
            " mov.b32 {a, b}, p; mov.b32 {c, d}, q;"
            " cvt.f32.f16 $0, a; cvt.f32.f16 $1, b; cvt.f32.f16 $2, c; cvt.f32.f16 $3, d; }",
            "=f,=f,=f,=f,r", [w], dtype=(tl.float32, tl.float32, tl.float32, tl.float32), is_pure=True, pack=1)
    w0 = (w & 0xFF).to(tl.uint8).to(tl.float8e4nv, bitcast=True).to(tl.float32)
    w1 = ((w >> 8) & 0xFF).to(tl.uint8).to(tl.float8e4nv, bitcast=True).to(tl.float32)
    w2 = ((w >> 16) & 0xFF).to(tl.uint8).to(tl.float8e4nv, bitcast=True).to(tl.float32)
    w3 = ((w >> 24) & 0xFF).to(tl.uint8).to(tl.float8e4nv, bitcast=True).to(tl.float32)
    return w0, w1, w2, w3


@triton.jit
def _half(words, j: tl.constexpr, dtype):
    # Element j (0-3) of 4 16-bit values packed in int64 words, as fp32.
    return ((words >> (16 * j)) & 0xFFFF).to(tl.uint16).to(dtype, bitcast=True).to(tl.float32)


@triton.jit
def _x_element(rstd, j: tl.constexpr, xw, gw, uw, dtype, PROLOGUE: tl.constexpr):
    # Column 4 i + j of the GEMV input after the prologue, rounded as `kernels.gemv._load_x` rounds it.
    if PROLOGUE == 1:
        normed = (_half(xw, j, dtype) * rstd).to(dtype).to(tl.float32)
        return (normed * _half(gw, j, dtype)).to(dtype).to(tl.float32)
    elif PROLOGUE == 2:
        gate = _half(xw, j, dtype)
        act = (gate / (1.0 + tl.exp(-gate))).to(dtype).to(tl.float32)
        return (act * _half(uw, j, dtype)).to(dtype).to(tl.float32)
    else:
        return _half(xw, j, dtype)


@triton.jit
def _ring_math(acc, w, x_ptr, norm_w_ptr, k0, offs_w, K, rstd, dtype, PROLOGUE: tl.constexpr, ASM: tl.constexpr):
    # acc [BLOCK_N, BLOCK_K // 4] += the chunk's products: x words loaded in the weight words' columns.
    words = (k0 // 4) + offs_w
    mask_w = words * 4 < K
    x64 = x_ptr.to(tl.pointer_type(tl.int64), bitcast=True)
    xw = tl.load(x64 + words, mask=mask_w, other=0, eviction_policy="evict_last")
    gw = xw
    uw = xw
    if PROLOGUE == 1:
        gw = tl.load(norm_w_ptr.to(tl.pointer_type(tl.int64), bitcast=True) + words, mask=mask_w, other=0,
                     eviction_policy="evict_last")
    if PROLOGUE == 2:
        uw = tl.load(x64 + K // 4 + words, mask=mask_w, other=0, eviction_policy="evict_last")
    w0, w1, w2, w3 = _e4m3_word_to_f32(w, ASM)
    acc += w0 * _x_element(rstd, 0, xw, gw, uw, dtype, PROLOGUE)[None, :]
    acc += w1 * _x_element(rstd, 1, xw, gw, uw, dtype, PROLOGUE)[None, :]
    acc += w2 * _x_element(rstd, 2, xw, gw, uw, dtype, PROLOGUE)[None, :]
    acc += w3 * _x_element(rstd, 3, xw, gw, uw, dtype, PROLOGUE)[None, :]
    return acc


@triton.jit
def _ring_load(w_words, k0, k_end, offs_w, mask_n, EVEN_N: tl.constexpr):
    # One chunk's weight words at column k0 (whole words: K is a multiple of 4). Past the split's end the
    # predicate turns the load off (no traffic); 0 decodes to +0.0.
    cols = k0 // 4 + offs_w
    ptrs = tl.max_contiguous(w_words + cols[None, :], [1, 2])
    if EVEN_N:
        mask = (cols * 4 < k_end)[None, :]
    else:
        mask = mask_n[:, None] & (cols * 4 < k_end)[None, :]
    return tl.load(ptrs, mask=mask, other=0, eviction_policy="evict_first")


@triton.jit
def _fp8_ring_k_loop(x_ptr, norm_w_ptr, w_ptr, offs_n, mask_n, stride_wn, k_begin, k_end, K, eps, dtype,
                     PROLOGUE: tl.constexpr, EVEN_N: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                     NORM_BLOCK: tl.constexpr, SLOTS: tl.constexpr, ASM: tl.constexpr, PDL: tl.constexpr = False):
    # Row sums ([BLOCK_N], unscaled) of this split. The chunk at k0 + BLOCK_K is requested before the math of
    # the chunk at k0 (the ring); the first chunk goes out before PDL's wait and the RMSNorm statistics.
    offs_w = tl.arange(0, BLOCK_K // 4)
    w_words = w_ptr.to(tl.pointer_type(tl.int32), bitcast=True) + (offs_n.to(tl.int64) * (stride_wn // 4))[:, None]
    acc = tl.zeros([BLOCK_N, BLOCK_K // 4], dtype=tl.float32)
    cur = _ring_load(w_words, k_begin, k_end, offs_w, mask_n, EVEN_N)
    if PDL:
        wait_for_prior_kernel()
    rstd = 1.0
    if PROLOGUE == 1:
        rstd = _row_rstd(x_ptr, K, eps, NORM_BLOCK)
    if SLOTS == 1:
        # One slot: the next chunk's words are requested, this chunk's math runs, the words move into the slot
        # (register moves, ~0.5 per weight; fewer registers: ~80 at 8 rows, 24 warps per SM).
        for k0 in tl.range(k_begin, k_end, BLOCK_K, num_stages=1):
            nxt = _ring_load(w_words, k0 + BLOCK_K, k_end, offs_w, mask_n, EVEN_N)
            acc = _ring_math(acc, cur, x_ptr, norm_w_ptr, k0, offs_w, K, rstd, dtype, PROLOGUE, ASM)
            cur = nxt
    else:
        # Two slots taken in turn, so loaded words are never copied (~120 registers at 8 rows, 16 warps per SM).
        # A chunk past the split's end loads nothing and its zero words add nothing.
        for k0 in tl.range(k_begin, k_end, 2 * BLOCK_K, num_stages=1):
            nxt = _ring_load(w_words, k0 + BLOCK_K, k_end, offs_w, mask_n, EVEN_N)
            acc = _ring_math(acc, cur, x_ptr, norm_w_ptr, k0, offs_w, K, rstd, dtype, PROLOGUE, ASM)
            cur = _ring_load(w_words, k0 + 2 * BLOCK_K, k_end, offs_w, mask_n, EVEN_N)
            acc = _ring_math(acc, nxt, x_ptr, norm_w_ptr, k0 + BLOCK_K, offs_w, K, rstd, dtype, PROLOGUE, ASM)
    return tl.sum(acc, 1)
