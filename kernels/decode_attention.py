"""Decode attention over the token-indexed KV pool: one query token per request, split-KV in two stages.

Stage 1 runs one program per (request, kv head, kv split): it gathers the split's K/V rows through
`req_to_token`, attends all q heads of the GQA group at once (they share the K/V loads, and a group
of >= 16 rows feeds tensor cores) and writes a partial output normalised by its own softmax sum, plus
the log-sum-exp (base 2). Stage 2 runs one program per (request, q head) and merges the splits by
their log-sum-exp. Splitting exists because a decode batch has few (request, kv head) pairs: without
it a small batch with long sequences would leave most SMs idle.

Single pass (`counters` given, or `max_kv_splits == 1`): no stage-2 launch. A request whose split
count is 1 has stage 1 write the final output directly; otherwise each split program writes its
partial, then bumps a per-(request, kv head) counter (atomic, acquire-release), and the program that
arrives last merges the splits exactly as stage 2 would and resets the counter to 0. At batch 1 this
saves one launch per layer (~2.5 us plus a graph node) for a few hundred ns of merge in one program.

A request gets about `min(max_kv_splits, ceil(seq_len / min_split_len))` splits (`long_split_len` instead
of `min_split_len` past `long_from` tokens), computed in the kernels from `seq_lens`, so the host never reads
lengths and the launch is CUDA-graph safe as long as `max_kv_splits` is fixed for the captured batch size.

With `rotary=DecodeRotary(...)` stage 1 also does what `rotary_kv_store` would have done before it: every
program rotates its q rows in registers, and the split holding the newest position rotates this step's k and
writes k and v into the pool before it reads the pool. Same values bit for bit, one launch per layer fewer.

Early KV (`early_kv`, batch 1 with `rotary`; `TESSERA_DECODE_EARLY_KV`): at batch 1 the kernel is a chain of
dependent reads (lengths, slots, K/V rows, this token's k written then read back, partials), each a memory
round trip, so it takes several us for a few hundred KB. Most of the chain does not depend on the qkv GEMV before
it: the positions, slots and cos/sin are step inputs and the earlier tokens' K/V rows were written by earlier
steps. So the kernel is a PDL launch (`kernels/pdl.py`) that the qkv GEMV triggers as its programs start; each
program loads those and, when its split is at most `EARLY_ROWS` long (short contexts), all its K/V rows into
registers while the GEMV streams, then waits for it, reads q and this step's k / v, and takes this token's rotated
row from registers instead of storing it and reading it back (it is still stored, for later steps). A longer split
loads nothing early beyond the step inputs and runs the plain loop after the wait. The arithmetic is the plain
path's, block for block.

An fp8 (e4m3) pool holds `k / k_scale` and `v / v_scale`: `k_scale` is folded into the softmax scale and
`v_scale` into the output (both per-tensor, so neither costs a multiply per element). With a 16-bit q the
rows are upcast to fp16, not to q's dtype: Hopper converts e4m3 pairs to f16x2 in one instruction, while
e4m3 -> bf16 goes through f16 and f32 (three conversions per element, on the narrow conversion pipe, for
a kernel whose bytes fp8 just halved). Every e4m3 value is exact in fp16; q is clamped to fp16's range
(once per program) and p in [0, 1] keeps more mantissa in fp16 than in bf16. An fp32 q keeps fp32.
"""

from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

from kernels import decode_stamps, pdl
from kernels._common import KV_DTYPES, check_index, check_rows, device_num_sms, dot_precision, next_pow2
from kernels.decode_merge import decode_stage2_kernel, merge_splits, split_layout, store_partial
from kernels.decode_rotary import (
    DecodeRotary,
    check_rotary,
    new_kv_for_pool,
    rope_row,
    rotary_and_store_new_kv,
    rotate_q_rows,
    store_new_kv,
)
from kernels.decode_stamps import stamp_now, store_stamps
from kernels.decode_tiles import DecodeTiles, launch_shape
from kernels.pdl import wait_for_prior_kernel
from kernels.rotary import RopeCache

