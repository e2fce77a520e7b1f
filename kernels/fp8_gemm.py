"""W8A8 FP8 GEMM: `y = (q_x · q_w^T) * x_scale[m] * w_scale[n] (+ bias)` through `torch._scaled_mm`.

Activations are quantized per token (dynamic, `kernels.fp8_quant.per_token_quant_fp8`) or with the
checkpoint's static per-tensor `input_scale`; weight scales are per output channel ([N], a per-tensor
scale is expanded to [N] at load). Both go to `_scaled_mm` as row-wise scales (`scale_a` [M, 1],
`scale_b` [1, N]), the one scaling mode that serves every checkpoint layout; its output is bf16.

cuBLASLt / CUTLASS want K and N multiples of 16 (the weight is [N, K] row-major, i.e. `mat2 = w.t()`
is column-major as `_scaled_mm` requires). M is padded to a multiple of 16 inside the activation
quantization (no extra copy): alignment of M is not required by every torch version, but row-wise
kernels on some versions reject or slow down on ragged M; the padding rows cost nothing measurable.

On CPU (and as the test reference) `fp8_linear_ref` dequantizes the weight to the compute dtype and
runs a plain matmul on the unquantized activations (W8A16): CPU torch has no FP8 GEMM, only FP8
conversions, and the reference path is for correctness of loading, not for speed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kernels.fp8_quant import FP8_DTYPE, dequantize, per_token_quant_fp8, static_quant_fp8

SCALED_MM_ALIGN = 16  # K and N must be multiples of this for _scaled_mm
M_PAD = 16


def scaled_mm_supported(n: int, k: int) -> bool:
    return n % SCALED_MM_ALIGN == 0 and k % SCALED_MM_ALIGN == 0


def _check_weight(w_q: torch.Tensor, w_scale: torch.Tensor) -> tuple[int, int]:
    assert w_q.dim() == 2 and w_q.dtype == FP8_DTYPE and w_q.stride(1) == 1, (
        f"weight: expected [N, K] float8_e4m3fn with contiguous rows, got {w_q.dtype} {tuple(w_q.shape)} "
        f"strides {w_q.stride()}")
    n, k = w_q.shape
    assert w_scale.dtype == torch.float32 and w_scale.shape == (n,) and w_scale.is_contiguous(), (
        f"weight_scale: expected fp32 [{n}] (per output channel), got {w_scale.dtype} {tuple(w_scale.shape)}")
    return n, k


def fp8_linear_scaled_mm(
    x: torch.Tensor,  # [M, K] bf16/fp16
    w_q: torch.Tensor,  # [N, K] float8_e4m3fn
    w_scale: torch.Tensor,  # [N] fp32
    bias: torch.Tensor | None = None,  # [N]
    input_scale: torch.Tensor | None = None,  # scalar fp32: static activation scale; None = per token
) -> torch.Tensor:  # [M, N], dtype of x
    n, k = _check_weight(w_q, w_scale)
    assert x.dim() == 2 and x.shape[1] == k, f"x: expected [M, {k}], got {tuple(x.shape)}"
    assert x.dtype in (torch.bfloat16, torch.float16), f"x: _scaled_mm outputs bf16/fp16, got {x.dtype}"
    assert scaled_mm_supported(n, k), f"_scaled_mm needs N and K multiples of {SCALED_MM_ALIGN}, got {n}x{k}"
    m = x.shape[0]
    x = x.contiguous()
    if input_scale is None:
        q_x, x_scale = per_token_quant_fp8(x, pad_rows_to=M_PAD)
    else:
        q_x, x_scale = static_quant_fp8(x, input_scale, pad_rows_to=M_PAD)
    # Row-wise scaling produces bf16 only (an fp16 model gets its result cast back).
    out = torch._scaled_mm(q_x, w_q.t(), scale_a=x_scale, scale_b=w_scale.view(1, n), out_dtype=torch.bfloat16)
    out = out[:m].to(x.dtype)
    # Bias after the GEMM: `_scaled_mm`'s fused bias is not available for every scaling mode.
    return out + bias if bias is not None else out


def fp8_linear_ref(
    x: torch.Tensor,  # [M, K]
    w_q: torch.Tensor,  # [N, K] float8_e4m3fn
    w_scale: torch.Tensor,  # [N] fp32 (or a scalar)
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Weight-only reference: dequantize to x's dtype and matmul (CPU path and test reference)."""
    return F.linear(x, dequantize(w_q, w_scale, x.dtype), bias)


def fp8_w8a8_ref(
    x: torch.Tensor, w_q: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor | None = None,
    input_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """What `fp8_linear_scaled_mm` computes, in fp32 torch: activations quantized the same way."""
    from kernels.fp8_quant import per_token_quant_fp8_ref, quantize_with_scale

    if input_scale is None:
        q_x, x_scale = per_token_quant_fp8_ref(x)
    else:
        x_scale = input_scale.reshape(1, 1).float()
        q_x = quantize_with_scale(x, x_scale)
    out = (q_x.float() @ w_q.float().t()) * x_scale * w_scale.float().reshape(1, -1)
    if bias is not None:
        out = out + bias.float()
    return out.to(x.dtype)
