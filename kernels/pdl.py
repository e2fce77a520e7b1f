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
attention lets it start after its own wait, so o's first weights load while attention computes. And the GEMVs after
the ones `GEMV_CHAIN` names (by default down -> the next layer's qkv, and for FP8 weights gate_up -> down too) are PDL
launches that their predecessor triggers as its programs start. No other kernel changes how it is launched.

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
# The batch-1 bf16 / FP8 Triton GEMVs as a chain, per edge: each projection named (o, gate_up, down) lets the next GEMV
# start as its programs start, and that next GEMV (gate_up, down, the next layer's qkv) is a PDL launch, so its first
# programs take the SM room the one before leaves or frees and request their weights early (what the CUDA AWQ GEMVs
# do, kernels/awq_gemv_cuda.py EARLY_TRIGGER). The edges pay differently per weight format (H100, 8B, 2026-12-07,
# `bench/step_ab.py --switch gemv-chain --quantizations fp8,bf16 --rounds 3 --reps 100`, bit-identical): FP8
# gate_up -0.48 %, down -0.57 %, o +0.91 %, gate_up + down -1.26 %; bf16 gate_up +1.15 %, down -1.37 %, o -0.74 %,
# gate_up + down -0.46 % (all three edges the session before: FP8 +0.90 %, bf16 -1.77 % with overlapping rounds). So
# the defaults are gate_up + down for FP8 weights and down for 16-bit ones. TESSERA_PDL_GEMV_CHAIN=gate_up,down (or
# none) sets the edges for both formats. Read at import.
GEMV_CHAIN_ENV = "TESSERA_PDL_GEMV_CHAIN"
# the GEMV that follows each projection's in the batch-1 layer
NEXT_GEMV = {"o": "gate_up", "gate_up": "down", "down": "qkv"}


def _parse_gemv_chain(value: str) -> frozenset[str]:
    from kernels.awq_gemv_cuda import parse_early_trigger  # one parser for both sets of projection names

    return parse_early_trigger(value, GEMV_CHAIN_ENV)


def _gemv_chain_setting(value: str | None) -> dict[str, frozenset[str]]:
    """Weight format ("fp8", "16-bit") -> chained projections: `value` (the env var) for both, or the defaults."""
    if value is not None:
        return dict.fromkeys(("fp8", "16-bit"), _parse_gemv_chain(value))
    return {"fp8": frozenset({"gate_up", "down"}), "16-bit": frozenset({"down"})}


GEMV_CHAIN = _gemv_chain_setting(os.environ.get(GEMV_CHAIN_ENV))

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


def gemv_chain(device: torch.device, weight_format: str) -> frozenset[str]:
    """The projections whose batch-1 Triton GEMV lets the next one start early on `device` (`GEMV_CHAIN`), for layers
    of `weight_format` ("fp8", "16-bit"; others, e.g. AWQ with its own early triggers, have none)."""
    return GEMV_CHAIN.get(weight_format, frozenset()) if capable(device) else frozenset()


def chained_after(chain: frozenset[str], gemv: str) -> bool | None:
    """`programmatic` for the batch-1 GEMV `gemv` given `gemv_chain(...)`: True (a PDL launch) where the projection
    before it triggers early, else None (as `TESSERA_PDL` says)."""
    return True if any(NEXT_GEMV[p] == gemv for p in chain) else None


def o_after_attention(device: torch.device) -> bool:
    """Whether the batch-1 o projection is a PDL launch after the early-KV attention (`O_AFTER_ATTENTION`)."""
    return O_AFTER_ATTENTION and early_kv_enabled(device)
