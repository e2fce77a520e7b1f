"""SwiGLU activation `silu(gate) * up` over a packed [T, 2I] gate|up projection.

CUDA runs the Triton kernel (one read of gate|up, one write, no [T, I] temporaries); the CPU keeps
HF's torch expression so CPU outputs stay bit-exact with the reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SiluAndMul(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [T, 2I] -> [T, I]
        if x.is_cuda:
            from kernels import silu_and_mul

            return silu_and_mul(x)
        gate, up = x.chunk(2, dim=-1)
        return F.silu(gate) * up