LOG2E = 1.4426950408889634
# Past LONG_SPLIT_FROM tokens a split holds at least LONG_SPLIT_LEN tokens (below: `min_split_len`, 64). The H200
# sweep of batch-1 single-pass decode (`bench/kernels_bench.py --sweep-min-split-len`, max_kv_splits 32) had
# 64-token splits best at <= 512 tokens (5.91 vs 6.35 us at 512) and 128-token ones at 2048 (7.16 vs 8.64 us:
# 16 splits instead of 32, each program loops twice as long and the merge reads half the partials); from
# 4096 tokens both give the max_kv_splits cap, so only 1k-4k contexts change. A device session can move the
# threshold through TESSERA_DECODE_LONG_SPLIT_FROM (a huge value restores 64-token splits at every length).
LONG_SPLIT_LEN = 128
# Early KV: the longest split whose K/V rows are loaded before the wait (module docstring); a short-context split is
# 64 rows. The early kernel takes 207 registers (sm_90); capped at 128 (so it fits beside three AWQ qkv programs) it
# was no faster (bench/RESULTS.md, 2026-12-06).
EARLY_ROWS = 64
LONG_SPLIT_FROM = int(os.environ.get("TESSERA_DECODE_LONG_SPLIT_FROM") or 1024)


@triton.jit
def _e4m3_to_f16(x, ASM: tl.constexpr):
    """e4m3 -> fp16 (exact), converted in the layout `x` was loaded in (`DecodeTiles.fp8_convert`).

    Triton's own cast is hoisted below the layout conversion to the dot operand (moving fp8 moves half the
    bytes), and for V (the MMA's B operand wants 4 rows of one column per thread) that conversion is one
    `LDS.U8` per element. An inline asm that is not pure cannot be moved across that conversion, so the
    conversion happens on fp16 instead: 128-bit shared stores and `ldmatrix(.trans)`. Same `cvt` as Triton's
    (two elements per instruction). ASM=0 (the interpreter, which cannot run asm) is the plain cast."""
    if ASM:
        # 4 bytes in one register (element 0 lowest) -> two f16x2 registers (elements 0, 1 in $0).
        return tl.inline_asm_elementwise(
            "{ .reg .b16 lo, hi; mov.b32 {lo, hi}, $2; cvt.rn.f16x2.e4m3x2 $0, lo; cvt.rn.f16x2.e4m3x2 $1, hi; }",
            "=r,=r,r", [x.to(tl.uint8, bitcast=True)], dtype=tl.float16, is_pure=False, pack=4)
    else:
        return x.to(tl.float16)


