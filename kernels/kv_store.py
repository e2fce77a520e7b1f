"""Store new tokens' K and V into the token-indexed KV pool: `k_buffer[loc[t]] = k[t]` (same for V).

One program per token copies both rows; a row (all kv heads of a token) is one dense run in the
inputs and in the pool, so each program is two contiguous loads and two contiguous stores.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels._common import check_index, check_rows, next_pow2


@triton.jit
def _store_kv_kernel(
    k_ptr, v_ptr, k_buf_ptr, v_buf_ptr, loc_ptr,
    stride_kt, stride_vt, stride_kbn, stride_vbn,
    ROW: tl.constexpr, BLOCK: tl.constexpr,
):
    t = tl.program_id(0)
    slot = tl.load(loc_ptr + t).to(tl.int64)
    for c0 in tl.static_range(0, ROW, BLOCK):
        offs = c0 + tl.arange(0, BLOCK)
        mask = offs < ROW
        k = tl.load(k_ptr + t * stride_kt + offs, mask=mask)
        v = tl.load(v_ptr + t * stride_vt + offs, mask=mask)
        tl.store(k_buf_ptr + slot * stride_kbn + offs, k.to(k_buf_ptr.dtype.element_ty), mask=mask)
        tl.store(v_buf_ptr + slot * stride_vbn + offs, v.to(v_buf_ptr.dtype.element_ty), mask=mask)


def store_kv(
    k_buffer: torch.Tensor,  # [N, Hkv, D] pool, written in place
    v_buffer: torch.Tensor,  # [N, Hkv, D]
    loc: torch.Tensor,  # [T] int32/int64 slot per token
    k: torch.Tensor,  # [T, Hkv, D], rows may be strided
    v: torch.Tensor,  # [T, Hkv, D]
) -> None:
    """Write k/v rows into the pool at `loc`, casting to the pool's dtype."""
    check_rows("k", k, 3)
    check_rows("v", v, 3)
    check_rows("k_buffer", k_buffer, 3)
    check_rows("v_buffer", v_buffer, 3)
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
        k.stride(0), v.stride(0), k_buffer.stride(0), v_buffer.stride(0),
        ROW=row, BLOCK=min(next_pow2(row), 4096),
        num_warps=4,
    )
