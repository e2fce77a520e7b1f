"""Kernel tests: CPU runs go through the Triton interpreter; `-m gpu` tests run on CUDA."""

from __future__ import annotations

import os

import torch

# Must be set before any @triton.jit decorates (i.e. before `kernels` is imported): there is no CPU
# backend, and on a CUDA machine the GPU tests need the real compiler.
if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"
