"""Store new tokens' K and V into the token-indexed KV pool: `k_buffer[loc[t]] = k[t]` (same for V).

One program per token copies both rows; a row (all kv heads of a token) is one dense run in the
inputs and in the pool, so each program is two contiguous loads and two contiguous stores.

An fp8 (e4m3) pool stores `x / scale` saturated to +-448 (per-tensor scale per layer, K and V apart;
readers multiply back). The division is IEEE round-to-nearest (`div_rn`) so the Triton store, the
torch fallback (`KVPool.store`) and the fused rotary store agree bit for bit.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels._common import KV_DTYPES, check_index, check_rows, next_pow2


@triton.jit
def _round_to_e4m3(y):
    """y (fp32, |y| <= 448) rounded to the nearest e4m3 value, ties to even, still in fp32.

    The cast to fp8 then only has to be exact. Rounding here rather than in the cast keeps the Triton
    interpreter (CPU CI) right: its fp32 -> fp8 conversion rounds ties up and drops the carry into the
    exponent (e.g. 127.0 comes out as 64). On the GPU the result is the same as the hardware cast's."""
    bits = y.to(tl.int32, bitcast=True)
    exponent = (bits >> 23) & 0xFF
    # e4m3 has 3 mantissa bits: spacing 2^(e - 3) for normals, 2^-9 below 2^-6 (biased 121).
    ulp_exponent = tl.maximum(exponent, 121) - 3
    ulp = (ulp_exponent << 23).to(tl.float32, bitcast=True)
    inv_ulp = ((254 - ulp_exponent) << 23).to(tl.float32, bitcast=True)
    t = tl.abs(y) * inv_ulp  # exact: a power of two; t < 16
    r = ((t + 12582912.0) - 12582912.0) * ulp  # 1.5 * 2^23: fp32 addition rounds t to an integer, ties to even
    return tl.where(bits < 0, -r, r)  # the sign bit, so -0.0 and tiny negatives keep it as torch does


@triton.jit
def quantize_for_pool(x, scale, FP8: tl.constexpr):
    """What goes into the pool before the final cast: x itself, or for fp8 x / scale in fp32 clamped
    to e4m3's finite range (an overflowing cast would give NaN) and rounded to an e4m3 value."""
    if FP8:
        x = _round_to_e4m3(tl.clamp(tl.math.div_rn(x.to(tl.float32), scale), -448.0, 448.0))
    return x


@triton.jit
def _store_kv_kernel(
    k_ptr, v_ptr, k_buf_ptr, v_buf_ptr, loc_ptr,
    stride_kt, stride_vt, stride_kbn, stride_vbn, k_scale, v_scale,
    ROW: tl.constexpr, BLOCK: tl.constexpr, FP8: tl.constexpr,
):
    t = tl.program_id(0)
    slot = tl.load(loc_ptr + t).to(tl.int64)
    for c0 in tl.static_range(0, ROW, BLOCK):
        offs = c0 + tl.arange(0, BLOCK)
        mask = offs < ROW
        k = tl.load(k_ptr + t * stride_kt + offs, mask=mask)
        v = tl.load(v_ptr + t * stride_vt + offs, mask=mask)
        k = quantize_for_pool(k, k_scale, FP8)
        v = quantize_for_pool(v, v_scale, FP8)
        tl.store(k_buf_ptr + slot * stride_kbn + offs, k.to(k_buf_ptr.dtype.element_ty), mask=mask)
        tl.store(v_buf_ptr + slot * stride_vbn + offs, v.to(v_buf_ptr.dtype.element_ty), mask=mask)


def store_kv(
    k_buffer: torch.Tensor,  # [N, Hkv, D] pool, written in place
    v_buffer: torch.Tensor,  # [N, Hkv, D]
    loc: torch.Tensor,  # [T] int32/int64 slot per token
    k: torch.Tensor,  # [T, Hkv, D], rows may be strided
    v: torch.Tensor,  # [T, Hkv, D]
    k_scale: float = 1.0,  # fp8 pools only: the pool holds k / k_scale
    v_scale: float = 1.0,
) -> None:
    """Write k/v rows into the pool at `loc`, casting (fp8: scaling and saturating) to the pool's dtype."""
    check_rows("k", k, 3)
    check_rows("v", v, 3)
    check_rows("k_buffer", k_buffer, 3, KV_DTYPES)
    check_rows("v_buffer", v_buffer, 3, KV_DTYPES)
    assert k_buffer.dtype == v_buffer.dtype, f"k_buffer {k_buffer.dtype} vs v_buffer {v_buffer.dtype}"
    assert k_scale > 0 and v_scale > 0, f"scales must be positive, got {k_scale}, {v_scale}"
    num_tokens = k.shape[0]
    assert v.shape == k.shape, f"k {tuple(k.shape)} vs v {tuple(v.shape)}"
    assert k_buffer.shape[1:] == k.shape[1:] and v_buffer.shape == k_buffer.shape, (
        f"pool {tuple(k_buffer.shape)} vs k {tuple(k.shape)}")
    assert k_buffer.is_contiguous() and v_buffer.is_contiguous(), "KV buffers must be contiguous"
    check_index("loc", loc, num_tokens)
    if num_tokens == 0:
        return
    row = k.shape[1] * k.shape[2]
    _store_kv_kernel[(num_tokens,)](
        k, v, k_buffer, v_buffer, loc,
        k.stride(0), v.stride(0), k_buffer.stride(0), v_buffer.stride(0), float(k_scale), float(v_scale),
        ROW=row, BLOCK=min(next_pow2(row), 4096), FP8=k_buffer.dtype == torch.float8_e4m3fn,
        num_warps=4,
    )
