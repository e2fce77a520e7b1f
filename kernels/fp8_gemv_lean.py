"""The lean K loop of the batch-1 FP8 GEMV (`kernels.fp8_gemv`, `Fp8GemvConfig.lean`), split out so that module
keeps the config, the kernels and the launcher. Triton inlines it into `_fp8_gemv_kernel`.

Why a second loop: the plain loop's weight tile is 16 fp8 (16 bytes) per thread per row, while a 16-byte load of
x holds 8 bf16, so Triton gives x its own layout and moves it into the weight's column layout through shared
memory, with 2 bar.sync per K chunk (bench/NOTES.md, "FP8 GEMV SASS"). Here the weight pointers are declared
8-contiguous: the coalescing pass then gives the weight tile 8 fp8 (8 bytes) per thread per row, the same K
columns per thread as x's 16-byte load. With BLOCK_K = 8 x (threads), every thread's 8 columns are its own in
both tiles, x is used as it was loaded (no shared memory, no barrier), and each x element (and its RMSNorm /
SiLU prologue) is computed once per thread per chunk for all BLOCK_N rows. Each thread folds its 8 columns into
one fp32 accumulator per row, so 16-32 rows per thread fit in registers, and requests `lean` chunks per loop
iteration before any math (more weight bytes in flight than the plain loop's one chunk)."""

from __future__ import annotations

import triton
import triton.language as tl

from kernels.gemv import _load_x, _row_rstd
from kernels.pdl import wait_for_prior_kernel


@triton.jit
def _lean_load(ptrs, offs_k, k_end, mask_n, FIRST: tl.constexpr, EVEN_N: tl.constexpr, EVEN_K: tl.constexpr):
    # One chunk at `ptrs` (its columns `offs_k`; this split ends at column `k_end`). The contiguity hint sits on
    # the pointer tensor the load reads (on the offsets it did not reach the coalescing pass): 8 fp8 per vector
    # keep the tile's per-thread vector at x's 8 columns. Whole tiles: an iteration's first chunk is always inside
    # the split; a later one may lie past it (requested in the same iteration, never used): its predicate (uniform
    # over each vector) turns the load off, no memory traffic, and other=0 keeps fp8 NaN patterns out of the
    # zero-x products.
    ptrs = tl.max_contiguous(ptrs, [1, 8])
    if EVEN_N and EVEN_K:
        if FIRST:
            return tl.load(ptrs, eviction_policy="evict_first")
        return tl.load(ptrs, mask=(offs_k < k_end)[None, :], other=0.0, eviction_policy="evict_first")
    return tl.load(ptrs, mask=mask_n[:, None] & (offs_k < k_end)[None, :], other=0.0, eviction_policy="evict_first")