@triton.jit
def _decode_stage1_kernel(
    q_ptr, k_buf_ptr, v_buf_ptr, req_to_token_ptr, req_pool_idx_ptr, seq_lens_ptr,
    part_out_ptr, part_lse_ptr, out_ptr, counter_ptr,
    new_k_ptr, new_v_ptr, pos_ptr, loc_ptr, cos_ptr, sin_ptr,
    stride_nkb, stride_nkh, stride_nvb, stride_nvh, stride_cos, stride_sin, k_store_scale, v_store_scale,
    stride_qb, stride_qh,
    stride_kn, stride_kh, stride_vn, stride_vh,
    stride_r2t,
    stride_pob, stride_poh, stride_pos,
    stride_plb, stride_plh,
    stride_ob, stride_oh,
    qk_scale_log2, v_scale, max_kv_splits, min_split_len, long_split_len, long_from,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr, DOT_PRECISION: tl.constexpr, KV_FP8: tl.constexpr, FP8_AS_FP16: tl.constexpr,
    SINGLE_PASS: tl.constexpr, MERGE_H: tl.constexpr, BLOCK_S: tl.constexpr, CHUNK_S: tl.constexpr,
    FP8_CONVERT: tl.constexpr, ASM: tl.constexpr, PDL: tl.constexpr = False,
    ROTARY: tl.constexpr = False, HALF: tl.constexpr = 1, EARLY_N: tl.constexpr = 0,
    stamps_ptr=None, STAMP: tl.constexpr = False,
):
    if STAMP:  # kernels/decode_stamps.py (bench/attention_stamps.py)
        t_start = stamp_now()
    if PDL and not EARLY_N:  # batch-1 decode with TESSERA_PDL: q and the new K/V come from the kernel before
        wait_for_prior_kernel()
    b = tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)

    seq_len = tl.load(seq_lens_ptr + b).to(tl.int32)
    num_splits, split_len = split_layout(seq_len, max_kv_splits, min_split_len, long_split_len, long_from)
    if SINGLE_PASS:
        # seq_len 0 (a padded row) has no split: program 0 still runs (empty loop) and writes zeros.
        if split >= tl.maximum(num_splits, 1):
            return
    else:
        if split >= num_splits:
            return
    start = split * split_len
    end = tl.minimum(start + split_len, seq_len)
    req_row = tl.load(req_pool_idx_ptr + b).to(tl.int64)

    offs_h = tl.arange(0, BLOCK_H)
    offs_d = tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    mask_h = offs_h < GROUP
    mask_d = offs_d < HEAD_DIM
    q_heads = kv_head * GROUP + offs_h  # [BLOCK_H]

    q_rows = q_ptr + b * stride_qb + q_heads[:, None] * stride_qh
    if EARLY_N:
        # Early KV (module docstring): before the wait, only step inputs and earlier tokens' pool rows.
        c, s, first_half, partner_d = rope_row(pos_ptr, cos_ptr, sin_ptr, b, offs_d, mask_d, stride_cos, stride_sin,
                                               HALF)
        offs0 = start + tl.arange(0, EARLY_N)
        short = end - start <= EARLY_N  # the whole split is early rows (short contexts); else the usual loop
        early_end = tl.where(short, tl.minimum(end, seq_len - 1), start)  # this step's row is not in the pool yet
        k0, v0 = _load_kv_rows(req_to_token_ptr + req_row * stride_r2t, offs0, offs0 < early_end, k_buf_ptr,
                               v_buf_ptr, kv_head, stride_kn, stride_kh, stride_vn, stride_vh, offs_d, mask_d)
        slot_new = tl.load(loc_ptr + b).to(tl.int64)
        if STAMP:
            t_before_wait = stamp_now()
        if PDL:
            wait_for_prior_kernel()
        if STAMP:
            t_after_wait = stamp_now()
        q = tl.load(q_rows + offs_d[None, :], mask=mask_h[:, None] & mask_d[None, :], other=0.0)
        q = rotate_q_rows(q, q_rows, mask_h[:, None], c, s, first_half, partner_d, mask_d)
        k_new, v_new = new_kv_for_pool(b, kv_head, offs_d, mask_d, c, s, first_half, partner_d, new_k_ptr, new_v_ptr,
                                       stride_nkb, stride_nkh, stride_nvb, stride_nvh, k_store_scale, v_store_scale,
                                       k_buf_ptr.dtype.element_ty, KV_FP8)
        if (split == num_splits - 1) & (seq_len > 0):  # for later steps, and for a long split's loop below
            store_new_kv(k_new, v_new, slot_new, kv_head, offs_d, mask_d, k_buf_ptr, v_buf_ptr, stride_kn, stride_kh,
                         stride_vn, stride_vh)
    else:
        q = tl.load(q_rows + offs_d[None, :], mask=mask_h[:, None] & mask_d[None, :], other=0.0)  # [BLOCK_H, BLOCK_D]
        if ROTARY:  # `decode_attention(rotary=...)`: this token's rotary and K/V store, no separate launch
            q = rotary_and_store_new_kv(q, q_rows, mask_h[:, None], b, kv_head, split, num_splits, seq_len, offs_d,
                                        mask_d, new_k_ptr, new_v_ptr, pos_ptr, loc_ptr, cos_ptr, sin_ptr, stride_nkb,
                                        stride_nkh, stride_nvb, stride_nvh, stride_cos, stride_sin, k_store_scale,
                                        v_store_scale, k_buf_ptr, v_buf_ptr, stride_kn, stride_kh, stride_vn,
                                        stride_vh, KV_FP8, HALF)
    if not KV_FP8:  # a 16-bit pool sets the dot dtype
        q = q.to(k_buf_ptr.dtype.element_ty)
    elif FP8_AS_FP16:  # fp8 rows are upcast to fp16 (module docstring); else to q's dtype (fp32)
        q = tl.minimum(tl.maximum(q.to(tl.float32), -65504.0), 65504.0).to(tl.float16)

    m_i = tl.full([BLOCK_H], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_H], tl.float32)
    acc = tl.zeros([BLOCK_H, BLOCK_D], tl.float32)
    first = start
    if EARLY_N:
        if short & (start < end):  # all rows were loaded before the wait; this step's token comes from registers
            newest = (offs0 == seq_len - 1)[:, None]
            m_i, l_i, acc = _attend_block(q, tl.where(newest, k_new[None, :], k0), tl.where(newest, v_new[None, :], v0),
                                          offs0 < end, m_i, l_i, acc, qk_scale_log2, DOT_PRECISION, FP8_CONVERT, ASM)
            first = end
    for n0 in range(first, end, BLOCK_N):
        offs = n0 + offs_n
        mask_n = offs < end
        k, v = _load_kv_rows(req_to_token_ptr + req_row * stride_r2t, offs, mask_n, k_buf_ptr, v_buf_ptr, kv_head,
                             stride_kn, stride_kh, stride_vn, stride_vh, offs_d, mask_d)
        m_i, l_i, acc = _attend_block(q, k, v, mask_n, m_i, l_i, acc, qk_scale_log2, DOT_PRECISION, FP8_CONVERT, ASM)
    acc = acc * v_scale  # the pool holds v / v_scale (1.0 for 16-bit pools)

    if SINGLE_PASS:
        if num_splits <= 1:
            # The only split is the whole answer: write it, no partials. (l_i >= 1 unless seq_len is 0.)
            o = acc / tl.maximum(l_i, 1e-30)[:, None]
            tl.store(out_ptr + b * stride_ob + q_heads[:, None] * stride_oh + offs_d[None, :],
                     o.to(out_ptr.dtype.element_ty), mask=mask_h[:, None] & mask_d[None, :])
        else:
            store_partial(part_out_ptr, part_lse_ptr, b, split, q_heads, mask_h, offs_d, mask_d, acc, m_i, l_i,
                           stride_pob, stride_poh, stride_pos, stride_plb, stride_plh)
            # Every thread's partial stores happen before the (single-thread) release of the counter.
            tl.debug_barrier()
            counter = counter_ptr + b * tl.num_programs(1) + kv_head
            arrived = tl.atomic_add(counter, 1, sem="acq_rel", scope="gpu")
            if arrived == num_splits - 1:
                # Last split of this (request, kv head) to finish: merge all splits, as stage 2 does.
                merge_splits(part_out_ptr, part_lse_ptr, out_ptr, b, kv_head, num_splits,
                              stride_pob, stride_poh, stride_pos, stride_plb, stride_plh, stride_ob, stride_oh,
                              GROUP, HEAD_DIM, BLOCK_D, MERGE_H, BLOCK_S, CHUNK_S)
                tl.store(counter, 0)  # ready for the next launch (stream order makes it visible)
        if STAMP and EARLY_N:
            store_stamps(stamps_ptr, split * tl.num_programs(1) + kv_head, t_start, t_before_wait, t_after_wait)
    else:
        store_partial(part_out_ptr, part_lse_ptr, b, split, q_heads, mask_h, offs_d, mask_d, acc, m_i, l_i,
                       stride_pob, stride_poh, stride_pos, stride_plb, stride_plh)


