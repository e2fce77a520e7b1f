"""Rotary embedding fused with the KV store: rotate q in place, rotate k and write k and v into the pool.

For each token t (one program): q[t] is rotated in place (neox / `rotate_half` layout, exactly as
`kernels.rotary`), k[t] is rotated and written to `k_buffer[loc[t]]` (and, with `write_k`, back into
k in place, which extend attention reads), and v[t] is copied to `v_buffer[loc[t]]`. Rounding matches
`apply_rotary` followed by `store_kv` bit for bit: the rotation runs in fp32, is rounded once to the
input dtype, then cast to the pool dtype (an fp8 pool: divided by the layer's scale and saturated,
as `store_kv` does). One launch instead of two per layer.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels._common import KV_DTYPES, check_index, check_rows, next_pow2
from kernels.kv_store import quantize_for_pool
from kernels.pdl import kernel_options as pdl_kernel_options
from kernels.pdl import wait_for_prior_kernel
from kernels.rotary import RopeCache, _rotate_heads, rotate_first_half, rotate_second_half


@triton.jit
def _rotary_kv_store_kernel(
    q_ptr, k_ptr, v_ptr, k_buf_ptr, v_buf_ptr, pos_ptr, loc_ptr, cos_ptr, sin_ptr,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_kbn, stride_vbn, stride_cos, stride_sin,
    k_scale, v_scale,
    NUM_Q_HEADS: tl.constexpr, NUM_KV_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, HALF: tl.constexpr,
    BLOCK_HQ: tl.constexpr, BLOCK_HK: tl.constexpr, BLOCK_HALF: tl.constexpr, BLOCK_ROW: tl.constexpr,
    WRITE_K: tl.constexpr, FP8: tl.constexpr, PDL: tl.constexpr = False,
):
    if PDL:  # one decoding token with TESSERA_PDL: q, k, v are the QKV GEMV's output (kernels/pdl.py)
        wait_for_prior_kernel()
    t = tl.program_id(0).to(tl.int64)
    pos = tl.load(pos_ptr + t).to(tl.int64)
    slot = tl.load(loc_ptr + t).to(tl.int64)
    offs_d = tl.arange(0, BLOCK_HALF)
    mask_d = offs_d < HALF
    c = tl.load(cos_ptr + pos * stride_cos + offs_d, mask=mask_d, other=0.0).to(tl.float32)[None, :]
    s = tl.load(sin_ptr + pos * stride_sin + offs_d, mask=mask_d, other=0.0).to(tl.float32)[None, :]

    offs_hq = tl.arange(0, BLOCK_HQ)
    _rotate_heads(q_ptr, t * stride_qt, stride_qh, offs_hq, offs_hq < NUM_Q_HEADS, offs_d, mask_d, c, s, HALF)

    offs_hk = tl.arange(0, BLOCK_HK)
    mask_k = (offs_hk < NUM_KV_HEADS)[:, None] & mask_d[None, :]
    k_in = k_ptr + t * stride_kt + offs_hk[:, None] * stride_kh + offs_d[None, :]  # [BLOCK_HK, BLOCK_HALF]
    k1 = tl.load(k_in, mask=mask_k, other=0.0).to(tl.float32)
    k2 = tl.load(k_in + HALF, mask=mask_k, other=0.0).to(tl.float32)
    in_dtype = k_ptr.dtype.element_ty
    r1 = rotate_first_half(k1, k2, c, s).to(in_dtype)
    r2 = rotate_second_half(k1, k2, c, s).to(in_dtype)
    # The pool row is dense: head h, dim d sits at h * HEAD_DIM + d.
    k_out = k_buf_ptr + slot * stride_kbn + offs_hk[:, None] * HEAD_DIM + offs_d[None, :]
    buf_dtype = k_buf_ptr.dtype.element_ty
    tl.store(k_out, quantize_for_pool(r1, k_scale, FP8).to(buf_dtype), mask=mask_k)
    tl.store(k_out + HALF, quantize_for_pool(r2, k_scale, FP8).to(buf_dtype), mask=mask_k)
    if WRITE_K:
        tl.store(k_in, r1, mask=mask_k)
        tl.store(k_in + HALF, r2, mask=mask_k)

    offs_r = tl.arange(0, BLOCK_ROW)
    mask_r = offs_r < NUM_KV_HEADS * HEAD_DIM
    v = tl.load(v_ptr + t * stride_vt + offs_r, mask=mask_r)
    v = quantize_for_pool(v, v_scale, FP8)
    tl.store(v_buf_ptr + slot * stride_vbn + offs_r, v.to(v_buf_ptr.dtype.element_ty), mask=mask_r)


def rotary_kv_store(
    q: torch.Tensor,  # [T, Hq, D], rotated in place (rows may be strided views of a fused QKV output)
    k: torch.Tensor,  # [T, Hkv, D], rotated in place only when write_k
    v: torch.Tensor,  # [T, Hkv, D]
    k_buffer: torch.Tensor,  # [N, Hkv, D] pool, written in place at loc
    v_buffer: torch.Tensor,  # [N, Hkv, D]
    positions: torch.Tensor,  # [T] int32/int64
    loc: torch.Tensor,  # [T] int32/int64 pool slot per token
    cache: RopeCache,  # cos/sin [max_position, D/2] fp32
    *,
    write_k: bool = False,
    k_scale: float = 1.0,  # fp8 pools only: the pool holds k / k_scale
    v_scale: float = 1.0,
) -> None:
    """`apply_rotary(q, k, positions, cache); store_kv(k_buffer, v_buffer, loc, k, v)` in one launch
    (k itself keeps its unrotated values unless `write_k`)."""
    check_rows("q", q, 3)
    check_rows("k", k, 3)
    check_rows("v", v, 3)
    check_rows("k_buffer", k_buffer, 3, KV_DTYPES)
    check_rows("v_buffer", v_buffer, 3, KV_DTYPES)
    assert k_buffer.dtype == v_buffer.dtype, f"k_buffer {k_buffer.dtype} vs v_buffer {v_buffer.dtype}"
    assert k_scale > 0 and v_scale > 0, f"scales must be positive, got {k_scale}, {v_scale}"
    num_tokens, num_q_heads, head_dim = q.shape
    num_kv_heads = k.shape[1]
    assert head_dim % 2 == 0, f"head_dim {head_dim} must be even"
    assert k.shape == (num_tokens, num_kv_heads, head_dim) and v.shape == k.shape, (
        f"q {tuple(q.shape)} vs k {tuple(k.shape)} / v {tuple(v.shape)}")
    assert k_buffer.shape[1:] == k.shape[1:] and v_buffer.shape == k_buffer.shape, (
        f"pool {tuple(k_buffer.shape)} vs k {tuple(k.shape)}")
    assert k_buffer.is_contiguous() and v_buffer.is_contiguous(), "KV buffers must be contiguous"
    check_index("positions", positions, num_tokens)
    check_index("loc", loc, num_tokens)
    half = head_dim // 2
    for name, table in (("cos", cache.cos), ("sin", cache.sin)):
        assert table.dim() == 2 and table.shape[1] == half and table.stride(1) == 1, (
            f"{name} table {tuple(table.shape)} does not match head_dim {head_dim}")
        assert table.device == q.device, f"{name} table on {table.device}, q on {q.device}"
    if num_tokens == 0:
        return
    pdl_meta = pdl_kernel_options(q.device) if num_tokens == 1 else {}  # batch-1 decode only (kernels/pdl.py)
    _rotary_kv_store_kernel[(num_tokens,)](
        q, k, v, k_buffer, v_buffer, positions, loc, cache.cos, cache.sin,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), k_buffer.stride(0), v_buffer.stride(0),
        cache.cos.stride(0), cache.sin.stride(0), float(k_scale), float(v_scale),
        NUM_Q_HEADS=num_q_heads, NUM_KV_HEADS=num_kv_heads, HEAD_DIM=head_dim, HALF=half,
        BLOCK_HQ=next_pow2(num_q_heads), BLOCK_HK=next_pow2(num_kv_heads), BLOCK_HALF=next_pow2(half),
        BLOCK_ROW=next_pow2(num_kv_heads * head_dim), WRITE_K=write_k,
        FP8=k_buffer.dtype == torch.float8_e4m3fn,
        num_warps=4, **pdl_meta,
    )