@triton.jit
def _split8(t, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    # A thread's 8 consecutive columns of a [BLOCK_N, BLOCK_K] tile as 8 [BLOCK_N, BLOCK_K // 8] tiles (the
    # reshape keeps them in the thread: register renaming, no data movement).
    t0, t1 = tl.split(tl.reshape(t, [BLOCK_N, BLOCK_K // 8, 2, 2, 2]))
    t00, t01 = tl.split(t0)
    t10, t11 = tl.split(t1)
    a, b = tl.split(t00)
    c, d = tl.split(t01)
    e, f = tl.split(t10)
    g, h = tl.split(t11)
    return a, b, c, d, e, f, g, h


@triton.jit
def _chunk_fma(acc, w, xk, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    # acc [BLOCK_N, BLOCK_K // 8] += the chunk's 8 products per thread and row, one fp32 FFMA each. Folding the
    # 8 columns into one accumulator keeps 1 register per row (not 8): rows per thread, and so the reuse of
    # each x element and its prologue, are no longer capped by the accumulator's registers. x is broadcast to
    # the weight tile's shape before the split so both take the same layout.
    wa, wb, wc, wd, we, wf, wg, wh = _split8(w.to(tl.float32), BLOCK_N, BLOCK_K)
    xa, xb, xc, xd, xe, xf, xg, xh = _split8(tl.broadcast_to(xk[None, :], [BLOCK_N, BLOCK_K]), BLOCK_N, BLOCK_K)
    acc += wa * xa
    acc += wb * xb
    acc += wc * xc
    acc += wd * xd
    acc += we * xe
    acc += wf * xf
    acc += wg * xg
    acc += wh * xh
    return acc


@triton.jit
def _lean_loads(base, k0, k_begin, k_end, offs_k0, mask_n, EVEN_N: tl.constexpr, EVEN_K: tl.constexpr,
                BLOCK_K: tl.constexpr, UNROLL: tl.constexpr):
    # The UNROLL chunks of the iteration at k0 (unused slots repeat chunk 0: no extra load). Their pointers are
    # immediate offsets from one pointer tile.
    ptrs = base + (k0 - k_begin)
    offs_k = k0 + offs_k0
    w0 = _lean_load(ptrs, offs_k, k_end, mask_n, True, EVEN_N, EVEN_K)
    w1 = w0
    w2 = w0
    w3 = w0
    if UNROLL > 1:
        w1 = _lean_load(ptrs + BLOCK_K, offs_k + BLOCK_K, k_end, mask_n, False, EVEN_N, EVEN_K)
    if UNROLL > 2:
        w2 = _lean_load(ptrs + 2 * BLOCK_K, offs_k + 2 * BLOCK_K, k_end, mask_n, False, EVEN_N, EVEN_K)
    if UNROLL > 3:
        w3 = _lean_load(ptrs + 3 * BLOCK_K, offs_k + 3 * BLOCK_K, k_end, mask_n, False, EVEN_N, EVEN_K)
    return w0, w1, w2, w3


@triton.jit
def _lean_loads_rest(base, k0, k_begin, k_end, offs_k0, mask_n, w0, w1, w2, w3, EVEN_N: tl.constexpr,
                     EVEN_K: tl.constexpr, BLOCK_K: tl.constexpr, FROM: tl.constexpr, UNROLL: tl.constexpr):
    # Chunks FROM .. UNROLL - 1 of the iteration at k0 (FROM >= 1: masked as any later chunk), into the slots
    # `_lean_loads` with UNROLL = FROM left repeating chunk 0; none when FROM = UNROLL.
    ptrs = base + (k0 - k_begin)
    offs_k = k0 + offs_k0
    if FROM <= 1 and UNROLL > 1:
        w1 = _lean_load(ptrs + BLOCK_K, offs_k + BLOCK_K, k_end, mask_n, False, EVEN_N, EVEN_K)
    if FROM <= 2 and UNROLL > 2:
        w2 = _lean_load(ptrs + 2 * BLOCK_K, offs_k + 2 * BLOCK_K, k_end, mask_n, False, EVEN_N, EVEN_K)
    if FROM <= 3 and UNROLL > 3:
        w3 = _lean_load(ptrs + 3 * BLOCK_K, offs_k + 3 * BLOCK_K, k_end, mask_n, False, EVEN_N, EVEN_K)
    return w0, w1, w2, w3


@triton.jit
def _lean_chunk(acc, w, x_ptr, norm_w_ptr, offs_k, K, rstd, dtype, PROLOGUE: tl.constexpr, BLOCK_N: tl.constexpr,
                BLOCK_K: tl.constexpr, L2_ONLY: tl.constexpr = False):
    # x past this split's k_end meets zero weights; past K it is masked inside _load_x.
    xk = _load_x(x_ptr, norm_w_ptr, offs_k, K, rstd, dtype, PROLOGUE, L2_ONLY)
    return _chunk_fma(acc, w, xk, BLOCK_N, BLOCK_K)


@triton.jit
def _lean_math(acc, w0, w1, w2, w3, x_ptr, norm_w_ptr, k0, offs_k0, K, rstd, dtype, PROLOGUE: tl.constexpr,
               BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, UNROLL: tl.constexpr, L2_ONLY: tl.constexpr = False):
    offs_k = k0 + offs_k0
    acc = _lean_chunk(acc, w0, x_ptr, norm_w_ptr, offs_k, K, rstd, dtype, PROLOGUE, BLOCK_N, BLOCK_K, L2_ONLY)
    if UNROLL > 1:
        acc = _lean_chunk(acc, w1, x_ptr, norm_w_ptr, offs_k + BLOCK_K, K, rstd, dtype, PROLOGUE, BLOCK_N, BLOCK_K,
                          L2_ONLY)
    if UNROLL > 2:
        acc = _lean_chunk(acc, w2, x_ptr, norm_w_ptr, offs_k + 2 * BLOCK_K, K, rstd, dtype, PROLOGUE, BLOCK_N,
                          BLOCK_K, L2_ONLY)
    if UNROLL > 3:
        acc = _lean_chunk(acc, w3, x_ptr, norm_w_ptr, offs_k + 3 * BLOCK_K, K, rstd, dtype, PROLOGUE, BLOCK_N,
                          BLOCK_K, L2_ONLY)
    return acc


@triton.jit
def _lean_iterations(acc, base, x_ptr, norm_w_ptr, k_from, k_begin, k_end, K, rstd, mask_n, offs_k0, dtype,
                     PROLOGUE: tl.constexpr, EVEN_N: tl.constexpr, EVEN_K: tl.constexpr, BLOCK_N: tl.constexpr,
                     BLOCK_K: tl.constexpr, UNROLL: tl.constexpr, L2_ONLY: tl.constexpr = False):
    # The loop's iterations from column k_from to the split's end (`base`: the pointer tile at k_begin). Shared with
    # the persistent layer tail (kernels/fp8_layer_tail.py), whose later phases read x with L2_ONLY.
    # num_stages=1: Triton's own pipeliner would route the loads through cp.async and shared memory again.
    for k0 in tl.range(k_from, k_end, UNROLL * BLOCK_K, num_stages=1):
        w0, w1, w2, w3 = _lean_loads(base, k0, k_begin, k_end, offs_k0, mask_n, EVEN_N, EVEN_K, BLOCK_K, UNROLL)
        acc = _lean_math(acc, w0, w1, w2, w3, x_ptr, norm_w_ptr, k0, offs_k0, K, rstd, dtype, PROLOGUE, BLOCK_N,
                         BLOCK_K, UNROLL, L2_ONLY)
    return acc


@triton.jit
def _fp8_lean_k_loop(x_ptr, norm_w_ptr, w_rows, mask_n, k_begin, k_end, K, eps, dtype,
                     PROLOGUE: tl.constexpr, EVEN_N: tl.constexpr, EVEN_K: tl.constexpr,
                     BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, NORM_BLOCK: tl.constexpr,
                     UNROLL: tl.constexpr, PDL: tl.constexpr = False, PREWAIT: tl.constexpr = 0):
    # Row sums ([BLOCK_N], unscaled) of this split: fp32 products accumulated with fp32 FFMAs, as in the plain
    # loop (summed in another order). Each iteration requests UNROLL chunks before any math. Not a ring
    # carried across iterations: a loop-carried fp8 tile is carried byte by byte (one register per weight),
    # and repacking the bytes for the e4m3x2 conversion cost ~2 more instructions per weight in SASS. With
    # RMSNorm the first iteration is peeled so that its weights are requested before the row statistics (an
    # L2 round trip of the whole row and a block reduction): with K = 4096 that iteration is a quarter to half
    # of a program's bytes, and its DRAM requests would otherwise wait behind the reduction. (Peeling costs
    # registers, ~20 at 16 rows, so the other prologues, which have nothing to overlap, do not - unless PDL: then
    # the peeled loads go out before waiting for the kernel that wrote x, kernels/pdl.py; PREWAIT > 0 sends only
    # that many of them before the wait, `Fp8GemvConfig.prewait`.)
    offs_k0 = tl.arange(0, BLOCK_K)
    # The hint must sit on an op: a loop-carried pointer tile is a block argument and would drop it.
    base = tl.max_contiguous(w_rows + (k_begin + offs_k0)[None, :], [1, 8])
    acc = tl.zeros([BLOCK_N, BLOCK_K // 8], dtype=tl.float32)
    rstd = 1.0
    k_loop = k_begin
    if PROLOGUE == 1 or PDL:
        # PREWAIT > 0: only that many of the peeled chunks before the wait, the rest right after it
        w0, w1, w2, w3 = _lean_loads(base, k_begin, k_begin, k_end, offs_k0, mask_n, EVEN_N, EVEN_K, BLOCK_K,
                                     PREWAIT if PREWAIT > 0 else UNROLL)
        if PDL:
            wait_for_prior_kernel()
        w0, w1, w2, w3 = _lean_loads_rest(base, k_begin, k_begin, k_end, offs_k0, mask_n, w0, w1, w2, w3, EVEN_N,
                                          EVEN_K, BLOCK_K, PREWAIT if PREWAIT > 0 else UNROLL, UNROLL)
        if PROLOGUE == 1:
            rstd = _row_rstd(x_ptr, K, eps, NORM_BLOCK)
        acc = _lean_math(acc, w0, w1, w2, w3, x_ptr, norm_w_ptr, k_begin, offs_k0, K, rstd, dtype, PROLOGUE,
                         BLOCK_N, BLOCK_K, UNROLL)
        k_loop = k_begin + UNROLL * BLOCK_K
    acc = _lean_iterations(acc, base, x_ptr, norm_w_ptr, k_loop, k_begin, k_end, K, rstd, mask_n, offs_k0, dtype,
                           PROLOGUE, EVEN_N, EVEN_K, BLOCK_N, BLOCK_K, UNROLL)
    return tl.sum(acc, 1)
