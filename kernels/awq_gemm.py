"""W4A16 matmuls on AutoAWQ GEMM-packed weights: `y = x @ dequant(W)` with W int4, group-wise zeros/scales.

Layout (AutoAWQ `WQLinear_GEMM`; K = in features, N = out features, G = group size):
- `qweight` int32 [K, N/8]: eight 4-bit values per int32 along N, nibble i (bits 4i..4i+3) holding column
  `8j + (0, 2, 4, 6, 1, 3, 5, 7)[i]`, so logical column c of a pack sits at nibble `c // 2 + 4 * (c % 2)`;
- `qzeros` int32 [K/G, N/8], packed alike; `scales` [K/G, N] (x's dtype);
- W[k, n] = (q[k, n] - z[k // G, n]) * s[k // G, n].

Entry points here, fp32-accumulating with the dequantisation in registers:
- `awq_gemm`: M rows (prefill chunks, batched decode), `tl.dot` on dequantised [BLOCK_K, BLOCK_N] tiles;
  with few rows (a small decode batch) K is split so the weight streams through every SM. Split-K partials
  go to an fp32 [split_k, M, N] buffer; the last split to finish a tile (an arrival counter) sums them in a
  fixed order, so the result is the same bits run to run and the whole op is one launch.
- `awq_dequantize`: W as a dense [K, N] matrix, for dequantize + cuBLAS (prefill, and the batches the CUDA
  small-batch kernel does not take: engine/quant/awq.py) and tests.
The batch-1 GEMV (`awq_gemv`) is `kernels.awq_gemv`; the layout checks here serve both.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from kernels._common import device_num_sms, dot_precision

PACK = 8  # int4 values per int32


class AwqGemmConfig(NamedTuple):
    block_m: int
    block_n: int
    block_k: int  # must divide the group size
    num_warps: int
    num_stages: int = 2
    split_k: int | None = None  # None: split K only when the tiles alone would leave SMs idle


@triton.jit
def _nibble_shifts(offs_n):
    # Bit offset of logical column n inside its int32 (AutoAWQ's interleaved order, inverted).
    c = offs_n % 8
    return ((c // 2) + (c % 2) * 4) * 4


@triton.jit
def _awq_gemm_kernel(x_ptr, qw_ptr, qz_ptr, sc_ptr, part_ptr, lock_ptr, out_ptr, M, N, K, K_PER_SPLIT,
                     stride_xm, stride_om, stride_q,
                     GROUP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                     SPLIT_K: tl.constexpr, DOT_PRECISION: tl.constexpr, NUM_STAGES: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_k = tl.program_id(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_p = offs_n // 8  # each int32 is read by its 8 columns' threads (one coalesced transaction)
    shifts = _nibble_shifts(offs_n)
    mask_m = offs_m < M
    mask_n = offs_n < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    k_start = pid_k * K_PER_SPLIT
    k_end = tl.minimum(k_start + K_PER_SPLIT, K)
    for k0 in tl.range(k_start, k_end, BLOCK_K, num_stages=NUM_STAGES):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        a = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :], mask=mask_m[:, None], other=0.0)
        packed = tl.load(qw_ptr + offs_k[:, None] * stride_q + offs_p[None, :], mask=mask_n[None, :], other=0)
        g = k0 // GROUP
        zp = tl.load(qz_ptr + g * stride_q + offs_p, mask=mask_n, other=0)
        s = tl.load(sc_ptr + g * N + offs_n, mask=mask_n, other=0.0)  # [BLOCK_N], x's dtype
        q = (packed >> shifts[None, :]) & 0xF
        z = (zp >> shifts) & 0xF
        # (An exponent trick instead of the int-to-float convert was tried on 2026-12-02 and taken out
        # again before any GPU run could check it.)
        w = (q - z[None, :]).to(s.dtype) * s[None, :]  # [BLOCK_K, BLOCK_N]; (q - z) is exact in 16 bits
        acc = tl.dot(a, w, acc, input_precision=DOT_PRECISION)
    mask = mask_m[:, None] & mask_n[None, :]
    out_ptrs = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :]
    if SPLIT_K == 1:
        tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=mask)
    else:  # few rows: split K so the weight streams through every SM; reduced as in the GEMV
        part_ptrs = part_ptr + offs_m[:, None] * N + offs_n[None, :]
        tl.store(part_ptrs + pid_k * M * N, acc, mask=mask)
        tl.debug_barrier()
        tile = pid_m * tl.num_programs(1) + pid_n
        arrived = tl.atomic_add(lock_ptr + tile, 1, sem="acq_rel", scope="gpu")
        if arrived == SPLIT_K - 1:
            total = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            for split_idx in range(SPLIT_K):
                total += tl.load(part_ptrs + split_idx * M * N, mask=mask, other=0.0, cache_modifier=".cg")
            tl.store(out_ptrs, total.to(out_ptr.dtype.element_ty), mask=mask)
            tl.atomic_xchg(lock_ptr + tile, 0)


@triton.jit
def _awq_dequant_kernel(qw_ptr, qz_ptr, sc_ptr, out_ptr, K, N, NP, GROUP: tl.constexpr,
                        BLOCK_K: tl.constexpr, BLOCK_P: tl.constexpr):
    # One program: BLOCK_K rows of one group x BLOCK_P packs (8 * BLOCK_P columns). Each int32 is loaded once and
    # its 8 nibbles fan out along a third axis, so a thread stores 8 adjacent 16-bit columns in one 16-byte write;
    # the row lengths N and NP = N / 8 (the packed one) both come in as arguments so Triton sees them divisible by 16
    # and vectorises both sides.
    pid_k = tl.program_id(0)
    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    offs_p = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
    nibble = tl.arange(0, 8)
    shifts = _nibble_shifts(nibble)  # [8]: logical column c of a pack sits at these bits
    mask_p = offs_p < NP
    mask = (offs_k < K)[:, None] & mask_p[None, :]
    packed = tl.load(qw_ptr + offs_k[:, None] * NP + offs_p[None, :], mask=mask, other=0,
                     eviction_policy="evict_first")  # [BLOCK_K, BLOCK_P]
    g = pid_k * BLOCK_K // GROUP  # BLOCK_K divides GROUP: one group per program
    zp = tl.load(qz_ptr + g * NP + offs_p, mask=mask_p, other=0)  # [BLOCK_P]
    cols = offs_p[:, None] * 8 + nibble[None, :]  # [BLOCK_P, 8]
    s = tl.load(sc_ptr + g * N + cols, mask=mask_p[:, None], other=0.0)  # [BLOCK_P, 8]
    q = (packed[:, :, None] >> shifts[None, None, :]) & 0xF
    z = (zp[:, None] >> shifts[None, :]) & 0xF
    w = (q - z[None, :, :]).to(s.dtype) * s[None, :, :]  # the reference's arithmetic: exact int, one rounding
    tl.store(out_ptr + offs_k[:, None, None] * N + cols[None, :, :], w, mask=mask[:, :, None])


def _check_packed(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, group_size: int) -> tuple[int, int]:
    assert qweight.dim() == 2 and qweight.dtype == torch.int32 and qweight.is_contiguous(), (
        f"qweight: expected contiguous int32 [K, N/8], got {qweight.dtype} {tuple(qweight.shape)}")
    k, n = qweight.shape[0], qweight.shape[1] * PACK
    assert group_size > 0 and k % group_size == 0, f"K={k} is not a multiple of the group size {group_size}"
    assert qzeros.shape == (k // group_size, n // PACK) and qzeros.dtype == torch.int32 and qzeros.is_contiguous(), (
        f"qzeros: expected contiguous int32 {(k // group_size, n // PACK)}, got {qzeros.dtype} {tuple(qzeros.shape)}")
    assert scales.shape == (k // group_size, n) and scales.is_contiguous(), (
        f"scales: expected contiguous {(k // group_size, n)}, got {tuple(scales.shape)}")
    return k, n


def _check_x(x: torch.Tensor, k: int, scales: torch.Tensor) -> None:
    assert x.dim() == 2 and x.shape[1] == k and x.stride(1) == 1, (
        f"x: expected [M, {k}] with contiguous rows, got {tuple(x.shape)} strides {x.stride()}")
    assert x.dtype == scales.dtype, f"x dtype {x.dtype} != scales dtype {scales.dtype}"


def _block_k(group_size: int, want: int) -> int:
    block = min(want, group_size)
    assert group_size % block == 0, f"group size {group_size} must be a multiple of block_k {block}"
    return block


def default_gemm_config(m: int) -> AwqGemmConfig:
    if m <= 16:
        return AwqGemmConfig(block_m=16, block_n=128, block_k=64, num_warps=4)
    if m <= 64:
        return AwqGemmConfig(block_m=64, block_n=128, block_k=64, num_warps=4)
    return AwqGemmConfig(block_m=128, block_n=128, block_k=32, num_warps=8, num_stages=3)


def awq_gemm(x: torch.Tensor, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
             group_size: int, config: AwqGemmConfig | None = None,
             locks: torch.Tensor | None = None) -> torch.Tensor:
    """x [M, K] -> [M, N] in x's dtype. `locks`: `kernels.awq_gemv.gemv_locks` (needed only when K is split)."""
    k, n = _check_packed(qweight, qzeros, scales, group_size)
    _check_x(x, k, scales)
    m = x.shape[0]
    out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    if m == 0:
        return out
    cfg = config or default_gemm_config(m)
    block_k = _block_k(group_size, cfg.block_k)
    num_m, num_n = triton.cdiv(m, cfg.block_m), triton.cdiv(n, cfg.block_n)
    num_k_blocks = k // block_k
    split = cfg.split_k
    if split is None:
        sms = device_num_sms(x.device)
        split = 1 if num_m * num_n >= sms or m > 64 else min(num_k_blocks, triton.cdiv(2 * sms, num_m * num_n))
    k_per_split = triton.cdiv(num_k_blocks, split) * block_k
    split = triton.cdiv(k, k_per_split)
    partials = out
    if split > 1:
        partials = torch.empty((split, m, n), dtype=torch.float32, device=x.device)
        if locks is None:
            locks = torch.zeros(num_m * num_n, dtype=torch.int32, device=x.device)
        assert locks.dtype == torch.int32 and locks.numel() >= num_m * num_n, (
            f"locks: need {num_m * num_n} int32 counters")
    # The packed row stride is an argument (not N // 8 in-kernel) so Triton sees it divisible by 16 and
    # vectorises the qweight loads.
    _awq_gemm_kernel[(num_m, num_n, split)](
        x, qweight, qzeros, scales, partials, locks if locks is not None else out, out, m, n, k, k_per_split,
        x.stride(0), out.stride(0), n // PACK,
        GROUP=group_size, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=block_k, SPLIT_K=split,
        DOT_PRECISION=dot_precision(x.dtype), NUM_STAGES=cfg.num_stages, num_warps=cfg.num_warps)
    return out


