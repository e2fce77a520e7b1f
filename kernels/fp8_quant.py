"""FP8 (float8_e4m3fn) quantization: dynamic per-token activation scales (Triton on CUDA, torch
reference), static per-tensor activation scales, and per-tensor / per-channel weight quantization.

Conventions (the ones FP8 checkpoints on the Hub use): `q = clamp(x / scale, -448, 448)` rounded to
e4m3fn, `x ≈ q * scale`; scales are fp32. A per-token scale is `amax(|row|) / 448`, so each row uses
the whole e4m3 range. An all-zero row gets a tiny floor scale instead of 0 (no 0/0).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels._common import FLOAT_DTYPES, next_pow2

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8_DTYPE).max)  # 448.0
# Floor for a scale (amax 0): small enough to never bind on real activations, large enough that
# x / scale stays finite in fp32.
MIN_SCALE = 1.0 / (FP8_MAX * 512.0)


# ----------------------------------------------------------------------------------- torch helpers
def quantize_with_scale(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x / scale (broadcast), saturated to ±448 and rounded to e4m3fn (fp32 math)."""
    return (x.float() / scale.float()).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)


def dequantize(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """q * scale in fp32, then cast; `scale` is a scalar, [N] (per output row of a weight) or [M, 1]."""
    scale = scale.float()
    if scale.dim() == 1 and scale.numel() > 1:
        scale = scale[:, None]  # per-channel: one scale per row
    return (q.float() * scale).to(dtype)


def per_token_quant_fp8_ref(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, K] -> (q [M, K] e4m3fn, scale [M, 1] fp32)."""
    amax = x.float().abs().amax(dim=-1, keepdim=True)
    scale = (amax / FP8_MAX).clamp(min=MIN_SCALE)
    return quantize_with_scale(x, scale), scale


def quantize_weight_per_tensor(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """w [N, K] -> (q e4m3fn, scale: 0-dim fp32), the `quant_method: fp8` per-tensor layout."""
    scale = (w.float().abs().amax() / FP8_MAX).clamp(min=MIN_SCALE)
    return quantize_with_scale(w, scale), scale


def quantize_weight_per_channel(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """w [N, K] -> (q e4m3fn, scale [N] fp32): one scale per output channel (row)."""
    scale = (w.float().abs().amax(dim=1) / FP8_MAX).clamp(min=MIN_SCALE)
    return quantize_with_scale(w, scale[:, None]), scale


# ------------------------------------------------------------------------------- Triton per-token
@triton.jit
def _per_token_quant_kernel(x_ptr, q_ptr, scale_ptr, K, stride_xm, stride_qm, fp8_max, min_scale,
                            BLOCK_K: tl.constexpr, ONE_PASS: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * stride_xm
    q_row = q_ptr + row * stride_qm
    offs = tl.arange(0, BLOCK_K)
    if ONE_PASS:
        # The whole row fits one block: read it once, keep it in registers.
        mask = offs < K
        xv = tl.load(x_row + offs, mask=mask, other=0.0).to(tl.float32)
        scale = tl.maximum(tl.max(tl.abs(xv), 0) / fp8_max, min_scale)
        qv = tl.clamp(xv / scale, -fp8_max, fp8_max)
        tl.store(q_row + offs, qv.to(q_ptr.dtype.element_ty), mask=mask)
    else:
        amax = tl.zeros([BLOCK_K], dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            mask = k0 + offs < K
            xv = tl.load(x_row + k0 + offs, mask=mask, other=0.0).to(tl.float32)
            amax = tl.maximum(amax, tl.abs(xv))
        scale = tl.maximum(tl.max(amax, 0) / fp8_max, min_scale)
        for k0 in range(0, K, BLOCK_K):
            mask = k0 + offs < K
            xv = tl.load(x_row + k0 + offs, mask=mask, other=0.0).to(tl.float32)
            qv = tl.clamp(xv / scale, -fp8_max, fp8_max)
            tl.store(q_row + k0 + offs, qv.to(q_ptr.dtype.element_ty), mask=mask)
    tl.store(scale_ptr + row, scale)


def per_token_quant_fp8(x: torch.Tensor, pad_rows_to: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, K] (fp16/bf16/fp32, rows contiguous) -> (q [M', K] e4m3fn, scale [M', 1] fp32) with
    M' = M rounded up to `pad_rows_to`: the padding rows are zeros with scale 1 (a GEMM that wants
    aligned M gets it without another copy; their outputs are sliced off)."""
    assert x.dim() == 2 and x.stride(1) == 1, f"x: expected [M, K] with contiguous rows, got {tuple(x.shape)}"
    assert x.dtype in FLOAT_DTYPES, f"x: unsupported dtype {x.dtype}"
    m, k = x.shape
    m_pad = triton.cdiv(max(m, 1), pad_rows_to) * pad_rows_to
    q = torch.empty((m_pad, k), dtype=FP8_DTYPE, device=x.device)
    scale = torch.empty((m_pad, 1), dtype=torch.float32, device=x.device)
    if m_pad > m:
        q[m:].zero_()
        scale[m:].fill_(1.0)
    if m == 0:
        return q, scale
    block_k = min(next_pow2(k), 4096)
    _per_token_quant_kernel[(m,)](x, q, scale, k, x.stride(0), q.stride(0), FP8_MAX, MIN_SCALE,
                                  BLOCK_K=block_k, ONE_PASS=k <= block_k, num_warps=4 if block_k <= 1024 else 8)
    return q, scale


def static_quant_fp8(x: torch.Tensor, scale: torch.Tensor, pad_rows_to: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Static (checkpoint `input_scale`) per-tensor quantization; returns the scale expanded to
    [M', 1] so a row-wise GEMM consumes static and dynamic scales the same way."""
    assert scale.numel() == 1, f"static activation scale must be a scalar, got shape {tuple(scale.shape)}"
    m, k = x.shape
    m_pad = triton.cdiv(max(m, 1), pad_rows_to) * pad_rows_to
    s = scale.reshape(1, 1).float()
    q = quantize_with_scale(x, s)
    if m_pad > m:
        q = torch.cat([q, torch.zeros((m_pad - m, k), dtype=FP8_DTYPE, device=x.device)])
    return q, s.expand(m_pad, 1).contiguous()
