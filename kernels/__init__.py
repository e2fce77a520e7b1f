"""Triton kernels, one op per file; each file exposes a typed launcher that checks shapes, dtypes and
strides before it launches.

Triton has no CPU backend: on a machine without CUDA the interpreter (`TRITON_INTERPRET=1`) is the
only way these kernels run at all (CPU CI). `triton.jit` picks interpreter vs compiler when the op
modules are imported, so the default has to be in place before the imports below.
"""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from kernels.decode_attention import decode_attention  # noqa: E402
from kernels.extend_attention import extend_attention  # noqa: E402
from kernels.kv_store import store_kv  # noqa: E402
from kernels.rmsnorm import RMSNormResult, fused_add_rmsnorm, rmsnorm  # noqa: E402
from kernels.rotary import RopeCache, apply_rotary, build_rope_cache  # noqa: E402
from kernels.rotary_kv_store import rotary_kv_store  # noqa: E402
from kernels.silu_and_mul import silu_and_mul  # noqa: E402

__all__ = [
    "RMSNormResult",
    "RopeCache",
    "apply_rotary",
    "build_rope_cache",
    "decode_attention",
    "extend_attention",
    "fused_add_rmsnorm",
    "rmsnorm",
    "rotary_kv_store",
    "silu_and_mul",
    "store_kv",
]
