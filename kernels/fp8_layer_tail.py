"""Batch-1 FP8 layer tail in one persistent launch: the o projection (+ residual), RMSNorm + gate_up, and
SiLU-and-mul + down (+ residual), i.e. what `LlamaDecoderLayer.forward_single_row` runs after attention as three
`kernels.fp8_gemv` launches.

Why: at batch 1 each FP8 GEMV launch pays a fixed cost that does not shrink with the weights' bytes: the launch
gap, the first DRAM round trip before the weights stream, and the tail where the last programs drain while the
next kernel has not started. Fitted on the H100 sweeps (bench/NOTES.md, nineteenth session) it is ~2.5-6 us per
projection against 8-42 us of streaming, which is why FP8 layers stream 2.1-2.8 TB/s while the LM head's one long
launch reaches 3.1. Here one grid of programs (as many as are resident at once on the GPU, so all of them run at
the same time) walks the three projections' row blocks in turn, with a grid-wide barrier between phases (the
gate_up rows need all of the new residual for the norm, down all of gate_up). Before a program waits at a barrier
it has already requested its first weights of the next phase (weights never depend on an earlier phase), so DRAM
keeps streaming through the barrier and through the previous phase's stragglers: one launch instead of three, and
no ramp between them. Measured (H100, 2026-12-06): a tie with the three launches at best (72.1 vs 71.9 us per 8B
layer tail in a CUDA graph), so the launch boundaries were not where FP8 batch 1 loses; it stays opt-in
(`TESSERA_FP8_LAYER_TAIL=1`) for whoever extends it (bench/NOTES.md, nineteenth session).

The arithmetic is `kernels.fp8_gemv`'s lean loop (`kernels.fp8_gemv_lean`), row block for row block, with the same
prologue / epilogue helpers: with the same tiles the outputs are bit-identical to the three launches. Rows another
program wrote in this launch (the new residual, gate_up) are read from L2 (`.cg`), never from an SM's L1, which is
not coherent within a launch.

Co-residency is the one hard requirement of a grid barrier: every program must be running at once or the ones
waiting block the ones not yet started. The launcher sizes the grid from the compiled kernel's registers and shared
memory (the occupancy arithmetic of the CUDA occupancy calculator), never more than one program per row block, and
the barrier counters live in `kernels.gemv`'s per-device arrival counters (the last program out resets them), so
like split-K GEMVs these launches must not run on two streams of one device at once (the batch-1 forward runs on
one). On the CPU (Triton's interpreter runs programs one after another) the grid is one program.
"""

from __future__ import annotations

import functools
import math
import os
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from kernels._common import device_num_sms, next_pow2
from kernels.fp8_gemv_lean import _lean_iterations, _lean_loads, _lean_math
from kernels.fp8_quant import FP8_DTYPE
from kernels.gemv import _COUNTERS_LEN, _epilogue_store, _row_rstd, _split_k_counters

# TESSERA_FP8_LAYER_TAIL=1 runs every batch-1 FP8 layer's tail through this kernel, 0 (the default) keeps the three
# GEMV launches: on an H100 it tied them at best (bench/NOTES.md, nineteenth session), so it stays an experiment.
ENABLED = os.environ.get("TESSERA_FP8_LAYER_TAIL", "0") == "1"
# A cooperative launch (the driver checks that the whole grid is resident at once, else fails the launch).
COOPERATIVE = os.environ.get("TESSERA_FP8_TAIL_COOPERATIVE", "1") == "1"

DTYPES = (torch.bfloat16, torch.float16, torch.float32)
# The two arrival counters (barrier, exit) at the end of `kernels.gemv`'s counter buffer: split-K GEMVs use it from
# index 0, one counter per row block, and every kernel leaves its counters at zero.
_COUNTER_INDEX = _COUNTERS_LEN - 4  # 16-byte aligned, like every other pointer argument (same specialisation)