@triton.jit
def _load_kv_rows(slot_row_ptr, offs, mask_n, k_buf_ptr, v_buf_ptr, kv_head, stride_kn, stride_kh, stride_vn, stride_vh,
                  offs_d, mask_d):
    """K and V rows [len(offs), BLOCK_D] of positions `offs` (masked rows read as 0) through the request's slots."""
    # int64 before the multiply: slot * row stride overflows int32 on pools of a few M tokens.
    slots = tl.load(slot_row_ptr + offs, mask=mask_n, other=0).to(tl.int64)
    kv_mask = mask_n[:, None] & mask_d[None, :]
    k = tl.load(k_buf_ptr + slots[:, None] * stride_kn + kv_head * stride_kh + offs_d[None, :], mask=kv_mask, other=0.0)
    v = tl.load(v_buf_ptr + slots[:, None] * stride_vn + kv_head * stride_vh + offs_d[None, :], mask=kv_mask, other=0.0)
    return k, v


@triton.jit
def _attend_block(q, k, v, mask_n, m_i, l_i, acc, qk_scale_log2, DOT_PRECISION: tl.constexpr,
                  FP8_CONVERT: tl.constexpr, ASM: tl.constexpr):
    """One online-softmax step of q's rows over K/V rows (as loaded from the pool); masked rows get no weight."""
    if FP8_CONVERT & 1:  # fp8 pool, fp16 compute: convert before the layout change (DecodeTiles)
        k = _e4m3_to_f16(k, ASM)
    else:
        k = k.to(q.dtype)
    qk = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale_log2  # [BLOCK_H, rows]
    qk = tl.where(mask_n[None, :], qk, float("-inf"))
    # Every block holds >= 1 valid key, so m_new is finite and no row sees exp2(-inf - -inf).
    m_new = tl.maximum(m_i, tl.max(qk, 1))
    alpha = tl.exp2(m_i - m_new)
    p = tl.exp2(qk - m_new[:, None])  # [BLOCK_H, rows]
    l_i = l_i * alpha + tl.sum(p, 1)
    if FP8_CONVERT & 2:
        v = _e4m3_to_f16(v, ASM)
    else:
        v = v.to(q.dtype)
    acc = acc * alpha[:, None] + tl.dot(p.to(q.dtype), v, input_precision=DOT_PRECISION)
    return m_new, l_i, acc


