"""RMSNorm with HF LlamaRMSNorm numerics (normalise in fp32, cast back, then scale).

On CUDA the Triton kernels run instead (`kernels.rmsnorm`, `kernels.fused_add_rmsnorm`): one pass
over the row instead of ~6 elementwise launches, same rounding order. The torch code stays the CPU
path so CPU outputs remain bit-exact with HF.
"""

from __future__ import annotations

import torch
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size), requires_grad=False)
        self.eps = eps

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None):
        """With `residual`, adds it first and returns (normed, new_residual), as fused kernels do."""
        if x.is_cuda:
            return self._forward_cuda(x, residual)
        if residual is not None:
            x = x + residual
            residual = x
        dtype = x.dtype
        h = x.to(torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        out = self.weight * h.to(dtype)
        return out if residual is None else (out, residual)

    def _forward_cuda(self, x: torch.Tensor, residual: torch.Tensor | None):
        from kernels import fused_add_rmsnorm, rmsnorm

        if residual is None:
            # q/k norms get [T, H, D] views of the fused QKV output; the kernel wants dense rows.
            rows = x if x.dim() == 2 else x.reshape(-1, x.shape[-1])
            return rmsnorm(rows, self.weight, self.eps).view(x.shape)
        out, new_residual = fused_add_rmsnorm(x, residual, self.weight, self.eps)
        return out, new_residual
