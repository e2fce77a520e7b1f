"""The decode step's rotary embedding and K/V store, done inside the decode attention kernel
(`decode_attention(rotary=DecodeRotary(...))`) instead of a `rotary_kv_store` launch before it.

Every stage-1 program rotates its q rows in registers (q stays unrotated in memory); the split that holds the
newest position rotates this kv head's new k and writes k and v into the pool at the token's slot before the
program reads the pool. Values and roundings are `rotary_kv_store`'s, bit for bit: rotation in fp32 (same
products, same order), rounded to the input dtype, then `quantize_for_pool` (an fp8 pool: divided by the layer's
scale). One launch per layer per decode step fewer (H200, 8B shape: batch-1 step -2.4 %, bench/RESULTS.md).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from kernels._common import check_index, check_rows
from kernels.kv_store import quantize_for_pool
from kernels.rotary import RopeCache, rotate_first_half, rotate_second_half


class DecodeRotary(NamedTuple):
    """What `rotary_kv_store` would have done before the decode launch, done by the decode kernel itself:
    q is rotated in the kernel's registers (left unrotated in memory), this step's k (rotated) and v are
    written into the pool at `loc`, with the pool's scales. Saves one launch per layer per decode step."""
    k: torch.Tensor  # [B, Hkv, D] this step's keys, unrotated (rows may be strided views of a fused QKV output)
    v: torch.Tensor  # [B, Hkv, D]
    positions: torch.Tensor  # [B] int32/int64
    loc: torch.Tensor  # [B] int32/int64 pool slot of each request's new token (the last of its seq_lens)
    cache: RopeCache


def check_rotary(rotary: DecodeRotary, q: torch.Tensor, k_buffer: torch.Tensor) -> None:
    batch_size, _, head_dim = q.shape
    num_kv_heads = k_buffer.shape[1]
    check_rows("rotary.k", rotary.k, 3)
    check_rows("rotary.v", rotary.v, 3)
    assert rotary.k.shape == (batch_size, num_kv_heads, head_dim) and rotary.v.shape == rotary.k.shape, (
        f"rotary k {tuple(rotary.k.shape)} / v {tuple(rotary.v.shape)} vs q {tuple(q.shape)}, {num_kv_heads} kv heads")
    assert rotary.k.dtype == rotary.v.dtype == q.dtype, f"rotary k/v {rotary.k.dtype} vs q {q.dtype}"
    assert head_dim % 2 == 0, f"rotary needs an even head_dim, got {head_dim}"
    check_index("rotary.positions", rotary.positions, batch_size)
    check_index("rotary.loc", rotary.loc, batch_size)
    for name, table in (("cos", rotary.cache.cos), ("sin", rotary.cache.sin)):
        assert table.dim() == 2 and table.shape[1] == head_dim // 2 and table.stride(1) == 1, (
            f"{name} table {tuple(table.shape)} does not match head_dim {head_dim}")


@triton.jit
def _rotate(x, partner, c, s, first_half):
    # `rotate_half` rotary in fp32, each half as `kernels.rotary_kv_store` writes it (same products, same order).
    x = x.to(tl.float32)
    partner = partner.to(tl.float32)
    return tl.where(first_half, rotate_first_half(x, partner, c, s), rotate_second_half(partner, x, c, s))


@triton.jit
def rope_row(pos_ptr, cos_ptr, sin_ptr, b, offs_d, mask_d, stride_cos, stride_sin, HALF: tl.constexpr):
    """Request `b`'s rotary at its position: (cos, sin) per dimension in fp32, which half each dimension is in
    and its partner dimension. Reads only step inputs (positions, the tables), never a kernel's output."""
    pos = tl.load(pos_ptr + b).to(tl.int64)
    first_half = offs_d < HALF
    partner_d = tl.where(first_half, offs_d + HALF, offs_d - HALF)
    freq = tl.where(first_half, offs_d, offs_d - HALF)
    c = tl.load(cos_ptr + pos * stride_cos + freq, mask=mask_d, other=0.0).to(tl.float32)
    s = tl.load(sin_ptr + pos * stride_sin + freq, mask=mask_d, other=0.0).to(tl.float32)
    return c, s, first_half, partner_d