def default_max_kv_splits(batch_size: int, num_kv_heads: int, device: torch.device) -> int:
    """Enough (request, kv head, split) programs for a few waves over the SMs, capped at 32."""
    return max(1, min(32, math.ceil(4 * device_num_sms(device) / max(batch_size * num_kv_heads, 1))))


def decode_attention(
    q: torch.Tensor,  # [B, Hq, D]
    k_buffer: torch.Tensor,  # [N, Hkv, D]
    v_buffer: torch.Tensor,  # [N, Hkv, D]
    req_to_token: torch.Tensor,  # [R, C] int32: KV slot of each position of each request slot
    req_pool_indices: torch.Tensor,  # [B] int32/int64
    seq_lens: torch.Tensor,  # [B] int32/int64, KV length incl. the current token (already stored)
    scaling: float,
    *,
    k_scale: float = 1.0,  # fp8 pools: the pool holds k / k_scale, v / v_scale
    v_scale: float = 1.0,
    out: torch.Tensor | None = None,  # [B, Hq, D]
    max_kv_splits: int | None = None,
    min_split_len: int = 64,
    long_split_len: int = LONG_SPLIT_LEN,  # the minimum split once a request is longer than `long_from` tokens
    long_from: int | None = None,  # None: LONG_SPLIT_FROM, read at each launch
    counters: torch.Tensor | None = None,  # [>= B * Hkv] int32, all zero: enables the single-launch merge
    tiles: DecodeTiles | None = None,  # None: DecodeTiles() (bench/kernels_bench.py --sweep-tiles measures others)
    rotary: DecodeRotary | None = None,  # rotate q / k and store this step's K/V here (see DecodeRotary)
    early_kv: bool | None = None,  # needs `rotary`; None: at batch 1 where `kernels.pdl.early_kv_enabled`
) -> torch.Tensor:  # [B, Hq, D], dtype of q
    """Attend each request's single query token to KV slots `req_to_token[req_pool_indices[b], :seq_lens[b]]`.

    With `counters` (zeroed once by the caller, e.g. the backend; the kernel leaves them zero again) or
    with `max_kv_splits == 1`, there is no stage-2 launch: see the module docstring."""
    check_rows("q", q, 3)
    check_rows("k_buffer", k_buffer, 3, KV_DTYPES)
    check_rows("v_buffer", v_buffer, 3, KV_DTYPES)
    assert k_buffer.is_contiguous() and v_buffer.is_contiguous(), "KV buffers must be contiguous"
    batch_size, num_q_heads, head_dim = q.shape
    num_kv_heads = k_buffer.shape[1]
    assert v_buffer.shape == k_buffer.shape and k_buffer.shape[2] == head_dim, (
        f"q {tuple(q.shape)} vs k_buffer {tuple(k_buffer.shape)} / v_buffer {tuple(v_buffer.shape)}")
    assert k_buffer.dtype == v_buffer.dtype
    assert num_q_heads % num_kv_heads == 0, f"{num_q_heads} q heads not a multiple of {num_kv_heads} kv heads"
    assert head_dim >= 16, "tl.dot needs head_dim >= 16"
    assert req_to_token.dim() == 2 and req_to_token.dtype == torch.int32 and req_to_token.stride(1) == 1
    check_index("req_pool_indices", req_pool_indices, batch_size)
    check_index("seq_lens", seq_lens, batch_size)
    if out is None:
        out = torch.empty_like(q, memory_format=torch.contiguous_format)
    check_rows("out", out, 3)
    assert out.shape == q.shape
    if batch_size == 0:
        return out

    if max_kv_splits is None:
        max_kv_splits = default_max_kv_splits(batch_size, num_kv_heads, q.device)
    assert max_kv_splits >= 1 and min_split_len >= 1 and long_split_len >= 1
    long_split_len = max(long_split_len, min_split_len)  # a longer request never gets shorter splits
    long_from = LONG_SPLIT_FROM if long_from is None else long_from
    if counters is not None:
        assert counters.dtype == torch.int32 and counters.is_contiguous() and counters.device == q.device, (
            "counters must be a contiguous int32 tensor on q's device")
        assert counters.numel() >= batch_size * num_kv_heads, (
            f"counters hold {counters.numel()} < {batch_size * num_kv_heads} (batch x kv heads)")
    if rotary is not None:
        check_rotary(rotary, q, k_buffer)
    if early_kv is None:
        early_kv = batch_size == 1 and rotary is not None and pdl.early_kv_enabled(q.device)
    assert rotary is not None or not early_kv, "early_kv reads this step's K/V from rotary's tensors: pass rotary"
    tiles = tiles or DecodeTiles()
    kv_fp8 = k_buffer.dtype == torch.float8_e4m3fn
    fp8_as_fp16 = kv_fp8 and q.dtype != torch.float32 and tiles.fp8_as_fp16
    assert 0 <= tiles.fp8_convert <= 3, f"fp8_convert {tiles.fp8_convert}: a K (1) / V (2) bit mask"
    compute_dtype = torch.float16 if fp8_as_fp16 else q.dtype if kv_fp8 else k_buffer.dtype
    group = num_q_heads // num_kv_heads
    block_d = next_pow2(head_dim)
    block_n, num_stages = launch_shape(tiles, block_d, k_buffer.element_size())
    # Partials stay fp32: they are re-weighted in stage 2 and are small next to the KV reads.
    part_out = torch.empty((batch_size, num_q_heads, max_kv_splits, head_dim), dtype=torch.float32,
                           device=q.device)  # [B, Hq, S, D]
    part_lse = torch.empty((batch_size, num_q_heads, max_kv_splits), dtype=torch.float32,
                           device=q.device)  # [B, Hq, S]

    single_pass = max_kv_splits == 1 or counters is not None
    # Programmatic dependent launch at batch 1 (TESSERA_PDL, kernels/pdl.py): this launch overlaps the previous
    # kernel's tail, and the next batch-1 GEMV starts loading its weights while attention runs.
    if early_kv:  # a PDL launch wherever griddepcontrol exists (elsewhere, e.g. the interpreter: same loads, no wait)
        pdl_meta = pdl.kernel_options(q.device, True)
    else:
        pdl_meta = pdl.kernel_options(q.device) if batch_size == 1 else {}
    merge_h = next_pow2(group)
    block_s = next_pow2(max_kv_splits)
    rot = rotary if rotary is not None else DecodeRotary(q, q, seq_lens, seq_lens, RopeCache(part_lse, part_lse))
    stamp = decode_stamps.launch_options(early_kv and single_pass and q.device.type == "cuda",
                                         num_kv_heads * max_kv_splits)
    _decode_stage1_kernel[(batch_size, num_kv_heads, max_kv_splits)](
        q, k_buffer, v_buffer, req_to_token, req_pool_indices, seq_lens,
        part_out, part_lse, out, counters if counters is not None else part_lse,
        rot.k, rot.v, rot.positions, rot.loc, rot.cache.cos, rot.cache.sin,
        rot.k.stride(0), rot.k.stride(1), rot.v.stride(0), rot.v.stride(1), rot.cache.cos.stride(0),
        rot.cache.sin.stride(0), float(k_scale), float(v_scale),
        q.stride(0), q.stride(1),
        k_buffer.stride(0), k_buffer.stride(1), v_buffer.stride(0), v_buffer.stride(1),
        req_to_token.stride(0),
        part_out.stride(0), part_out.stride(1), part_out.stride(2),
        part_lse.stride(0), part_lse.stride(1),
        out.stride(0), out.stride(1),
        scaling * k_scale * LOG2E, float(v_scale), max_kv_splits, min_split_len, long_split_len, long_from,
        GROUP=group, HEAD_DIM=head_dim, BLOCK_H=max(16, next_pow2(group)), BLOCK_D=block_d,
        BLOCK_N=block_n, DOT_PRECISION=dot_precision(compute_dtype),
        KV_FP8=kv_fp8, FP8_AS_FP16=fp8_as_fp16, SINGLE_PASS=single_pass, MERGE_H=merge_h, BLOCK_S=block_s,
        CHUNK_S=max(1, min(block_s, 4096 // (merge_h * block_d))),
        FP8_CONVERT=tiles.fp8_convert if fp8_as_fp16 else 0, ASM=int(q.device.type == "cuda"),
        num_warps=tiles.num_warps, num_stages=num_stages, ROTARY=rotary is not None, HALF=max(1, head_dim // 2),
        EARLY_N=min(block_n, EARLY_ROWS) if early_kv else 0, **pdl_meta, **stamp,
    )
    if single_pass:
        return out
    decode_stage2_kernel[(batch_size, num_q_heads)](
        part_out, part_lse, seq_lens, out,
        part_out.stride(0), part_out.stride(1), part_out.stride(2),
        part_lse.stride(0), part_lse.stride(1),
        out.stride(0), out.stride(1),
        max_kv_splits, min_split_len, long_split_len, long_from,
        HEAD_DIM=head_dim, BLOCK_D=block_d, BLOCK_S=max(2, next_pow2(max_kv_splits)),
        num_warps=4 if block_d <= 128 else 8,
    )
    return out
