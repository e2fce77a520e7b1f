"""Fused single-row GEMV for batch-1 decode: `y = prologue(x) @ W^T (+ bias) (+ residual)` in one launch.

At batch 1 a decode step is bound by streaming the weights once. cuBLAS streams them well, but around
each projection sit latency-bound launches: RMSNorm before the QKV and gate/up projections,
SiLU-and-mul before the down projection, the residual add after o/down, and cuBLAS's own split-K
reduces. Each costs 1-3 us of a ~6 ms step, 5 per layer. Here they become the prologue / epilogue of
the projection itself:

- `PROLOGUE_RMSNORM`: every program recomputes the row's sum of squares (the row is 8-28 KiB and sits
  in L2), then normalises each K-chunk on the fly with HF `LlamaRMSNorm` rounding.
- `PROLOGUE_SILU_MUL`: x is the packed [gate | up] row; each chunk is `silu(gate) * up`, rounded like
  HF's `act_fn(gate) * up`.
- `ADD_RESIDUAL`: the epilogue adds the running residual (HF's `residual + hidden` in the model dtype);
  each output slice is written by one program, so `out` may alias `residual`.

Two kernels share these pieces:

- `_gemv_kernel` (`split_k == 1`): each program owns BLOCK_N output rows and walks all of K, so no
  reduction across programs. Partial products stay in a [BLOCK_N, BLOCK_K] fp32 tile and are reduced
  across threads once, after the loop.
- `_gemv_split_k_kernel` (`split_k > 1`, for projections with few output rows, where one program per
  row block leaves too few, too long programs to fill an H200's memory pipe): program (s, j) walks
  slice s of K for row block j and stores its fp32 partial sums; then it bumps row block j's arrival
  counter (acquire-release), and the program that arrives last adds the partials in split order and
  runs the epilogue, then resets the counter to 0. One launch, no atomics on the sums, so the result
  is still bit-identical run to run. The counters live in a per-device buffer zeroed once
  (`_split_k_counters`), which is why split-K launches on one device must not run concurrently on
  two streams (the engine's batch-1 forward runs on one).

Tiles come from `kernels.gemv_configs.pick_config` (a per-device table of swept winners, H100-derived
defaults otherwise) unless the caller passes `config`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels._common import next_pow2
from kernels.gemv_configs import GemvConfig, default_config, pick_config, validate
from kernels.pdl import allow_dependents, trigger_options, wait_for_prior_kernel
from kernels.pdl import kernel_options as pdl_kernel_options

__all__ = ["PROLOGUE_NONE", "PROLOGUE_RMSNORM", "PROLOGUE_SILU_MUL", "GemvConfig", "default_config", "fused_gemv"]

PROLOGUE_NONE = 0
PROLOGUE_RMSNORM = 1
PROLOGUE_SILU_MUL = 2

# Arrival counters for split-K row blocks, per device: 64K int32 (256 KiB) covers every row block a
# grid can hold (split-K is for small N; the launcher checks).
_COUNTERS_LEN = 1 << 16
_counters: dict[torch.device, torch.Tensor] = {}


@triton.jit
def _load_w(w_rows, offs_k, mask_n, K, EVEN_N: tl.constexpr, EVEN_K: tl.constexpr):
    # Weights are read exactly once per step: do not let them push x or the KV cache out of L2.
    if EVEN_N and EVEN_K:
        return tl.load(w_rows + offs_k[None, :], eviction_policy="evict_first")
    return tl.load(w_rows + offs_k[None, :], mask=mask_n[:, None] & (offs_k < K)[None, :], other=0.0,
                   eviction_policy="evict_first")


@triton.jit
def _load_row(ptrs, mask, L2_ONLY: tl.constexpr):
    """A slice of an activation row. `L2_ONLY`: read from L2 (`.cg`), never this SM's L1, for rows that other
    programs of the same launch wrote (a persistent kernel's earlier phase, `kernels.fp8_layer_tail`): L1 is not
    coherent within a launch. Otherwise keep the row in L2 (`evict_last`): every program reads it."""
    if L2_ONLY:
        return tl.load(ptrs, mask=mask, other=0.0, cache_modifier=".cg")
    return tl.load(ptrs, mask=mask, other=0.0, eviction_policy="evict_last")


@triton.jit
def _load_x(x_ptr, norm_w_ptr, offs_k, K, rstd, dtype, PROLOGUE: tl.constexpr, L2_ONLY: tl.constexpr = False):
    """One K-chunk of the GEMV input as fp32, after the prologue (rounded as the unfused ops round)."""
    mask_k = offs_k < K
    if PROLOGUE == 1:
        xv = _load_row(x_ptr + offs_k, mask_k, L2_ONLY).to(tl.float32)
        normed = (xv * rstd).to(dtype).to(tl.float32)
        gamma = tl.load(norm_w_ptr + offs_k, mask=mask_k, other=0.0, eviction_policy="evict_last")
        return (normed * gamma.to(tl.float32)).to(dtype).to(tl.float32)
    elif PROLOGUE == 2:
        gate = _load_row(x_ptr + offs_k, mask_k, L2_ONLY).to(tl.float32)
        up = _load_row(x_ptr + K + offs_k, mask_k, L2_ONLY).to(tl.float32)
        act = (gate / (1.0 + tl.exp(-gate))).to(dtype).to(tl.float32)
        return (act * up).to(dtype).to(tl.float32)
    else:
        return _load_row(x_ptr + offs_k, mask_k, L2_ONLY).to(tl.float32)


@triton.jit
def _row_rstd(x_ptr, K, eps, NORM_BLOCK: tl.constexpr, L2_ONLY: tl.constexpr = False):
    """1 / RMS of the whole input row (the RMSNorm prologue needs all of it, whatever K slice a program owns)."""
    sum_sq = tl.zeros([NORM_BLOCK], dtype=tl.float32)
    for k0 in range(0, K, NORM_BLOCK):
        offs = k0 + tl.arange(0, NORM_BLOCK)
        xv = _load_row(x_ptr + offs, offs < K, L2_ONLY).to(tl.float32)
        sum_sq += xv * xv
    return tl.rsqrt(tl.sum(sum_sq, 0) / K + eps)


@triton.jit
def _epilogue_store(y, offs_n, mask_n, bias_ptr, res_ptr, out_ptr,
                    HAS_BIAS: tl.constexpr, ADD_RESIDUAL: tl.constexpr, L2_ONLY: tl.constexpr = False):
    """fp32 row sums -> (+ bias in fp32) -> model dtype -> (+ residual, rounded like HF) -> out."""
    dtype = out_ptr.dtype.element_ty
    if HAS_BIAS:
        y += tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)
    y = y.to(dtype)
    if ADD_RESIDUAL:
        if L2_ONLY:  # written by another program of the same launch (see `_load_row`)
            res = tl.load(res_ptr + offs_n, mask=mask_n, other=0.0, cache_modifier=".cg")
        else:
            res = tl.load(res_ptr + offs_n, mask=mask_n, other=0.0)
        y = (y.to(tl.float32) + res.to(tl.float32)).to(dtype)
    tl.store(out_ptr + offs_n, y, mask=mask_n)


@triton.jit
def _gemv_kernel(
    x_ptr, norm_w_ptr, w_ptr, bias_ptr, res_ptr, out_ptr,
    N, K, stride_wn, eps,
    PROLOGUE: tl.constexpr, HAS_BIAS: tl.constexpr, ADD_RESIDUAL: tl.constexpr,
    EVEN_N: tl.constexpr, EVEN_K: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, NORM_BLOCK: tl.constexpr, NUM_STAGES: tl.constexpr,
    PDL: tl.constexpr = False, TRIGGER: tl.constexpr = False,
):
    allow_dependents(TRIGGER)
    pid = tl.program_id(0)
    offs_n = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    dtype = out_ptr.dtype.element_ty
    w_rows = w_ptr + offs_n.to(tl.int64)[:, None] * stride_wn
    offs_k0 = tl.arange(0, BLOCK_K)

    if PDL:  # the first weight tile goes out before waiting for the kernel that wrote x (kernels/pdl.py)
        w_first = _load_w(w_rows, offs_k0, mask_n, K, EVEN_N, EVEN_K)
        wait_for_prior_kernel()
    rstd = 1.0
    if PROLOGUE == 1:
        rstd = _row_rstd(x_ptr, K, eps, NORM_BLOCK)
    if PDL:
        acc = w_first.to(tl.float32) * _load_x(x_ptr, norm_w_ptr, offs_k0, K, rstd, dtype, PROLOGUE)[None, :]
        k_start = BLOCK_K
    else:
        acc = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
        k_start = 0
    for k0 in tl.range(k_start, K, BLOCK_K, num_stages=NUM_STAGES):
        w = _load_w(w_rows, k0 + offs_k0, mask_n, K, EVEN_N, EVEN_K)
        acc += w.to(tl.float32) * _load_x(x_ptr, norm_w_ptr, k0 + offs_k0, K, rstd, dtype, PROLOGUE)[None, :]

    _epilogue_store(tl.sum(acc, 1), offs_n, mask_n, bias_ptr, res_ptr, out_ptr, HAS_BIAS, ADD_RESIDUAL)


@triton.jit
def _gemv_split_k_kernel(
    x_ptr, norm_w_ptr, w_ptr, bias_ptr, res_ptr, out_ptr, part_ptr, counter_ptr,
    N, K, stride_wn, eps, k_per_split,
    PROLOGUE: tl.constexpr, HAS_BIAS: tl.constexpr, ADD_RESIDUAL: tl.constexpr,
    EVEN_N: tl.constexpr, EVEN_K: tl.constexpr, SPLIT_K: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, NORM_BLOCK: tl.constexpr, NUM_STAGES: tl.constexpr,
    PDL: tl.constexpr = False, TRIGGER: tl.constexpr = False,
):
    allow_dependents(TRIGGER)
    # Axis 0 is the split so that a row block's slices are launched (and finish) close together.
    pid_k = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    dtype = out_ptr.dtype.element_ty
    w_rows = w_ptr + offs_n.to(tl.int64)[:, None] * stride_wn
    offs_k0 = tl.arange(0, BLOCK_K)

    # k_per_split is a multiple of BLOCK_K (the launcher rounds it), so EVEN_K tiles stay whole, and
    # no slice is empty. The first weight tile is requested before the RMSNorm statistics: a slice is
    # only a few tiles long, and the row's sum of squares (an L2 round trip and a block reduction)
    # would otherwise delay every program's first DRAM request.
    k_begin = pid_k * k_per_split
    k_end = tl.minimum(k_begin + k_per_split, K)
    w_first = _load_w(w_rows, k_begin + offs_k0, mask_n, K, EVEN_N, EVEN_K)
    if PDL:  # x, the partials and the counters belong to earlier kernels: wait for them (kernels/pdl.py)
        wait_for_prior_kernel()
    rstd = 1.0
    if PROLOGUE == 1:
        rstd = _row_rstd(x_ptr, K, eps, NORM_BLOCK)
    acc = w_first.to(tl.float32) * _load_x(x_ptr, norm_w_ptr, k_begin + offs_k0, K, rstd, dtype, PROLOGUE)[None, :]
    for k0 in tl.range(k_begin + BLOCK_K, k_end, BLOCK_K, num_stages=NUM_STAGES):
        w = _load_w(w_rows, k0 + offs_k0, mask_n, K, EVEN_N, EVEN_K)
        acc += w.to(tl.float32) * _load_x(x_ptr, norm_w_ptr, k0 + offs_k0, K, rstd, dtype, PROLOGUE)[None, :]
    tl.store(part_ptr + pid_k * N + offs_n, tl.sum(acc, 1), mask=mask_n)

    # Every thread's partial stores happen before the (single-thread) release of the counter.
    tl.debug_barrier()
    counter = counter_ptr + pid_n
    arrived = tl.atomic_add(counter, 1, sem="acq_rel", scope="gpu")
    if arrived == SPLIT_K - 1:
        # Last slice of this row block: sum the partials in split order (deterministic), then the
        # epilogue. `.cg` reads come from L2, not this SM's L1: other programs wrote them.
        y = tl.zeros([BLOCK_N], dtype=tl.float32)
        for s in range(SPLIT_K):
            y += tl.load(part_ptr + s * N + offs_n, mask=mask_n, other=0.0, cache_modifier=".cg")
        _epilogue_store(y, offs_n, mask_n, bias_ptr, res_ptr, out_ptr, HAS_BIAS, ADD_RESIDUAL)
        tl.store(counter, 0)  # ready for the next launch (stream order makes it visible)


def _split_k_counters(device: torch.device) -> torch.Tensor:
    """This device's zeroed arrival counters (the kernel leaves them zero again). Allocated on first use,
    which must not be inside a CUDA graph capture: the engine and the benchmarks warm up first."""
    counters = _counters.get(device)
    if counters is None:
        assert device.type != "cuda" or not torch.cuda.is_current_stream_capturing(), (
            "fused_gemv: the first split-K launch on a device must run before CUDA graph capture (warm up first)")
        counters = _counters[device] = torch.zeros(_COUNTERS_LEN, dtype=torch.int32, device=device)
    return counters


def _check_vec(name: str, t: torch.Tensor, length: int, dtype: torch.dtype) -> None:
    assert t.dim() == 2 and t.shape[0] == 1 and t.shape[1] == length, (
        f"{name}: expected shape (1, {length}), got {tuple(t.shape)}")
    assert t.stride(1) == 1, f"{name}: last dim must be contiguous, got strides {t.stride()}"
    assert t.dtype == dtype, f"{name}: expected {dtype}, got {t.dtype}"


def fused_gemv(
    x: torch.Tensor,  # [1, K], or [1, 2K] (gate | up) with silu_mul
    weight: torch.Tensor,  # [N, K], rows contiguous
    *,
    norm_weight: torch.Tensor | None = None,  # [K]: RMSNorm prologue with this gamma
    eps: float = 1e-6,
    silu_mul: bool = False,
    bias: torch.Tensor | None = None,  # [N]
    residual: torch.Tensor | None = None,  # [1, N]: y += residual (may alias `out`)
    out: torch.Tensor | None = None,  # [1, N]
    config: GemvConfig | None = None,  # default: `pick_config` (this device's table, else H100 defaults)
    trigger_dependents: bool = False,  # a PDL launch after this one may start as its programs start (kernels/pdl.py)
    programmatic: bool | None = None,  # launch with PDL (kernels/pdl.py); None: as `TESSERA_PDL` says
) -> torch.Tensor:  # [1, N], dtype of x
    assert weight.dim() == 2 and weight.stride(1) == 1, (
        f"weight: expected [N, K] with contiguous rows, got {tuple(weight.shape)} strides {weight.stride()}")
    n, k = weight.shape
    dtype = x.dtype
    assert weight.dtype == dtype, f"weight dtype {weight.dtype} != x dtype {dtype}"
    assert not (silu_mul and norm_weight is not None), "one prologue at a time"
    _check_vec("x", x, 2 * k if silu_mul else k, dtype)
    prologue = PROLOGUE_SILU_MUL if silu_mul else PROLOGUE_NONE
    if norm_weight is not None:
        assert norm_weight.shape == (k,) and norm_weight.is_contiguous(), f"norm_weight {tuple(norm_weight.shape)}"
        prologue = PROLOGUE_RMSNORM
    if bias is not None:
        assert bias.shape == (n,) and bias.is_contiguous(), f"bias {tuple(bias.shape)}"
    if residual is not None:
        _check_vec("residual", residual, n, dtype)
    if out is None:
        out = torch.empty((1, n), dtype=dtype, device=x.device)
    _check_vec("out", out, n, dtype)
    cfg = validate(config) if config is not None else pick_config(weight.device, n, k)
    k_tiles = triton.cdiv(k, cfg.block_k)
    # Slices are whole K-chunks; rounding can leave fewer non-empty slices than asked (drop the rest).
    tiles_per_split = triton.cdiv(k_tiles, min(cfg.split_k, k_tiles))
    split_k = triton.cdiv(k_tiles, tiles_per_split)
    args = (x, norm_weight if norm_weight is not None else x, weight, bias if bias is not None else x,
            residual if residual is not None else out, out)
    meta = dict(PROLOGUE=prologue, HAS_BIAS=bias is not None, ADD_RESIDUAL=residual is not None,
                EVEN_N=n % cfg.block_n == 0, EVEN_K=k % cfg.block_k == 0,
                BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, NORM_BLOCK=min(next_pow2(k), 4096),
                NUM_STAGES=cfg.num_stages, num_warps=cfg.num_warps, **pdl_kernel_options(x.device, programmatic),
                **trigger_options(x.device, trigger_dependents))
    n_blocks = triton.cdiv(n, cfg.block_n)
    if split_k == 1:
        _gemv_kernel[(n_blocks,)](*args, n, k, weight.stride(0), eps, **meta)
        return out
    # Row blocks are grid axis 1 (at most 65535) and index the counters.
    assert n_blocks < _COUNTERS_LEN, f"split-K over {n_blocks} row blocks: at most {_COUNTERS_LEN - 1} (raise block_n)"
    partials = torch.empty((split_k, n), dtype=torch.float32, device=x.device)
    _gemv_split_k_kernel[(split_k, n_blocks)](
        *args, partials, _split_k_counters(x.device), n, k, weight.stride(0), eps, tiles_per_split * cfg.block_k,
        SPLIT_K=split_k, **meta)
    return out