@triton.jit
def rotate_q_rows(q, q_rows, mask_rows, c, s, first_half, partner_d, mask_d):
    """This program's q rows rotated in registers (q stays unrotated in memory)."""
    q_partner = tl.load(q_rows + partner_d[None, :], mask=mask_rows & mask_d[None, :], other=0.0)
    return _rotate(q, q_partner, c[None, :], s[None, :], first_half[None, :]).to(q.dtype)


@triton.jit
def new_kv_for_pool(b, kv_head, offs_d, mask_d, c, s, first_half, partner_d, new_k_ptr, new_v_ptr, stride_nkb,
                    stride_nkh, stride_nvb, stride_nvh, k_store_scale, v_store_scale, POOL_DTYPE: tl.constexpr,
                    KV_FP8: tl.constexpr):
    """This kv head's new k (rotated) and v as the pool holds them: `rotary_kv_store`'s values, bit for bit."""
    k_row = new_k_ptr + b * stride_nkb + kv_head * stride_nkh
    k_in = tl.load(k_row + offs_d, mask=mask_d, other=0.0)
    k_partner = tl.load(k_row + partner_d, mask=mask_d, other=0.0)
    k_rot = _rotate(k_in, k_partner, c, s, first_half).to(k_in.dtype)
    v_in = tl.load(new_v_ptr + b * stride_nvb + kv_head * stride_nvh + offs_d, mask=mask_d, other=0.0)
    return (quantize_for_pool(k_rot, k_store_scale, KV_FP8).to(POOL_DTYPE),
            quantize_for_pool(v_in, v_store_scale, KV_FP8).to(POOL_DTYPE))


@triton.jit
def rotary_and_store_new_kv(q, q_rows, mask_rows, b, kv_head, split, num_splits, seq_len, offs_d, mask_d,
                            new_k_ptr, new_v_ptr, pos_ptr, loc_ptr, cos_ptr, sin_ptr, stride_nkb, stride_nkh,
                            stride_nvb, stride_nvh, stride_cos, stride_sin, k_store_scale, v_store_scale,
                            k_buf_ptr, v_buf_ptr, stride_kn, stride_kh, stride_vn, stride_vh,
                            KV_FP8: tl.constexpr, HALF: tl.constexpr):
    """Rotates this program's q rows (in registers; every split does it, q is a few hundred bytes) and, in the
    split that holds the newest position, rotates this kv head's new k and writes k and v into the pool at the
    token's slot, then syncs the program so its own K/V loads below see them. Values and roundings are those of
    `rotary_kv_store`: rotation in fp32, rounded to the input dtype, then `quantize_for_pool`."""
    c, s, first_half, partner_d = rope_row(pos_ptr, cos_ptr, sin_ptr, b, offs_d, mask_d, stride_cos, stride_sin,
                                           HALF)
    q = rotate_q_rows(q, q_rows, mask_rows, c, s, first_half, partner_d, mask_d)
    if (split == num_splits - 1) & (seq_len > 0):
        slot = tl.load(loc_ptr + b).to(tl.int64)
        k_new, v_new = new_kv_for_pool(b, kv_head, offs_d, mask_d, c, s, first_half, partner_d, new_k_ptr, new_v_ptr,
                                       stride_nkb, stride_nkh, stride_nvb, stride_nvh, k_store_scale, v_store_scale,
                                       k_buf_ptr.dtype.element_ty, KV_FP8)
        store_new_kv(k_new, v_new, slot, kv_head, offs_d, mask_d, k_buf_ptr, v_buf_ptr, stride_kn, stride_kh, stride_vn,
                     stride_vh)
    return q


@triton.jit
def store_new_kv(k_new, v_new, slot, kv_head, offs_d, mask_d, k_buf_ptr, v_buf_ptr, stride_kn, stride_kh, stride_vn,
                 stride_vh):
    """This kv head's new k / v into the pool at `slot`, then a CTA barrier: the stores reach the program's own K/V
    loads after it (a CTA barrier orders global memory for its threads)."""
    tl.store(k_buf_ptr + slot * stride_kn + kv_head * stride_kh + offs_d, k_new, mask=mask_d)
    tl.store(v_buf_ptr + slot * stride_vn + kv_head * stride_vh + offs_d, v_new, mask=mask_d)
    tl.debug_barrier()