class AwqDequantConfig(NamedTuple):
    block_k: int  # rows per program; must divide the group size
    block_p: int  # packs (8 columns each) per program
    num_warps: int


# The dequantize-then-cuBLAS path (prefill, batches of DEQUANT_MATMUL_MIN_ROWS rows and up) runs this once per
# projection per forward. H100, 8B projections (`python3 bench/awq_dequant_bench.py`, 2026-12-05): 16 rows x 32
# packs x 4 warps streams 2.50-2.62 TB/s of read + written bytes (copy: 2.96), a layer 213.7 us; 32 rows per
# program 686.9 us, the kernel before it (one int32 load per column) 980.4 us.
DEFAULT_DEQUANT_CONFIG = AwqDequantConfig(block_k=16, block_p=32, num_warps=4)


def awq_dequantize(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
                   group_size: int, config: AwqDequantConfig | None = None) -> torch.Tensor:
    """W as [K, N] in scales' dtype."""
    k, n = _check_packed(qweight, qzeros, scales, group_size)
    out = torch.empty((k, n), dtype=scales.dtype, device=scales.device)
    cfg = config or DEFAULT_DEQUANT_CONFIG
    block_k = _block_k(group_size, cfg.block_k)
    num_packs = n // PACK
    _awq_dequant_kernel[(triton.cdiv(k, block_k), triton.cdiv(num_packs, cfg.block_p))](
        qweight, qzeros, scales, out, k, n, num_packs, GROUP=group_size, BLOCK_K=block_k,
        BLOCK_P=cfg.block_p, num_warps=cfg.num_warps)
    return out
