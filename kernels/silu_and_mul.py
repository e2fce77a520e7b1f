"""SwiGLU activation: `x [T, 2I] -> silu(x[:, :I]) * x[:, I:]`, numerics as HF's `act_fn(gate) * up`.

HF rounds silu(gate) to the model dtype before the multiply; we do the same, so bf16 results match
bit for bit up to the exp implementation.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels._common import check_rows, next_pow2


@triton.jit
def _silu_and_mul_kernel(x_ptr, out_ptr, stride_xt, stride_ot, inter_size, BLOCK: tl.constexpr):
    t = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < inter_size
    gate = tl.load(x_ptr + t * stride_xt + offs, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(x_ptr + t * stride_xt + inter_size + offs, mask=mask, other=0.0).to(tl.float32)
    dtype = out_ptr.dtype.element_ty
    act = (gate / (1.0 + tl.exp(-gate))).to(dtype).to(tl.float32)
    tl.store(out_ptr + t * stride_ot + offs, (act * up).to(dtype), mask=mask)


def silu_and_mul(
    x: torch.Tensor,  # [T, 2I]
    out: torch.Tensor | None = None,  # [T, I]
) -> torch.Tensor:  # [T, I]
    check_rows("x", x, 2)
    num_tokens, double = x.shape
    assert double % 2 == 0, f"last dim {double} must be even (gate | up)"
    inter_size = double // 2
    if out is None:
        out = torch.empty((num_tokens, inter_size), dtype=x.dtype, device=x.device)
    check_rows("out", out, 2)
    assert out.shape == (num_tokens, inter_size) and out.dtype == x.dtype
    if num_tokens == 0:
        return out
    block = min(next_pow2(inter_size), 1024)
    _silu_and_mul_kernel[(num_tokens, triton.cdiv(inter_size, block))](
        x, out, x.stride(0), out.stride(0), inter_size, BLOCK=block, num_warps=4,
    )
    return out
