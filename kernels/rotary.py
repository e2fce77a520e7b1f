"""Rotary position embedding (neox / HF `rotate_half` layout), in place on q and k.

For each head, with x1 = x[:D/2], x2 = x[D/2:], c = cos[pos], s = sin[pos]:
    x[:D/2] = x1 * c - x2 * s;   x[D/2:] = x2 * c + x1 * s
which is HF's `x * cos + rotate_half(x) * sin` with cos/sin repeated over both halves. The rotation
is done in fp32 and rounded once (HF rounds cos/sin to the model dtype first; the difference is
inside bf16 noise and ours is the more accurate one).

`build_rope_cache` makes the fp32 cos/sin tables, incl. llama3 frequency scaling exactly as
transformers' `_compute_llama3_parameters`.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
import triton
import triton.language as tl

from kernels._common import check_index, check_rows, next_pow2


class RopeCache(NamedTuple):
    cos: torch.Tensor  # [max_position, head_dim // 2] fp32
    sin: torch.Tensor  # [max_position, head_dim // 2] fp32


def rope_inv_freq(head_dim: int, base: float, rope_scaling: dict[str, Any] | None = None) -> torch.Tensor:
    """Inverse frequencies [head_dim // 2] (fp32, CPU), computed with HF's exact op sequence."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.int64).to(torch.float) / head_dim))
    rope_type = (rope_scaling or {}).get("rope_type", (rope_scaling or {}).get("type", "default"))
    if rope_type == "default":
        return inv_freq
    assert rope_scaling is not None
    factor = float(rope_scaling["factor"])
    if rope_type == "linear":
        return inv_freq / factor
    if rope_type != "llama3":
        raise ValueError(f"rope_type {rope_type!r} is not supported (default, linear, llama3)")
    low_freq_factor = rope_scaling["low_freq_factor"]
    high_freq_factor = rope_scaling["high_freq_factor"]
    old_context_len = rope_scaling["original_max_position_embeddings"]
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    # Long wavelengths (low frequencies) are stretched by `factor`, short ones kept, and the band in
    # between blends the two linearly in 1/wavelen.
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium, smoothed, scaled)


def build_rope_cache(
    head_dim: int,
    max_position: int,
    base: float = 10000.0,
    rope_scaling: dict[str, Any] | None = None,
    device: str | torch.device = "cpu",
) -> RopeCache:
    """cos/sin tables for positions 0..max_position-1, built on the CPU (same values on every device)."""
    assert head_dim % 2 == 0, f"head_dim {head_dim} must be even"
    inv_freq = rope_inv_freq(head_dim, base, rope_scaling)  # [D/2]
    freqs = torch.arange(max_position, dtype=torch.int64).float()[:, None] * inv_freq[None, :]  # [P, D/2]
    return RopeCache(freqs.cos().to(device), freqs.sin().to(device))


# The rotation's FMAs are spelled out: left to the compiler, `a * b + c * d` contracts into an FMA over either
# product, and two kernels that each rotate the same k (`rotary_kv_store`, the decode kernel's `DecodeRotary`)
# rounded ~1 element in 2^16 differently on an H200 (bench/NOTES.md, fourteenth session).
@triton.jit
def rotate_first_half(x1, x2, c, s):
    """x1 * c - x2 * s in fp32 with one FMA over x1 * c (x2 * s rounded first)."""
    return tl.fma(x1, c, -(x2 * s))


@triton.jit
def rotate_second_half(x1, x2, c, s):
    """x2 * c + x1 * s in fp32 with one FMA over x2 * c (x1 * s rounded first)."""
    return tl.fma(x2, c, x1 * s)


@triton.jit
def _rotate_heads(x_ptr, row_ptr_off, stride_h, offs_h, mask_h, offs_d, mask_d, c, s, HALF: tl.constexpr):
    ptr = x_ptr + row_ptr_off + offs_h[:, None] * stride_h + offs_d[None, :]  # [BLOCK_H, BLOCK_HALF]
    mask = mask_h[:, None] & mask_d[None, :]
    x1 = tl.load(ptr, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(ptr + HALF, mask=mask, other=0.0).to(tl.float32)
    dtype = x_ptr.dtype.element_ty
    tl.store(ptr, rotate_first_half(x1, x2, c, s).to(dtype), mask=mask)
    tl.store(ptr + HALF, rotate_second_half(x1, x2, c, s).to(dtype), mask=mask)


@triton.jit
def _rotary_kernel(
    q_ptr, k_ptr, pos_ptr, cos_ptr, sin_ptr,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_cos, stride_sin,
    NUM_Q_HEADS: tl.constexpr, NUM_KV_HEADS: tl.constexpr, HALF: tl.constexpr,
    BLOCK_HQ: tl.constexpr, BLOCK_HK: tl.constexpr, BLOCK_HALF: tl.constexpr,
):
    t = tl.program_id(0).to(tl.int64)
    pos = tl.load(pos_ptr + t).to(tl.int64)
    offs_d = tl.arange(0, BLOCK_HALF)
    mask_d = offs_d < HALF
    c = tl.load(cos_ptr + pos * stride_cos + offs_d, mask=mask_d, other=0.0).to(tl.float32)[None, :]
    s = tl.load(sin_ptr + pos * stride_sin + offs_d, mask=mask_d, other=0.0).to(tl.float32)[None, :]
    offs_hq = tl.arange(0, BLOCK_HQ)
    _rotate_heads(q_ptr, t * stride_qt, stride_qh, offs_hq, offs_hq < NUM_Q_HEADS, offs_d, mask_d, c, s, HALF)
    offs_hk = tl.arange(0, BLOCK_HK)
    _rotate_heads(k_ptr, t * stride_kt, stride_kh, offs_hk, offs_hk < NUM_KV_HEADS, offs_d, mask_d, c, s, HALF)


def apply_rotary(
    q: torch.Tensor,  # [T, Hq, D], rotated in place (rows may be strided, e.g. views of fused QKV)
    k: torch.Tensor,  # [T, Hkv, D], rotated in place
    positions: torch.Tensor,  # [T] int32/int64
    cache: RopeCache,  # cos/sin [max_position, D/2]
) -> None:
    check_rows("q", q, 3)
    check_rows("k", k, 3)
    num_tokens, num_q_heads, head_dim = q.shape
    assert k.shape[0] == num_tokens and k.shape[2] == head_dim, f"q {tuple(q.shape)} vs k {tuple(k.shape)}"
    check_index("positions", positions, num_tokens)
    half = head_dim // 2
    for name, table in (("cos", cache.cos), ("sin", cache.sin)):
        assert table.dim() == 2 and table.shape[1] == half and table.stride(1) == 1, (
            f"{name} table {tuple(table.shape)} does not match head_dim {head_dim}")
        assert table.device == q.device, f"{name} table on {table.device}, q on {q.device}"
    if num_tokens == 0:
        return
    block_half = next_pow2(half)
    _rotary_kernel[(num_tokens,)](
        q, k, positions, cache.cos, cache.sin,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), cache.cos.stride(0), cache.sin.stride(0),
        NUM_Q_HEADS=num_q_heads, NUM_KV_HEADS=k.shape[1], HALF=half,
        BLOCK_HQ=next_pow2(num_q_heads), BLOCK_HK=next_pow2(k.shape[1]), BLOCK_HALF=block_half,
        num_warps=4,
    )
