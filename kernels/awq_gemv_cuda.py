"""Batch-1 AWQ int4 GEMV on tensor cores (CUDA, `kernels/cuda/awq_gemv.cu`, built by NVRTC at run time).

The Triton GEMVs (`kernels.awq_gemv`) stream int4 at 0.8-1.6 TB/s on an H200; the CUDA kernel's design is in
the .cu file's header. Its weights are AutoAWQ's, repacked once at load (`repack_awq_for_cuda`):

- `qweight` [N/16 * K/128 * 64, 4] int32: for each 16-row tile and each group of 128 k, two 512-byte blocks
  (k steps 0-3 and 4-7 of 16 k) of one 16-byte vector per lane. Lane l (g = l // 4, c = l % 4) holds, for its
  k step t, the word whose nibbles p = r8 + 2 * k8 + 4 * k1 are q[16 j + g + 8 r8, 128 G + 16 t + 2 c + 8 k8 + k1]:
  the mma's A-fragment elements in the order one LOP3 per register pair decodes (`LAYOUT_NIBBLES`).
- `scale_zero` [K/128, N] int32: the scale's 16 bits, and above them MAGIC + zero in the same 16-bit type.

Same size as AutoAWQ's tensors plus 1.5 bytes per group and row. Requirements: group size 128, N % 16 == 0,
bf16 or fp16 activations, an sm_80+ GPU with NVRTC (`kernels.cuda_rtc`).
"""

from __future__ import annotations

import ctypes
import functools
import os
from typing import NamedTuple

import torch

from kernels import cuda_rtc
from kernels._common import check_vectors

# Launch the GEMV as a programmatic dependent launch on sm_90+ (`AwqCudaConfig.pdl`): its weight requests go out
# while the previous kernel drains. Measured in the engine (`bench/step_ab.py --switch awq-pdl`, H200, 8B,
# 2026-12-05): batch-1 step 2.332 -> 2.277 ms (-2.35 %), logits bit-identical; so on by default.
# TESSERA_AWQ_CUDA_PDL=0 turns it off. Read at each launch, so graphs keep what they captured.
PDL = os.environ.get("TESSERA_AWQ_CUDA_PDL", "1") != "0"

# Projections of the batch-1 layer (`LlamaDecoderLayer.forward_single_row`) whose GEMV lets the next one, a PDL
# launch, start as its own CTAs start instead of after its K loop (`trigger_dependents`): the next GEMV's CTAs take
# the SM room this one leaves or frees (o and down fill less than one wave; gate_up's last wave retires CTA by CTA)
# and request their first weights while this one streams. The dependent still waits for this whole grid before it
# reads x: the same bits. Measured (`bench/step_ab.py --switch awq-early-trigger`, H100, 8B, 640 tokens, 2026-12-06):
# step 2.480 -> 2.382 ms (-3.97 %) with all three, -1.04 % with o and down only. Env TESSERA_AWQ_EARLY_TRIGGER:
# comma-separated "o", "gate_up", "down"; "none" for none. Read at each forward, so graphs keep what they captured.
EARLY_TRIGGER_PROJECTIONS = ("o", "gate_up", "down")

# The group loop's mma chains (`AwqCudaConfig.split` / `early_refill`, the .cu file's SPLIT / EARLY_REFILL) per
# shape class of `default_config`: "narrow" (one 16-row tile per CTA: qkv, o), "wide" (N >= 16384, two tiles: gate_up),
# "long" (K > 8192, 16 warps: down); each (accumulators per tile and group, whether a ring slot's next group is
# requested before the group's mmas). H100, 8B (bench/results/2026-12-07-s25-h100/): GEMVs alone (`bench/
# awq_cuda_bench.py --chains`) qkv 8.91 -> 8.37 us at 4 accumulators, o 6.24 -> 6.00 at 4 (6.35 with the early
# refill), gate_up 27.02 -> 26.86 at 2 (slower at 4 or with the early refill: 110-121 registers, 2 CTAs per SM instead
# of 3), down 15.74 -> 15.07 at 2 with the early refill; the engine's step -1.73 % (`bench/step_ab.py --switch
# awq-chains`); AWQ + FP8 head single stream 453.3 -> 460.0-460.8 tok/s. Env TESSERA_AWQ_CUDA_CHAINS: one setting
# for all ("2e") or narrow,wide,long ("4,2,2e"); a setting is 1, 2 or 4, with "e" for the early refill; "1" is the
# kernel before. Read at each launch, so graphs keep what they captured.
CHAIN_CLASSES = ("narrow", "wide", "long")
CHAIN_SPLITS = (1, 2, 4)
Chains = dict[str, tuple[int, bool]]


