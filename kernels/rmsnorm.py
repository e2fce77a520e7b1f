"""RMSNorm and fused residual-add + RMSNorm, numerics as HF `LlamaRMSNorm`.

HF computes `x.float() * rsqrt(mean(x.float()**2) + eps)`, casts that back to the input dtype and only
then multiplies by the weight (in the model dtype). We keep that order so bf16 outputs match HF bit
for bit (up to the reduction order of the mean). The fused variant first forms `x + residual` in the
input dtype (HF's `hidden_states = residual + hidden_states`) and returns it as the new residual.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from kernels._common import check_rows, next_pow2


class RMSNormResult(NamedTuple):
    out: torch.Tensor  # normed(x + residual) * weight
    residual: torch.Tensor  # x + residual, the next layer's residual


@triton.jit
def _rmsnorm_kernel(
    x_ptr, res_ptr, w_ptr, out_ptr, res_out_ptr,
    stride_x, stride_r, stride_o, stride_ro,
    hidden_size, eps,
    HAS_RESIDUAL: tl.constexpr, BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = offs < hidden_size
    dtype = out_ptr.dtype.element_ty
    x = tl.load(x_ptr + row * stride_x + offs, mask=mask, other=0.0)
    if HAS_RESIDUAL:
        # Round the sum to the model dtype first, as HF does.
        x = (x.to(tl.float32) + tl.load(res_ptr + row * stride_r + offs, mask=mask, other=0.0).to(tl.float32))
        x = x.to(dtype)
        tl.store(res_out_ptr + row * stride_ro + offs, x, mask=mask)
    xf = x.to(tl.float32)
    rstd = tl.rsqrt(tl.sum(xf * xf, 0) / hidden_size + eps)
    normed = (xf * rstd).to(dtype).to(tl.float32)
    w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * stride_o + offs, (normed * w).to(dtype), mask=mask)


def _as_rows(name: str, x: torch.Tensor) -> torch.Tensor:
    """View [..., H] as [M, H]; a 2-D input may have strided rows, more dims must be contiguous."""
    if x.dim() == 2:
        check_rows(name, x, 2)
        return x
    assert x.dim() >= 1 and x.is_contiguous(), f"{name}: {x.dim()}-D input must be contiguous"
    return x.view(-1, x.shape[-1])


def _launch(x2: torch.Tensor, res2: torch.Tensor | None, weight: torch.Tensor, eps: float,
            out2: torch.Tensor, res_out2: torch.Tensor | None) -> None:
    num_rows, hidden_size = x2.shape
    if num_rows == 0:
        return
    block = next_pow2(hidden_size)
    has_res = res2 is not None
    _rmsnorm_kernel[(num_rows,)](
        x2, res2 if has_res else x2, weight, out2, res_out2 if has_res else out2,
        x2.stride(0), res2.stride(0) if has_res else 0, out2.stride(0),
        res_out2.stride(0) if has_res else 0,
        hidden_size, eps,
        HAS_RESIDUAL=has_res, BLOCK=block,
        num_warps=min(16, max(1, block // 256)),
    )


def rmsnorm(
    x: torch.Tensor,  # [..., H]
    weight: torch.Tensor,  # [H]
    eps: float,
) -> torch.Tensor:  # [..., H], dtype of x
    x2 = _as_rows("x", x)  # [M, H]
    assert weight.shape == (x.shape[-1],) and weight.is_contiguous(), f"weight {tuple(weight.shape)}"
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    _launch(x2, None, weight, eps, out.view(-1, x.shape[-1]), None)
    return out


def fused_add_rmsnorm(
    x: torch.Tensor,  # [..., H] this layer's output
    residual: torch.Tensor,  # [..., H] running residual
    weight: torch.Tensor,  # [H]
    eps: float,
) -> RMSNormResult:  # out, residual: [..., H]
    x2 = _as_rows("x", x)
    r2 = _as_rows("residual", residual)
    assert residual.shape == x.shape and residual.dtype == x.dtype, (
        f"x {tuple(x.shape)} {x.dtype} vs residual {tuple(residual.shape)} {residual.dtype}")
    assert weight.shape == (x.shape[-1],) and weight.is_contiguous(), f"weight {tuple(weight.shape)}"
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    new_res = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    hidden_size = x.shape[-1]
    _launch(x2, r2, weight, eps, out.view(-1, hidden_size), new_res.view(-1, hidden_size))
    return RMSNormResult(out, new_res)
