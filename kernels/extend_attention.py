"""Extend (prefill) attention in one kernel: cached prefix from the KV pool + causal over new tokens.

Request b owns rows `extend_start_loc[b] : extend_start_loc[b] + extend_lens[b]` of the ragged
q/k/v of new tokens; its first `prefix_lens[b]` positions are already in the pool and reached through
`req_to_token[req_pool_indices[b], :prefix_len]`. New query token i (position prefix_len + i) sees
every prefix token and new tokens j <= i.

One program per (request, q head, block of BLOCK_M query rows). New K/V are read from the ragged
tensors rather than the pool: they are contiguous there, so the loads need no gather.

An fp8 (e4m3) pool holds the prefix as `k / k_scale`, `v / v_scale`: prefix rows are upcast after
the load, `k_scale` is folded into the prefix's softmax scale and `v_scale` into its probabilities
(p * v_scale, before the P @ V dot). The new tokens come unquantized from the ragged tensors.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels._common import KV_DTYPES, check_index, check_rows, dot_precision, next_pow2

LOG2E = 1.4426950408889634


@triton.jit
def _extend_attention_kernel(
    q_ptr, k_ext_ptr, v_ext_ptr, out_ptr, k_buf_ptr, v_buf_ptr,
    req_to_token_ptr, req_pool_idx_ptr, prefix_lens_ptr, extend_lens_ptr, extend_start_ptr,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_ot, stride_oh,
    stride_kbn, stride_kbh, stride_vbn, stride_vbh,
    stride_r2t,
    qk_scale_log2, prefix_qk_scale_log2, prefix_v_scale,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    b = tl.program_id(0)
    h = tl.program_id(1)
    m_block = tl.program_id(2)

    extend_len = tl.load(extend_lens_ptr + b).to(tl.int32)
    if m_block * BLOCK_M >= extend_len:
        return
    prefix_len = tl.load(prefix_lens_ptr + b).to(tl.int32)
    start_loc = tl.load(extend_start_ptr + b).to(tl.int64)
    req_row = tl.load(req_pool_idx_ptr + b).to(tl.int64)
    kv_head = h // GROUP

    offs_m = m_block * BLOCK_M + tl.arange(0, BLOCK_M)  # query index within the request's new tokens
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    mask_m = offs_m < extend_len
    mask_d = offs_d < HEAD_DIM

    q = tl.load(q_ptr + (start_loc + offs_m)[:, None] * stride_qt + h * stride_qh + offs_d[None, :],
                mask=mask_m[:, None] & mask_d[None, :], other=0.0)  # [BLOCK_M, BLOCK_D]
    q = q.to(k_ext_ptr.dtype.element_ty)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)

    # Cached prefix: no causal mask, every query row sees all of it.
    for n0 in range(0, prefix_len, BLOCK_N):
        offs = n0 + offs_n
        mask_n = offs < prefix_len
        slots = tl.load(req_to_token_ptr + req_row * stride_r2t + offs, mask=mask_n, other=0).to(tl.int64)
        kv_mask = mask_n[:, None] & mask_d[None, :]
        k = tl.load(k_buf_ptr + slots[:, None] * stride_kbn + kv_head * stride_kbh + offs_d[None, :],
                    mask=kv_mask, other=0.0).to(q.dtype)  # [BLOCK_N, BLOCK_D]
        qk = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * prefix_qk_scale_log2  # [BLOCK_M, BLOCK_N]
        qk = tl.where(mask_n[None, :], qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(qk - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_buf_ptr + slots[:, None] * stride_vbn + kv_head * stride_vbh + offs_d[None, :],
                    mask=kv_mask, other=0.0).to(q.dtype)  # [BLOCK_N, BLOCK_D]
        acc = acc * alpha[:, None] + tl.dot((p * prefix_v_scale).to(q.dtype), v, input_precision=DOT_PRECISION)
        m_i = m_new

    # New tokens, causal. Blocks run in order and block 0 holds key 0, which every row may see, so
    # each row's running max is finite before any fully masked row-block shows up.
    kv_end = tl.minimum(extend_len, (m_block + 1) * BLOCK_M)
    for n0 in range(0, kv_end, BLOCK_N):
        offs = n0 + offs_n
        mask_n = offs < extend_len
        kv_mask = mask_n[:, None] & mask_d[None, :]
        k = tl.load(k_ext_ptr + (start_loc + offs)[:, None] * stride_kt + kv_head * stride_kh + offs_d[None, :],
                    mask=kv_mask, other=0.0)  # [BLOCK_N, BLOCK_D]
        qk = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale_log2  # [BLOCK_M, BLOCK_N]
        causal = (offs_m[:, None] >= offs[None, :]) & mask_n[None, :]
        qk = tl.where(causal, qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(qk - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_ext_ptr + (start_loc + offs)[:, None] * stride_vt + kv_head * stride_vh + offs_d[None, :],
                    mask=kv_mask, other=0.0)  # [BLOCK_N, BLOCK_D]
        acc = acc * alpha[:, None] + tl.dot(p.to(q.dtype), v, input_precision=DOT_PRECISION)
        m_i = m_new

    o = out_ptr + (start_loc + offs_m)[:, None] * stride_ot + h * stride_oh + offs_d[None, :]
    tl.store(o, (acc / l_i[:, None]).to(out_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_d[None, :])


def _default_blocks(head_dim: int, device: torch.device) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps): 128-row query tiles amortise K/V loads; wider heads need more warps."""
    if device.type != "cuda":
        return 64, 32, 4  # interpreter: fewer, larger programs run faster
    if head_dim <= 64:
        return 128, 64, 4
    if head_dim <= 128:
        return 128, 64, 8
    return 64, 32, 8