class Fp8TailConfig(NamedTuple):
    """Row block and chunks per loop iteration (`Fp8GemvConfig.block_n` / `.lean`) of each phase; the K chunk is
    the lean loop's barrier-free 256 x num_warps. The defaults (2 chunks everywhere: 121 registers, 4 programs of 4
    warps per SM, so one o / down row block per program on a 132-SM GPU) tied the three launches on an H100 (72.1
    vs 71.9 us per 8B layer tail, `bench/fp8_tail_bench.py`); the GEMVs' own tiles (4 / 4 / 3 chunks, 155
    registers, 3 per SM) lost 25 %: 396 programs for 512 row blocks run o and down in two rounds."""

    block_n_o: int = 8
    lean_o: int = 2
    block_n_gate_up: int = 8
    lean_gate_up: int = 2
    block_n_down: int = 8
    lean_down: int = 2
    num_warps: int = 4
    # Programs per SM. 0: as many as the kernel compiled without a register cap fits; N: N per SM, registers capped
    # to fit them (ptxas may spill).
    programs_per_sm: int = 0

    @property
    def block_k(self) -> int:
        return 256 * self.num_warps


# What the engine launches: the defaults, `TESSERA_FP8_TAIL_PROGRAMS_PER_SM` capping the programs per SM (read once,
# like ENABLED). Any lean tile of the same warp count sums a row as the three GEMVs do, bit for bit (rows per program
# and chunks per iteration do not change the order), so the defaults are the measured best, not the GEMVs' tiles.
DEFAULT_CONFIG = Fp8TailConfig(programs_per_sm=int(os.environ.get("TESSERA_FP8_TAIL_PROGRAMS_PER_SM", "0")))


@triton.jit
def _grid_sync(counter_ptr, target):
    """Returns once `target` programs have arrived here (counted since the launch began): every store a program
    made before its arrival is visible to every program after the sync."""
    tl.debug_barrier()  # all of this program's threads have issued their stores before it counts as arrived
    tl.atomic_add(counter_ptr, 1, sem="release", scope="gpu")
    seen = tl.atomic_add(counter_ptr, 0, sem="acquire", scope="gpu")
    while seen < target:
        seen = tl.atomic_add(counter_ptr, 0, sem="acquire", scope="gpu")
    tl.debug_barrier()


@triton.jit
def _block(w_ptr, block, rows, offs_k0, N, K, BLOCK_N: tl.constexpr):
    # Row block `block`'s rows, their mask and its weight pointer tile. The contiguity hint sits on an op (see
    # `_fp8_lean_k_loop`): 8 fp8 per thread and row, x's 8 columns.
    offs_n = block * BLOCK_N + rows
    base = tl.max_contiguous(w_ptr + offs_n.to(tl.int64)[:, None] * K + offs_k0[None, :], [1, 8])
    return offs_n, offs_n < N, base


@triton.jit
def _store_rows(acc, offs_n, mask_n, scale_ptr, res_ptr, out_ptr, ADD_RESIDUAL: tl.constexpr, L2_ONLY: tl.constexpr):
    y = tl.sum(acc, 1) * tl.load(scale_ptr + offs_n, mask=mask_n, other=0.0)
    _epilogue_store(y, offs_n, mask_n, scale_ptr, res_ptr, out_ptr, False, ADD_RESIDUAL, L2_ONLY)