def chain_class(n: int, k: int) -> str:
    """The shape class of an [n, k] weight whose `default_config` CHAINS picks the mma chains for."""
    return "long" if k > 8192 else "wide" if n >= 16384 else "narrow"


def parse_chains(value: str, env: str = "TESSERA_AWQ_CUDA_CHAINS") -> Chains:
    """'2e' -> every class (2, True); '4,1,2e' -> narrow (4, False), wide (1, False), long (2, True); anything
    else raises ValueError naming `env`."""
    parts = [part.strip() for part in value.split(",")]
    settings = []
    for part in parts:
        split = int(part.removesuffix("e")) if part.removesuffix("e").isdigit() else 0
        if split not in CHAIN_SPLITS or len(parts) not in (1, len(CHAIN_CLASSES)):
            raise ValueError(f"{env}: {value!r}: one setting or three ({', '.join(CHAIN_CLASSES)}), each "
                             f"{', '.join(map(str, CHAIN_SPLITS))} with an optional 'e' (early refill), e.g. 4,1,2e")
        settings.append((split, part.endswith("e")))
    return dict(zip(CHAIN_CLASSES, settings * len(CHAIN_CLASSES) if len(settings) == 1 else settings))


CHAINS = parse_chains(os.environ.get("TESSERA_AWQ_CUDA_CHAINS", "4,2,2e"))


def parse_early_trigger(value: str, env: str = "TESSERA_AWQ_EARLY_TRIGGER") -> frozenset[str]:
    """'o,down' -> {'o', 'down'}; 'none' or '' -> {}; an unknown name raises ValueError naming `env` and the known
    ones."""
    names = frozenset(name.strip() for name in value.split(",") if name.strip()) - {"none"}
    unknown = sorted(names - set(EARLY_TRIGGER_PROJECTIONS))
    if unknown:
        raise ValueError(f"{env}: unknown projection(s) {', '.join(unknown)}; "
                         f"known: {', '.join(EARLY_TRIGGER_PROJECTIONS)} (or none)")
    return names


EARLY_TRIGGER = parse_early_trigger(os.environ.get("TESSERA_AWQ_EARLY_TRIGGER", ",".join(EARLY_TRIGGER_PROJECTIONS)))

GROUP = 128
TILE_N = 16
# nibble p of a word holds (row offset, k offset) LAYOUT_NIBBLES[p] from (16 j + g, 128 G + 16 t + 2 c)
LAYOUT_NIBBLES = tuple(((p & 1) * 8, ((p >> 1) & 1) * 8 + (p >> 2)) for p in range(8))
MAGIC = {torch.bfloat16: 128.0, torch.float16: 1024.0}  # the 16-bit value with a nibble in its low mantissa bits
AWQ_UNPACK_NIBBLE = (0, 4, 1, 5, 2, 6, 3, 7)  # AutoAWQ's logical column c of a pack sits at this nibble
PROLOGUE_NONE, PROLOGUE_RMSNORM, PROLOGUE_SILU_MUL = 0, 1, 2


class AwqCudaConfig(NamedTuple):
    tiles: int = 1  # 16-row tiles per CTA
    warps: int = 8  # warps per CTA, splitting K by groups
    depth: int = 2  # groups of weights in flight per warp
    pdl: bool = False  # programmatic dependent launch (sm_90+): weight loads overlap the previous kernel's tail
    split: int = 1  # independent mma accumulators per tile and group (1, 2, 4): a chain of 8 / split mmas
    early_refill: bool = False  # request a ring slot's next group before the group's mmas (more registers)


class AwqCudaWeights(NamedTuple):
    qweight: torch.Tensor  # [N/16 * K/128 * 64, 4] int32
    scale_zero: torch.Tensor  # [K/128, N] int32
    n: int
    k: int


def supports(n: int, k: int, group_size: int, dtype: torch.dtype, device: torch.device) -> bool:
    """Whether `awq_gemv_cuda` takes this layer (else the Triton GEMV does): the shape and dtype fit, and the
    kernel builds and loads on this device (checked once per device and dtype, see `builds_on`)."""
    return (device.type == "cuda" and group_size == GROUP and k % GROUP == 0 and n % TILE_N == 0
            and dtype in MAGIC and torch.cuda.get_device_capability(device) >= (8, 0) and builds_on(device, dtype))


