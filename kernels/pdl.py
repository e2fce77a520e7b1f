"""Programmatic dependent launch (PDL, Hopper) for the batch-1 GEMVs: opt-in with `TESSERA_PDL=1`.

A batch-1 decode step is ~130 short kernels; each one's first weight loads go out only after the previous
kernel has drained. A kernel launched with PDL (`launch_pdl=True`) may start while the previous one is still
running: its programs request their first weight tiles (weights never depend on the previous kernel), then
`griddepcontrol.wait` blocks until the previous grid has finished and its writes are visible, and only then read
x, the residual or the split-K counters and write anything. `griddepcontrol.launch_dependents` right after lets
the next kernel do the same. The result is bit-identical to a plain launch: the arithmetic is unchanged and
every read of another kernel's output happens after the wait.

Separately, and on by default: the batch-1 decode attention with early KV (`EARLY_KV`, `kernels/decode_attention.py`)
is a PDL launch after the qkv GEMV, which triggers it as its programs start (`trigger_options`, `allow_dependents`),
so the attention's KV reads overlap the GEMV, and the o projection after it is a PDL launch too (`O_AFTER_ATTENTION`):
attention lets it start after its own wait, so o's first weights load while attention computes. No other kernel
changes how it is launched.

The rotary + KV store (`kernels/rotary_kv_store.py`, one token) and the decode attention (`kernels/decode_attention.py`,
batch 1) are PDL launches too: they wait first (their inputs are the kernel before's output), then trigger at
once, so the o projection's programs can be resident and loading weights while attention, which is latency-bound
at batch 1, runs.

Measured on an H200 (`bench/pdl_bench.py`, a CUDA graph of 128 plain GEMVs shaped as the 8B layer's
projections): 3.716 -> 3.518 ms in bf16, 2.579 -> 2.436 ms with FP8 weights (-5 %, ~1.2 us per kernel) with the
first weights loaded before the wait; 1 % when the wait comes first. In the engine it lost: the batch-1 step
(`bench/step_ab.py --switch pdl`, H200) went 4.232 -> 4.449 ms in bf16 and 2.920 -> 2.949 ms in FP8, and the
chain of the engine's fused GEMVs (prologues, residual epilogues, split-K; `pdl_bench.py --engine-kernels`)
3.53 -> 3.79 ms in bf16 (2.16 -> 2.12 FP8). Two variants lost too (bench/NOTES.md, 2026-12-04 thirteenth
session; diff in bench/results/2026-12-04-s13-pdl-variants.diff): an L2 prefetch of the first weights instead of
a register load (+11 % per step), and that plus each GEMV letting the next kernel launch only after its K loop
(+3.7 % bf16, +5.4 % FP8). So it is off by default and kept for experiments.
Needs an sm_90+ GPU and Triton >= 3.4 (`triton.language.extra.cuda.gdc_wait`); elsewhere, and in Triton's CPU
interpreter, `enabled` is False and the kernels compile as before.
"""

from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl

PDL_ENV = "TESSERA_PDL"
# Batch-1 decode attention as a PDL launch that reads the KV cache before the qkv GEMV before it has finished
# (`kernels.decode_attention`, "early KV"); the qkv GEMV triggers it as its programs start. On by default (sm_90+):
# H100, 8B, `bench/step_ab.py --switch early-kv`: -0.8 / -1.2 / -1.6 % per step (bf16 / FP8 / AWQ) at 640 tokens,
# -0.5 to -4.2 % at 8k / 32k, logits bit-identical. TESSERA_DECODE_EARLY_KV=0 turns it off. Read at import.
EARLY_KV_ENV = "TESSERA_DECODE_EARLY_KV"
EARLY_KV = os.environ.get(EARLY_KV_ENV, "1") != "0"
# The batch-1 o projection (bf16 / FP8 Triton GEMV) as a PDL launch after the early-KV attention, which lets it start
# right after its own wait: o's first weights load while attention computes. On by default: H100, 8B,
# `bench/step_ab.py --switch o-pdl --rounds 5 --reps 200`: -1.34 % bf16, -1.26 % FP8 per step, bit-identical (the
# AWQ GEMVs are PDL launches already). TESSERA_PDL_O=0 turns it off. Read at import.
O_AFTER_ATTENTION = os.environ.get("TESSERA_PDL_O", "1") != "0"

try:  # Triton >= 3.4
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

    HAS_GDC = True
except ImportError:  # older Triton: no-ops, never compiled (PDL stays off)
    HAS_GDC = False

    @triton.jit
    def gdc_wait():
        pass

    @triton.jit
    def gdc_launch_dependents():
        pass


_override: bool | None = None  # set_enabled(...) for benchmarks and tests; None: the environment decides


@triton.jit
def wait_for_prior_kernel():
    """Blocks until the previous kernel in the stream has finished (its writes visible), then lets the next
    PDL kernel start. Everything a program does before this must read only data no earlier kernel writes."""
    gdc_wait()
    gdc_launch_dependents()


@functools.cache
def _capable(device_index: int) -> bool:
    return torch.cuda.get_device_capability(device_index) >= (9, 0)


def set_enabled(enabled: bool | None) -> None:
    """Forces PDL on or off for later launches (None: back to `TESSERA_PDL`). A CUDA graph keeps what it captured."""
    global _override
    _override = enabled


def capable(device: torch.device) -> bool:
    """Whether kernels on `device` can use `griddepcontrol` (sm_90+, Triton >= 3.4, not the CPU interpreter)."""
    if not HAS_GDC or device.type != "cuda" or os.environ.get("TRITON_INTERPRET") == "1":
        return False
    return _capable(device.index if device.index is not None else torch.cuda.current_device())


def enabled(device: torch.device) -> bool:
    """Whether kernels launched now on `device` use PDL."""
    wanted = _override if _override is not None else os.environ.get(PDL_ENV, "0") == "1"
    return wanted and capable(device)


def early_kv_enabled(device: torch.device) -> bool:
    """Whether batch-1 decode attention on `device` loads its KV before the qkv GEMV has finished
    (`kernels.decode_attention`, `EARLY_KV_ENV`)."""
    return EARLY_KV and capable(device)


def trigger_options(device: torch.device, wanted: bool) -> dict:
    """A GEMV's `TRIGGER` constexpr: `griddepcontrol.launch_dependents` as its programs start, so that a PDL launch
    after it (the early-KV decode attention) can start while it streams. Nothing when unwanted or not `capable`."""
    return {"TRIGGER": True} if wanted and capable(device) else {}


@triton.jit
def allow_dependents(TRIGGER: tl.constexpr):
    """The GEMVs' first statement: with TRIGGER, the next kernel (if it is a PDL launch) may start now."""
    if TRIGGER:
        gdc_launch_dependents()


def kernel_options(device: torch.device, wanted: bool | None = None) -> dict:
    """What a launch on `device` adds for PDL: the kernel's `PDL` constexpr and Triton's `launch_pdl` keyword when
    `enabled` (or, with `wanted` given, when wanted and `capable`), else nothing (the kernel's default `PDL=False`;
    older Triton has no such keyword)."""
    on = enabled(device) if wanted is None else wanted and capable(device)
    return {"PDL": True, "launch_pdl": True} if on else {}


def o_after_attention(device: torch.device) -> bool:
    """Whether the batch-1 o projection is a PDL launch after the early-KV attention (`O_AFTER_ATTENTION`)."""
    return O_AFTER_ATTENTION and early_kv_enabled(device)