@triton.jit
def _phase(x_ptr, norm_w_ptr, w_ptr, scale_ptr, res_ptr, out_ptr, counter_ptr, sync_target, pid, nprog, N, K, eps,
           dtype, PROLOGUE: tl.constexpr, ADD_RESIDUAL: tl.constexpr, SYNC: tl.constexpr, EVEN_N: tl.constexpr,
           EVEN_K: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, NORM_BLOCK: tl.constexpr,
           UNROLL: tl.constexpr):
    """One projection, row blocks pid, pid + nprog, ... (the launcher gives every program at least one). `SYNC`:
    x and the residual were written by the previous phase: wait for all programs, but request this phase's first
    weights before waiting."""
    offs_k0 = tl.arange(0, BLOCK_K)
    rows = tl.arange(0, BLOCK_N)
    offs_n, mask_n, base = _block(w_ptr, pid, rows, offs_k0, N, K, BLOCK_N)
    w0, w1, w2, w3 = _lean_loads(base, 0, 0, K, offs_k0, mask_n, EVEN_N, EVEN_K, BLOCK_K, UNROLL)
    if SYNC:
        _grid_sync(counter_ptr, sync_target)
    rstd = 1.0
    if PROLOGUE == 1:  # once per phase: every row block of it normalises the same row
        rstd = _row_rstd(x_ptr, K, eps, NORM_BLOCK, SYNC)
    acc = tl.zeros([BLOCK_N, BLOCK_K // 8], dtype=tl.float32)
    acc = _lean_math(acc, w0, w1, w2, w3, x_ptr, norm_w_ptr, 0, offs_k0, K, rstd, dtype, PROLOGUE, BLOCK_N, BLOCK_K,
                     UNROLL, SYNC)
    acc = _lean_iterations(acc, base, x_ptr, norm_w_ptr, UNROLL * BLOCK_K, 0, K, K, rstd, mask_n, offs_k0, dtype,
                           PROLOGUE, EVEN_N, EVEN_K, BLOCK_N, BLOCK_K, UNROLL, SYNC)
    _store_rows(acc, offs_n, mask_n, scale_ptr, res_ptr, out_ptr, ADD_RESIDUAL, SYNC)
    for block in range(pid + nprog, tl.cdiv(N, BLOCK_N), nprog):
        offs_n, mask_n, base = _block(w_ptr, block, rows, offs_k0, N, K, BLOCK_N)
        acc = _lean_iterations(tl.zeros([BLOCK_N, BLOCK_K // 8], dtype=tl.float32), base, x_ptr, norm_w_ptr, 0, 0,
                               K, K, rstd, mask_n, offs_k0, dtype, PROLOGUE, EVEN_N, EVEN_K, BLOCK_N, BLOCK_K, UNROLL,
                               SYNC)
        _store_rows(acc, offs_n, mask_n, scale_ptr, res_ptr, out_ptr, ADD_RESIDUAL, SYNC)


@triton.jit
def _fp8_layer_tail_kernel(
    attn_ptr, stream_ptr, norm_w_ptr, h_ptr, gate_up_ptr, out_ptr,
    w_o_ptr, s_o_ptr, w_gu_ptr, s_gu_ptr, w_d_ptr, s_d_ptr, counter_ptr,
    H, Q, INTER, eps, nprog,
    EVEN_O: tl.constexpr, EVEN_Q: tl.constexpr, EVEN_GU: tl.constexpr, EVEN_H: tl.constexpr,
    EVEN_D: tl.constexpr, EVEN_I: tl.constexpr,
    BLOCK_N_O: tl.constexpr, UNROLL_O: tl.constexpr, BLOCK_N_GU: tl.constexpr, UNROLL_GU: tl.constexpr,
    BLOCK_N_D: tl.constexpr, UNROLL_D: tl.constexpr, BLOCK_K: tl.constexpr, NORM_BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    dtype = out_ptr.dtype.element_ty
    # h = attn W_o^T + stream (attn and stream come from earlier launches: no sync, plain loads).
    _phase(attn_ptr, s_o_ptr, w_o_ptr, s_o_ptr, stream_ptr, h_ptr, counter_ptr, 0, pid, nprog, H, Q, eps, dtype,
           0, True, False, EVEN_O, EVEN_Q, BLOCK_N_O, BLOCK_K, NORM_BLOCK, UNROLL_O)
    # gate_up = RMSNorm(h) W_gu^T.
    _phase(h_ptr, norm_w_ptr, w_gu_ptr, s_gu_ptr, h_ptr, gate_up_ptr, counter_ptr, nprog, pid, nprog, 2 * INTER, H,
           eps, dtype, 1, False, True, EVEN_GU, EVEN_H, BLOCK_N_GU, BLOCK_K, NORM_BLOCK, UNROLL_GU)
    # out = (silu(gate) * up) W_d^T + h.
    _phase(gate_up_ptr, s_d_ptr, w_d_ptr, s_d_ptr, h_ptr, out_ptr, counter_ptr, 2 * nprog, pid, nprog, H, INTER,
           eps, dtype, 2, True, True, EVEN_D, EVEN_I, BLOCK_N_D, BLOCK_K, NORM_BLOCK, UNROLL_D)
    # The last program out zeroes both counters for the next launch (every program has left both syncs by then).
    tl.debug_barrier()
    if tl.atomic_add(counter_ptr + 1, 1, sem="acq_rel", scope="gpu") == nprog - 1:
        tl.atomic_xchg(counter_ptr, 0, sem="relaxed", scope="gpu")
        tl.atomic_xchg(counter_ptr + 1, 0, sem="relaxed", scope="gpu")


class _Layer(NamedTuple):
    """The shapes of one layer tail: hidden H, attention output width Q (o's K), intermediate INTER."""

    hidden: int
    q_width: int
    inter: int


def _constexprs(layer: _Layer, cfg: Fp8TailConfig) -> dict:
    h, q, inter = layer
    bk = cfg.block_k
    return dict(
        EVEN_O=h % cfg.block_n_o == 0, EVEN_Q=q % bk == 0, EVEN_GU=(2 * inter) % cfg.block_n_gate_up == 0,
        EVEN_H=h % bk == 0, EVEN_D=h % cfg.block_n_down == 0, EVEN_I=inter % bk == 0,
        BLOCK_N_O=cfg.block_n_o, UNROLL_O=cfg.lean_o, BLOCK_N_GU=cfg.block_n_gate_up, UNROLL_GU=cfg.lean_gate_up,
        BLOCK_N_D=cfg.block_n_down, UNROLL_D=cfg.lean_down, BLOCK_K=bk,
        NORM_BLOCK=min(next_pow2(h), 4096), num_warps=cfg.num_warps,
    )


def resident_per_sm(n_regs: int, shared_bytes: int, num_warps: int, props) -> int:
    """Programs of one kernel resident on an SM at once, as the CUDA occupancy calculator counts them: registers
    are allocated per warp in units of 256, shared memory per block plus 1 KiB the system reserves, at most 64
    warps and 32 blocks per SM (sm_80-sm_90)."""
    regs_per_warp = math.ceil(max(n_regs, 1) * 32 / 256) * 256
    by_regs = (getattr(props, "regs_per_multiprocessor", 65536) // regs_per_warp) // num_warps
    by_warps = (getattr(props, "max_threads_per_multi_processor", 2048) // 32) // num_warps
    smem_per_sm = getattr(props, "shared_memory_per_multiprocessor", 233472)
    by_smem = smem_per_sm // (shared_bytes + 1024) if shared_bytes else 32
    return max(0, min(by_regs, by_warps, by_smem, 32))


class _Grid(NamedTuple):
    programs: int  # the launch's grid
    maxnreg: int  # the register cap every specialisation is compiled with, so `programs` always fit


@functools.cache
def _grid(device_index: int, layer: _Layer, cfg: Fp8TailConfig, dtype: torch.dtype) -> _Grid:
    """All programs resident at once (the barrier's requirement), at most one per row block of the smallest phase
    (every program owns a row block in every phase). The programs per SM come from the kernel compiled without a
    cap (or `cfg.programs_per_sm`); the launch then caps registers at what that many programs per SM may use, so a
    specialisation compiled for other argument alignments cannot need more. The launch is also cooperative: were
    the grid still too large, the driver would refuse it rather than let the barrier wait forever."""
    device = torch.device("cuda", device_index)
    h, q, inter = layer
    x = torch.empty(max(h, q, 2 * inter), device=device, dtype=dtype)
    w = torch.empty(16, device=device, dtype=FP8_DTYPE)
    s = torch.empty(16, device=device, dtype=torch.float32)
    c = torch.empty(4, device=device, dtype=torch.int32)
    props = torch.cuda.get_device_properties(device)
    blocks = min(triton.cdiv(h, cfg.block_n_o), triton.cdiv(2 * inter, cfg.block_n_gate_up),
                 triton.cdiv(h, cfg.block_n_down))

    def compiled(programs: int, **options):
        kernel = _fp8_layer_tail_kernel.warmup(x, x, x, x, x, x, w, s, w, s, w, s, c, h, q, inter, 1e-6, programs,
                                               grid=(1,), **_constexprs(layer, cfg), **options)
        kernel._init_handles()
        return kernel

    natural = compiled(blocks)
    per_sm = cfg.programs_per_sm or resident_per_sm(natural.n_regs, natural.metadata.shared, cfg.num_warps, props)
    regs = getattr(props, "regs_per_multiprocessor", 65536)
    maxnreg = min(255, regs // max(per_sm * cfg.num_warps * 32, 1) // 8 * 8)
    assert per_sm >= 1 and maxnreg >= 32, f"fp8_layer_tail: {cfg} does not fit on an SM"
    programs = min(per_sm * device_num_sms(device), blocks)
    capped = compiled(programs, maxnreg=maxnreg)
    fits = resident_per_sm(capped.n_regs, capped.metadata.shared, cfg.num_warps, props)
    assert fits >= per_sm, f"fp8_layer_tail: {cfg}: {fits} programs per SM fit, {per_sm} planned"
    return _Grid(programs, maxnreg)


def _check_weight(name: str, w: torch.Tensor, s: torch.Tensor, n: int, k: int) -> None:
    assert w.dtype == FP8_DTYPE and w.shape == (n, k) and w.is_contiguous(), (
        f"{name}: expected a contiguous [{n}, {k}] float8_e4m3fn weight, got {w.dtype} {tuple(w.shape)}")
    assert s.dtype == torch.float32 and s.shape == (n,) and s.is_contiguous(), (
        f"{name} scale: expected fp32 [{n}], got {s.dtype} {tuple(s.shape)}")


def fp8_layer_tail(
    attn_out: torch.Tensor,  # [1, Q]: attention's output, o's input
    stream: torch.Tensor,  # [1, H]: the residual stream before this layer's o projection
    w_o: torch.Tensor, s_o: torch.Tensor,  # [H, Q] e4m3, [H] fp32
    norm_weight: torch.Tensor, eps: float,  # post-attention RMSNorm
    w_gate_up: torch.Tensor, s_gate_up: torch.Tensor,  # [2 I, H], [2 I]
    w_down: torch.Tensor, s_down: torch.Tensor,  # [H, I], [H]
    config: Fp8TailConfig | None = None,
    programs: int | None = None,  # grid size override (tests); must not exceed what is resident at once
) -> torch.Tensor:
    """The layer's output stream [1, H]: `down(silu_mul(gate_up(rmsnorm(o(attn_out) + stream)))) + (o(attn_out) +
    stream)`, rounded exactly as the three `kernels.fp8_gemv` launches with the same tiles round."""
    cfg = config or DEFAULT_CONFIG
    h = stream.shape[-1]
    q = attn_out.shape[-1]
    inter = w_down.shape[1]
    dtype = stream.dtype
    assert dtype in DTYPES and attn_out.dtype == dtype, f"activations: {attn_out.dtype} / {dtype}"
    assert stream.shape == (1, h) and stream.is_contiguous() and attn_out.shape == (1, q) and attn_out.is_contiguous(), (
        f"one row each: attn_out {tuple(attn_out.shape)}, stream {tuple(stream.shape)}")
    _check_weight("o", w_o, s_o, h, q)
    _check_weight("gate_up", w_gate_up, s_gate_up, 2 * inter, h)
    _check_weight("down", w_down, s_down, h, inter)
    assert norm_weight.shape == (h,) and norm_weight.is_contiguous(), f"norm_weight {tuple(norm_weight.shape)}"
    layer = _Layer(h, q, inter)
    launch: dict = {}
    if stream.is_cuda:
        index = stream.device.index if stream.device.index is not None else torch.cuda.current_device()
        grid = _grid(index, layer, cfg, dtype)
        launch = {"maxnreg": grid.maxnreg, "launch_cooperative_grid": COOPERATIVE}
        assert programs is None or programs <= grid.programs, f"programs {programs} > {grid.programs} resident"
        programs = programs or grid.programs
    else:
        programs = 1  # the interpreter runs programs in sequence: a barrier needs them all at once
    counters = _split_k_counters(stream.device)[_COUNTER_INDEX:]
    h_mid = torch.empty_like(stream)
    gate_up = torch.empty((1, 2 * inter), dtype=dtype, device=stream.device)
    out = torch.empty_like(stream)
    _fp8_layer_tail_kernel[(programs,)](
        attn_out, stream, norm_weight, h_mid, gate_up, out,
        w_o, s_o, w_gate_up, s_gate_up, w_down, s_down, counters,
        h, q, inter, eps, programs, **_constexprs(layer, cfg), **launch,
    )
    return out
