"""How decode attention's KV splits are laid out and merged (`kernels.decode_attention`): every split program
stores its partial output, normalised by its own softmax sum, and its log-sum-exp (base 2); then either the
last split of a (request, kv head) to finish merges them in place (`merge_splits`, single pass) or a stage-2
launch does (`decode_stage2_kernel`), both weighting each split by exp2(lse - max lse)."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def split_layout(seq_len, max_kv_splits, min_split_len, long_split_len, long_from):
    """(num_splits, split_len) of one request; both stages must agree on it. Past `long_from` tokens the
    minimum split is `long_split_len` instead of `min_split_len` (see `decode_attention`)."""
    min_len = tl.where(seq_len > long_from, long_split_len, min_split_len)
    num_splits = tl.minimum(tl.cdiv(seq_len, min_len), max_kv_splits)
    split_len = tl.maximum(tl.cdiv(seq_len, tl.maximum(num_splits, 1)), 1)
    # Rounding split_len up can leave trailing splits empty (33 tokens / 16 splits of 3): drop them.
    return tl.cdiv(seq_len, split_len), split_len


@triton.jit
def store_partial(part_out_ptr, part_lse_ptr, b, split, q_heads, mask_h, offs_d, mask_d, acc, m_i, l_i,
                  stride_pob, stride_poh, stride_pos, stride_plb, stride_plh):
    po = part_out_ptr + b * stride_pob + q_heads[:, None] * stride_poh + split * stride_pos + offs_d[None, :]
    tl.store(po, acc / l_i[:, None], mask=mask_h[:, None] & mask_d[None, :])
    tl.store(part_lse_ptr + b * stride_plb + q_heads * stride_plh + split, m_i + tl.log2(l_i), mask=mask_h)


@triton.jit
def _load_partial_chunk(lse_row, out_rows, s0, num_splits, mask_h, mask_d, stride_pos, CHUNK_S: tl.constexpr):
    """Splits s0 .. s0 + CHUNK_S - 1 of the merge: their log-sum-exps [MERGE_H, CHUNK_S] (-1e30 past the last),
    partial outputs [MERGE_H, CHUNK_S, BLOCK_D] (0 past it) and the mask of the real ones."""
    offs_c = s0 + tl.arange(0, CHUNK_S)
    mask_hc = mask_h[:, None] & (offs_c < num_splits)[None, :]  # [MERGE_H, CHUNK_S]
    lse = tl.load(lse_row + offs_c[None, :], mask=mask_hc, other=-1e30, cache_modifier=".cg")
    o = tl.load(out_rows + offs_c[None, :, None] * stride_pos, mask=mask_hc[:, :, None] & mask_d[None, None, :],
                other=0.0, cache_modifier=".cg")
    return lse, o, mask_hc


@triton.jit
def _add_chunk(num, den, lse, o, mask_hc, m):
    """The merge's running sums plus one chunk of splits, each weighted by exp2(lse - m)."""
    w = tl.where(mask_hc, tl.exp2(lse - m[:, None]), 0.0)  # [MERGE_H, CHUNK_S]
    return num + tl.sum(w[:, :, None] * o, 1), den + tl.sum(w, 1)


@triton.jit
def merge_splits(part_out_ptr, part_lse_ptr, out_ptr, b, kv_head, num_splits,
                  stride_pob, stride_poh, stride_pos, stride_plb, stride_plh, stride_ob, stride_oh,
                  GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
                  MERGE_H: tl.constexpr, BLOCK_S: tl.constexpr, CHUNK_S: tl.constexpr):
    """out[b, heads of kv_head] = sum_s w_s * part_out[s] / sum_s w_s, w_s = exp2(lse_s - max lse).

    Partials are read with `.cg` (L2, not this SM's L1): other programs wrote them. The first chunk's partials are
    requested with the log-sum-exps, before their max is known: one round trip for up to CHUNK_S splits."""
    offs_h = tl.arange(0, MERGE_H)
    mask_h = offs_h < GROUP
    heads = kv_head * GROUP + offs_h  # [MERGE_H]
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < HEAD_DIM
    lse_row = part_lse_ptr + b * stride_plb + heads[:, None] * stride_plh  # [MERGE_H, 1]
    out_rows = part_out_ptr + b * stride_pob + heads[:, None, None] * stride_poh + offs_d[None, None, :]
    offs_s = tl.arange(0, BLOCK_S)
    lse_all = tl.load(lse_row + offs_s[None, :], mask=mask_h[:, None] & (offs_s < num_splits)[None, :],
                      other=-1e30, cache_modifier=".cg")  # [MERGE_H, BLOCK_S]
    lse, o, mask_hc = _load_partial_chunk(lse_row, out_rows, 0, num_splits, mask_h, mask_d, stride_pos, CHUNK_S)
    m = tl.max(lse_all, 1)  # [MERGE_H]
    num = tl.zeros([MERGE_H, BLOCK_D], tl.float32)
    den = tl.zeros([MERGE_H], tl.float32)
    num, den = _add_chunk(num, den, lse, o, mask_hc, m)
    for s0 in range(CHUNK_S, num_splits, CHUNK_S):
        lse, o, mask_hc = _load_partial_chunk(lse_row, out_rows, s0, num_splits, mask_h, mask_d, stride_pos, CHUNK_S)
        num, den = _add_chunk(num, den, lse, o, mask_hc, m)
    out = num / tl.maximum(den, 1e-30)[:, None]
    tl.store(out_ptr + b * stride_ob + heads[:, None] * stride_oh + offs_d[None, :],
             out.to(out_ptr.dtype.element_ty), mask=mask_h[:, None] & mask_d[None, :])


@triton.jit
def decode_stage2_kernel(
    part_out_ptr, part_lse_ptr, seq_lens_ptr, out_ptr,
    stride_pob, stride_poh, stride_pos,
    stride_plb, stride_plh,
    stride_ob, stride_oh,
    max_kv_splits, min_split_len, long_split_len, long_from,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_S: tl.constexpr,
):
    b = tl.program_id(0)
    h = tl.program_id(1)
    seq_len = tl.load(seq_lens_ptr + b).to(tl.int32)
    num_splits, _ = split_layout(seq_len, max_kv_splits, min_split_len, long_split_len, long_from)

    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, BLOCK_D)
    mask_s = offs_s < num_splits
    mask_d = offs_d < HEAD_DIM
    # A finite filler (not -inf) keeps padded lanes NaN-free; they are zeroed by the where below.
    lse = tl.load(part_lse_ptr + b * stride_plb + h * stride_plh + offs_s, mask=mask_s, other=-1e30)  # [BLOCK_S]
    w = tl.where(mask_s, tl.exp2(lse - tl.max(lse, 0)), 0.0)  # [BLOCK_S]
    o = tl.load(part_out_ptr + b * stride_pob + h * stride_poh + offs_s[:, None] * stride_pos + offs_d[None, :],
                mask=mask_s[:, None] & mask_d[None, :], other=0.0)  # [BLOCK_S, BLOCK_D]
    # seq_len == 0 (a padded row) has no split at all: emit zeros rather than 0/0.
    out = tl.sum(w[:, None] * o, 0) / tl.maximum(tl.sum(w, 0), 1e-30)  # [BLOCK_D]
    tl.store(out_ptr + b * stride_ob + h * stride_oh + offs_d, out.to(out_ptr.dtype.element_ty), mask=mask_d)