@functools.cache
def _builds_on(index: int, dtype: torch.dtype) -> bool:
    return cuda_rtc.loads_or_warns("awq_gemv.cu", f"awq_gemv_mma<1, 8, 2, 0, false, false, "
                                   f"{str(dtype == torch.bfloat16).lower()}>", index, "AWQ CUDA GEMV")


def builds_on(device: torch.device, dtype: torch.dtype) -> bool:
    """Compiles (or finds cached) and loads one instance of the kernel on `device`, once per process: a
    failure falls back at load with one warning instead of failing the first decode step."""
    return _builds_on(device.index if device.index is not None else torch.cuda.current_device(), dtype)


def _unpack_awq(packed: torch.Tensor) -> torch.Tensor:
    """[R, C/8] int32 in AutoAWQ's nibble order -> [R, C] uint8 values 0..15."""
    shifts = torch.tensor(AWQ_UNPACK_NIBBLE, dtype=torch.int32, device=packed.device) * 4
    return ((packed.unsqueeze(-1) >> shifts) & 0xF).reshape(packed.shape[0], -1).to(torch.uint8)


def repack_awq_for_cuda(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
                       group_size: int = GROUP, rows_per_chunk: int = 4096) -> AwqCudaWeights:
    """AutoAWQ GEMM tensors (qweight [K, N/8], qzeros [K/G, N/8] int32, scales [K/G, N]) -> the kernel's
    layout (module docstring), on their device. Works through `rows_per_chunk` output rows at a time so a
    large projection needs ~2 bytes per weight of scratch per chunk, not per layer."""
    assert group_size == GROUP, f"group size {group_size}: the CUDA GEMV takes {GROUP}"
    k, n = qweight.shape[0], qweight.shape[1] * 8
    assert k % GROUP == 0 and n % TILE_N == 0, f"[N={n}, K={k}]: N % 16 and K % 128 must be 0"
    assert scales.dtype in MAGIC, f"scales {scales.dtype}: bf16 or fp16"
    groups = k // GROUP
    rows_per_chunk = max(TILE_N, rows_per_chunk // TILE_N * TILE_N)
    words = []
    shifts = (torch.arange(8, device=qweight.device, dtype=torch.int32) * 4)
    for r0 in range(0, n, rows_per_chunk):
        r1 = min(n, r0 + rows_per_chunk)
        q = _unpack_awq(qweight[:, r0 // 8:r1 // 8]).t()  # [rows, K] uint8 (logical row n, column k)
        tiles = (r1 - r0) // TILE_N
        # [j, r8, g, G, h, i, k8, c, k1] with t = 4 h + i
        q = q.reshape(tiles, 2, 8, groups, 2, 4, 2, 4, 2)
        # -> [j, G, h, g, c, i, k1, k8, r8]: lane = 4 g + c, word i, nibble p = 4 k1 + 2 k8 + r8
        q = q.permute(0, 3, 4, 2, 7, 5, 8, 6, 1).reshape(-1, 8).to(torch.int32)
        words.append((q << shifts).sum(dim=1, dtype=torch.int64).to(torch.int32))  # wraps to the same bits
    packed = torch.cat(words).view(-1, 4)
    zeros = _unpack_awq(qzeros).to(torch.float32) + MAGIC[scales.dtype]  # exact in 16 bits (<= 1039)
    zero_bits = zeros.to(scales.dtype).view(torch.int16).to(torch.int32) & 0xFFFF
    scale_bits = scales.view(torch.int16).to(torch.int32) & 0xFFFF
    scale_zero = (scale_bits | (zero_bits << 16)).contiguous()
    return AwqCudaWeights(packed, scale_zero, n, k)


def default_config(n: int, k: int) -> AwqCudaConfig:
    """H200, 8B shapes (`bench/awq_cuda_bench.py`, 2026-12-04, logs in bench/results/*-s14-awq-cuda*): 8 warps
    per CTA, 16 for the long K of down (15.5 vs 18.0 us: more of its 112 groups in flight per CTA, and its
    SiLU prologue shared by more rows); 2 tiles per CTA for the wide gate_up (23.7 vs 26.7 us) and for down;
    depth 2 ties or beats 4 everywhere."""
    split, early = CHAINS[chain_class(n, k)]
    return AwqCudaConfig(tiles=2 if n >= 16384 or k > 8192 else 1, warps=16 if k > 8192 else 8, depth=2, pdl=PDL,
                         split=split, early_refill=early)


def awq_gemv_cuda(x: torch.Tensor, w: AwqCudaWeights, config: AwqCudaConfig | None = None, *,
                 norm_weight: torch.Tensor | None = None, eps: float = 1e-6, silu_mul: bool = False,
                 bias: torch.Tensor | None = None, residual: torch.Tensor | None = None,
                 trigger_dependents: bool = False) -> torch.Tensor:
    """x [1, K] ([1, 2K] with silu_mul) -> [1, N] in x's dtype, with `kernels.awq_gemv.awq_gemv`'s prologues
    (RMSNorm with `norm_weight`, or SiLU(gate) * up) and epilogue (+ bias in fp32, then + residual).
    `trigger_dependents`: a PDL launch after this one may start as its programs start (kernels/pdl.py)."""
    n, k = w.n, w.k
    assert not (silu_mul and norm_weight is not None), "one prologue at a time"
    width = 2 * k if silu_mul else k
    assert x.dim() == 2 and x.shape == (1, width) and x.is_contiguous(), f"x: expected contiguous [1, {width}]"
    assert x.dtype in MAGIC and x.is_cuda, f"x: bf16 / fp16 on a GPU, got {x.dtype} on {x.device}"
    check_vectors(x.dtype, ("norm_weight", norm_weight, k), ("bias", bias, n), ("residual", residual, n))
    # the prologue reads x and gamma in pairs (4 bytes)
    assert x.data_ptr() % 4 == 0 and (norm_weight is None or norm_weight.data_ptr() % 4 == 0), (
        "x / norm_weight: 4-byte aligned")
    cfg = config or default_config(n, k)
    prologue = PROLOGUE_SILU_MUL if silu_mul else PROLOGUE_RMSNORM if norm_weight is not None else PROLOGUE_NONE
    hopper = torch.cuda.get_device_capability(x.device) >= (9, 0)
    pdl, trigger = cfg.pdl and hopper, trigger_dependents and hopper
    expr = (f"awq_gemv_mma<{cfg.tiles}, {cfg.warps}, {cfg.depth}, {prologue}, {str(bias is not None).lower()}, "
            f"{str(residual is not None).lower()}, {str(x.dtype == torch.bfloat16).lower()}, {str(pdl).lower()}, "
            f"{str(trigger).lower()}, {cfg.split}, {str(cfg.early_refill).lower()}>")
    fn = cuda_rtc.get_function("awq_gemv.cu", expr, x.device)
    out = torch.empty((1, n), dtype=x.dtype, device=x.device)
    groups = k // GROUP
    shared = 2 * k + 4 * groups + 4 * cfg.warps * cfg.tiles * TILE_N + 4 * 32
    grid = (-(-n // (TILE_N * cfg.tiles)), 1, 1)
    fn.launch(grid, (32 * cfg.warps, 1, 1), shared,
              [ctypes.c_void_p(x.data_ptr()), cuda_rtc.pointer(norm_weight, x), ctypes.c_void_p(w.qweight.data_ptr()),
               ctypes.c_void_p(w.scale_zero.data_ptr()), cuda_rtc.pointer(bias, x), cuda_rtc.pointer(residual, x),
               ctypes.c_void_p(out.data_ptr()), ctypes.c_int32(n), ctypes.c_int32(k), ctypes.c_float(eps)],
              programmatic=pdl)
    return out


# Rows of x per `awq_gemm_small` launch: up to 4 mmas (8 B columns each) share one decoded weight fragment.
# Env TESSERA_AWQ_CUDA_MAX_GROUPS=1 restores one 8-row group per weight pass (the kernel measured on 2026-12-05).
MAX_GROUPS = max(1, min(4, int(os.environ.get("TESSERA_AWQ_CUDA_MAX_GROUPS") or 4)))
# Accumulators per tile and group in `awq_gemm_small` launches of one column group (2-8 rows), where each weight
# fragment feeds one mma chain (and one x-sum chain); several column groups already give several chains. Per shape
# class, as CHAINS (no early refill in this kernel). H100, 8B (`bench/awq_cuda_bench.py --rows 2,4,8 --small-splits
# 1,2,4`, 2026-12-07, bench/results/2026-12-07-s26-h100/): gate_up 32.40 -> 26.28 us at 2 rows (2 chains), down
# 18.46 -> 13.87 (2), o 6.97 -> 6.60 (4), qkv 7.90 -> 8.04 (4; 8.82 at 2); a layer's four GEMVs -16.6 / -16.3 /
# -12.9 % at 2 / 4 / 8 rows. Env TESSERA_AWQ_CUDA_SMALL_CHAINS: one setting or narrow,wide,long ("1" is the kernel
# before). Read at each launch.
SMALL_CHAINS = parse_chains(os.environ.get("TESSERA_AWQ_CUDA_SMALL_CHAINS", "4,2,2"), "TESSERA_AWQ_CUDA_SMALL_CHAINS")
if any(early for _, early in SMALL_CHAINS.values()):
    raise ValueError("TESSERA_AWQ_CUDA_SMALL_CHAINS: the small-batch kernel has no early refill ('e')")
MAX_COLUMNS = 8 * MAX_GROUPS
SMALL_SHARED_LIMIT = 48 * 1024  # the kernel's static partial sums: warps x tiles x 16 rows x 8 x groups x fp32


def _small_config(cfg: AwqCudaConfig, groups: int) -> AwqCudaConfig:
    """`cfg` with fewer tiles per CTA where its partial sums for `groups` column groups would not fit."""
    while cfg.tiles > 1 and cfg.warps * cfg.tiles * TILE_N * 8 * groups * 4 > SMALL_SHARED_LIMIT:
        cfg = cfg._replace(tiles=cfg.tiles // 2)
    return cfg


def small_instance(n: int, k: int, rows: int, bf16: bool, config: AwqCudaConfig | None = None) -> tuple[str, AwqCudaConfig]:
    """The `awq_gemm_small` instance (and its config) that takes `rows` (1..MAX_COLUMNS) rows of x for an [n, k]
    weight: 8 rows per column group, the mma chains split per SMALL_CHAINS where one group is all there is."""
    groups = -(-rows // 8)
    groups = 4 if groups == 3 else groups  # instances for 1, 2 and 4 groups only
    cfg = _small_config(config or default_config(n, k), groups)
    split = SMALL_CHAINS[chain_class(n, k)][0] if groups == 1 else 1
    return (f"awq_gemm_small<{cfg.tiles}, {cfg.warps}, {cfg.depth}, {str(bf16).lower()}, {groups}, {split}>", cfg)


def awq_gemm_cuda(x: torch.Tensor, w: AwqCudaWeights, config: AwqCudaConfig | None = None) -> torch.Tensor:
    """x [M, K] -> [M, N] in x's dtype, no prologue or epilogue: small-batch decode. Each launch takes up to 32
    rows of x, 8 per mma (its B operand's columns), and streams the weights once, so M rows cost ceil(M / 32)
    weight passes."""
    n, k = w.n, w.k
    assert x.dim() == 2 and x.shape[1] == k and x.stride(1) == 1 and x.shape[0] >= 1, (
        f"x: expected [M, {k}] with contiguous rows, got {tuple(x.shape)}")
    assert x.dtype in MAGIC and x.is_cuda, f"x: bf16 / fp16 on a GPU, got {x.dtype} on {x.device}"
    x = x.contiguous()
    out = torch.empty((x.shape[0], n), dtype=x.dtype, device=x.device)
    for m0 in range(0, x.shape[0], MAX_COLUMNS):
        rows = min(MAX_COLUMNS, x.shape[0] - m0)
        instance, cfg = small_instance(n, k, rows, x.dtype == torch.bfloat16, config)
        fn = cuda_rtc.get_function("awq_gemv.cu", instance, x.device)
        grid = (-(-n // (TILE_N * cfg.tiles)), 1, 1)
        fn.launch(grid, (32 * cfg.warps, 1, 1), 0,
                  [ctypes.c_void_p(x[m0].data_ptr()), ctypes.c_void_p(w.qweight.data_ptr()),
                   ctypes.c_void_p(w.scale_zero.data_ptr()), ctypes.c_void_p(out[m0].data_ptr()),
                   ctypes.c_int32(rows), ctypes.c_int32(n), ctypes.c_int32(k)])
    return out