def extend_attention(
    q_extend: torch.Tensor,  # [T, Hq, D] new tokens of all requests, ragged
    k_extend: torch.Tensor,  # [T, Hkv, D]
    v_extend: torch.Tensor,  # [T, Hkv, D]
    k_buffer: torch.Tensor,  # [N, Hkv, D] pool (prefix K)
    v_buffer: torch.Tensor,  # [N, Hkv, D]
    req_to_token: torch.Tensor,  # [R, C] int32
    req_pool_indices: torch.Tensor,  # [B]
    prefix_lens: torch.Tensor,  # [B] cached tokens per request
    extend_lens: torch.Tensor,  # [B] new tokens per request
    extend_start_loc: torch.Tensor,  # [B] first row of each request in the ragged tensors
    max_extend_len: int,  # host int: max(extend_lens), sizes the grid without a device sync
    scaling: float,
    *,
    k_scale: float = 1.0,  # fp8 pools: the pool holds the prefix as k / k_scale, v / v_scale
    v_scale: float = 1.0,
    out: torch.Tensor | None = None,  # [T, Hq, D]
    block_m: int | None = None,
    block_n: int | None = None,
) -> torch.Tensor:  # [T, Hq, D], dtype of q_extend
    """Prefill attention: each new token attends to its request's cached prefix and causally to new tokens."""
    for name, t in (("q_extend", q_extend), ("k_extend", k_extend), ("v_extend", v_extend)):
        check_rows(name, t, 3)
    check_rows("k_buffer", k_buffer, 3, KV_DTYPES)
    check_rows("v_buffer", v_buffer, 3, KV_DTYPES)
    assert k_buffer.dtype == v_buffer.dtype, f"k_buffer {k_buffer.dtype} vs v_buffer {v_buffer.dtype}"
    num_tokens, num_q_heads, head_dim = q_extend.shape
    num_kv_heads = k_extend.shape[1]
    assert k_extend.shape == v_extend.shape == (num_tokens, num_kv_heads, head_dim), (
        f"q {tuple(q_extend.shape)} k {tuple(k_extend.shape)} v {tuple(v_extend.shape)}")
    assert k_buffer.shape[1:] == (num_kv_heads, head_dim) and v_buffer.shape == k_buffer.shape
    assert k_buffer.is_contiguous() and v_buffer.is_contiguous(), "KV buffers must be contiguous"
    assert k_extend.dtype == v_extend.dtype
    assert num_q_heads % num_kv_heads == 0, f"{num_q_heads} q heads not a multiple of {num_kv_heads} kv heads"
    assert head_dim >= 16, "tl.dot needs head_dim >= 16"
    assert req_to_token.dim() == 2 and req_to_token.dtype == torch.int32 and req_to_token.stride(1) == 1
    batch_size = req_pool_indices.shape[0]
    for name, t in (("req_pool_indices", req_pool_indices), ("prefix_lens", prefix_lens),
                    ("extend_lens", extend_lens), ("extend_start_loc", extend_start_loc)):
        check_index(name, t, batch_size)
    if out is None:
        out = torch.empty_like(q_extend, memory_format=torch.contiguous_format)
    check_rows("out", out, 3)
    assert out.shape == q_extend.shape
    if batch_size == 0 or num_tokens == 0 or max_extend_len <= 0:
        return out

    default_m, default_n, num_warps = _default_blocks(head_dim, q_extend.device)
    block_m = block_m or default_m
    block_n = block_n or default_n
    grid = (batch_size, num_q_heads, triton.cdiv(max_extend_len, block_m))
    _extend_attention_kernel[grid](
        q_extend, k_extend, v_extend, out, k_buffer, v_buffer,
        req_to_token, req_pool_indices, prefix_lens, extend_lens, extend_start_loc,
        q_extend.stride(0), q_extend.stride(1), k_extend.stride(0), k_extend.stride(1),
        v_extend.stride(0), v_extend.stride(1), out.stride(0), out.stride(1),
        k_buffer.stride(0), k_buffer.stride(1), v_buffer.stride(0), v_buffer.stride(1),
        req_to_token.stride(0),
        scaling * LOG2E, scaling * k_scale * LOG2E, float(v_scale),
        GROUP=num_q_heads // num_kv_heads, HEAD_DIM=head_dim, BLOCK_D=next_pow2(head_dim),
        BLOCK_M=block_m, BLOCK_N=block_n, DOT_PRECISION=dot_precision(k_extend.dtype),
        num_warps=num_warps, num_stages=2,
    )
    return out
