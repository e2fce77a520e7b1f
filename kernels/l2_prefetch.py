"""Weights into L2 ahead of the GEMV that reads them, while a latency-bound kernel leaves DRAM idle.

At batch 1 a decode layer is four weight-streaming GEMVs and attention. Attention over a short context reads a
few MB in ~8 us (H100), so DRAM sits nearly idle for that long in every layer: ~24 MB of copy time at 3 TB/s.
`beside(ranges)` launches `kernels/cuda/l2_prefetch.cu` on a side stream next to what the caller runs in its
`with` block (in a CUDA graph: a parallel branch), so the o projection's weights, and the start of gate_up's,
are in L2 when their GEMVs run. The block's end joins the side stream back.

Which bytes (`plan`): the given tensors in the order the GEMVs will read them, whole, until `budget` bytes; the
last one only its first rows (the GEMVs' first programs read the first rows). The budget per device and weight
format is `BUDGET_MB` (measured: `bench/step_ab.py --switch l2-prefetch`), `TESSERA_L2_PREFETCH_MB` overrides it,
0 is off.
A prefetch never changes memory: the step's results are bit-identical with and without it.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
from collections.abc import Iterator, Sequence

import torch

from kernels import cuda_rtc

MAX_RANGES = 3  # the kernel's arguments
GRANULE = 16  # bytes: the bulk prefetch's unit
CHUNK = 16384  # bytes per prefetch instruction
PROGRAMS = 8  # CTAs of 128 threads: few, so attention keeps the SMs
# MB of weights prefetched during a batch-1 layer's attention: device name substring (first match) -> the
# layers' weight format ("awq", "fp8", "16-bit") -> MB. A format not listed is off.
# H100 SXM, AWQ: `bench/step_ab.py --switch l2-prefetch`, 8B dummy, 640 tokens, 2026-12-06 (bench/results/
# 2026-12-06-s18a-h100-*): step 2.686 -> 2.625 ms at 24 MB, 2.682 -> 2.605 (-2.9 %) at 32, logits bit-identical.
# FP8 on the same device: +0.95 % at 24 MB, +0.11 % at 32 (no gain: off). The H200 is unmeasured.
# Since the AWQ GEMVs trigger their dependents early (kernels/awq_gemv_cuda.py EARLY_TRIGGER), gate_up's first CTAs
# start beside o and request their rows themselves, so less prefetch pays (2026-12-06, bench/results/2026-12-06-s23*):
# step -0.27 % at 16 MB, +0.79 % at 32, +1.38 % at 48 against none; AWQ + FP8 head single stream 459.1 / 458.2 tok/s
# at 16 MB against 456.0-457.3 at 32 (five runs).
BUDGET_MB: dict[str, dict[str, float]] = {"H100 80GB HBM3": {"awq": 16.0}}
BUDGET_OVERRIDE_MB: float | None = None  # set by bench/step_ab.py; else the env var, else BUDGET_MB


def budget_bytes(device: torch.device, weights: str = "16-bit") -> int:
    """Bytes to prefetch beside a batch-1 layer's attention on `device` for layers of the `weights` format
    (0: off)."""
    if device.type != "cuda":
        return 0
    mb = BUDGET_OVERRIDE_MB
    if mb is None and os.environ.get("TESSERA_L2_PREFETCH_MB"):
        mb = float(os.environ["TESSERA_L2_PREFETCH_MB"])
    if mb is None:
        name = torch.cuda.get_device_name(device)
        per_format = next((v for key, v in BUDGET_MB.items() if key in name), {})
        mb = per_format.get(weights, 0.0)
    return int(mb * 2**20)


def plan(tensors: Sequence[torch.Tensor], budget: int) -> tuple[tuple[torch.Tensor, int], ...]:
    """(tensor, bytes from its start) to prefetch: `tensors` in order, whole while the budget lasts, the last one
    cut to what is left (rounded down to 16 bytes), at most MAX_RANGES of them."""
    ranges = []
    for t in tensors:
        if budget < GRANULE or len(ranges) == MAX_RANGES:
            break
        take = min(t.numel() * t.element_size(), budget) // GRANULE * GRANULE
        if take:
            ranges.append((t, take))
            budget -= take
    return tuple(ranges)


@functools.cache
def _side_stream(index: int) -> torch.cuda.Stream:
    return torch.cuda.Stream(device=index)


def prefetch(ranges: Sequence[tuple[torch.Tensor, int]], programs: int = PROGRAMS, chunk: int = CHUNK) -> None:
    """Issues the L2 prefetch of `ranges` (from `plan`) on the current stream."""
    if not ranges:
        return
    device = ranges[0][0].device
    fn = cuda_rtc.get_function("l2_prefetch.cu", "l2_prefetch", device)
    padded = list(ranges) + [(ranges[0][0], 0)] * (MAX_RANGES - len(ranges))
    args = []
    for t, nbytes in padded:
        args += [ctypes.c_void_p(t.data_ptr()), ctypes.c_int64(nbytes)]
    fn.launch((programs, 1, 1), (128, 1, 1), 0, args + [ctypes.c_int32(chunk)])


@contextlib.contextmanager
def beside(ranges: Sequence[tuple[torch.Tensor, int]]) -> Iterator[None]:
    """Prefetches `ranges` on a side stream that starts with what the current stream has queued so far; the
    current stream waits for it when the block ends (a CUDA graph's capture needs the branch joined)."""
    if not ranges:
        yield
        return
    main = torch.cuda.current_stream()
    side = _side_stream(main.device.index)
    side.wait_stream(main)
    with torch.cuda.stream(side):
        prefetch(ranges)
    try:
        yield
    finally:
        main.wait_stream(side)
