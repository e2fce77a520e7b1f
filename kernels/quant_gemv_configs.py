"""Swept tiles for the quantized batch-1 GEMVs (`kernels.fp8_gemv`, `kernels.awq_gemv.awq_gemv`), the
FP8 / AWQ counterpart of `kernels.gemv_configs.TUNED`.

Each kernel has a table `{device_key: {"NxK": config fields}}` here (pasted from a sweep) and an env
var naming a sweep's JSON file (same format) that overlays it, read once per process and inherited by
the engine's rank processes, so one device call can sweep and then run the engine with the winners:

- FP8: `FP8_TUNED`, `TESSERA_FP8_GEMV_TUNED` (written by `bench/quant_gemv_sweep.py --kind fp8`);
- AWQ: `AWQ_TUNED`, `TESSERA_AWQ_GEMV_TUNED` (`--kind awq`); the AWQ key is "NxK" of the logical
  [N out, K in] weight (the packed tensor is [K, N/8]).

A shape or device missing from both falls back to the kernel's own default tiles.
"""

from __future__ import annotations

import functools
import json
import os

import torch

from kernels.gemv_configs import device_key, shape_key

FP8_TUNED_ENV = "TESSERA_FP8_GEMV_TUNED"
AWQ_TUNED_ENV = "TESSERA_AWQ_GEMV_TUNED"

# device_key -> "NxK" -> Fp8GemvConfig fields: the lean loop's tiles, the winners on both Hopper devices measured.
# H200: `bench/device_session.sh fp8-lean` (2026-12-03, ninth session): the lean loop won every shape (32-layer
# projections 72.7 -> 67.2 us per layer; batch-1 decode 339.7 -> 345.4 tok/s, 8B shape); down moved to 8 rows /
# 3 chunks per iteration without split-K in the tenth session (its sweeps twice: 18.6 us vs 18.9 plus the split-K
# reduce launch). The tiles before it (2026-12-02): qkv 32/512/8 one stage, o 4/1024/4 two stages, gate_up 64/256/4
# three stages on tensor cores, down 16/512/4 three stages.
# H100 SXM: `bench/quant_gemv_sweep.py --kind fp8` (2026-12-05, sixteenth session, raw sweep in
# bench/results/2026-12-05-h100-s16-call1-*) chose the same tiles for every shape; the default tiles this device fell
# back to before took 104.7 us per layer, these 85.1 (2.1-2.8 TB/s of e4m3): batch-1 decode 1.66x bf16.
_FP8_LEAN_8B = {
    "6144x4096": {"block_n": 8, "block_k": 1024, "num_warps": 4, "num_stages": 1, "split_k": 1, "lean": 2},
    "4096x4096": {"block_n": 8, "block_k": 1024, "num_warps": 4, "num_stages": 1, "split_k": 1, "lean": 4},
    "28672x4096": {"block_n": 8, "block_k": 1024, "num_warps": 4, "num_stages": 1, "split_k": 1, "lean": 4},
    "4096x14336": {"block_n": 8, "block_k": 1024, "num_warps": 4, "num_stages": 1, "split_k": 1, "lean": 3},
    # The LM head (--lm-head-quantization fp8): `quant_gemv_sweep.py --kind fp8 --ops lm_head`, 2026-12-06, the same
    # winner on both devices: H100 215.5 -> 168.1 us (3.12 TB/s), H200 207.2 -> 124.3 us (4.23 TB/s) against the
    # default tiles (bench/results/2026-12-06-s18a-h100-*, 2026-12-06-s18c-h200-*).
    "128256x4096": {"block_n": 16, "block_k": 1024, "num_warps": 4, "num_stages": 1, "split_k": 1, "lean": 1},
}
# The H100 sends fewer chunks before the PDL wait (`prewait`) where a launch's early requests queue in DRAM ahead of the
# kernel it waits for: o (launched by the early-KV attention's trigger) 3 of its 4, so the attention's post-wait loads
# do not wait behind all of o's 16.8 MB; qkv (launched by down's trigger while down streams) 1 of its 2; down
# (launched by gate_up's) 2 of its 3. `bash bench/device_session.sh s28a s28b s28d` (2026-12-07, twenty-eighth
# session, FP8 + FP8 head): step span 3,001 -> 2,975 us with o's 3 (attention advance 9.63 -> 8.49 us, o 3.48 ->
# 3.78; 1 and 2 lost: o waited longer than the attention gained), 2,978 -> 2,946 with qkv's 1 as well (down 20.79 ->
# 19.83, attention 8.50 -> 7.58, qkv 9.91 -> 10.81), down's 2 alone 2,954 (gate_up 44.45 -> 43.22); single stream
# 327.2 / 327.3 (all chunks) -> 330.8 / 330.4 (o) -> 331.1-331.5 (o, qkv) -> 333.4 / 333.4 (o, qkv, down) tok/s, bf16
# 186.1. Not measured on the H200, which keeps every chunk before the wait.
_FP8_LEAN_8B_H100 = {
    **_FP8_LEAN_8B,
    "4096x4096": {**_FP8_LEAN_8B["4096x4096"], "prewait": 3},
    "6144x4096": {**_FP8_LEAN_8B["6144x4096"], "prewait": 1},
    "4096x14336": {**_FP8_LEAN_8B["4096x14336"], "prewait": 2},
}
FP8_TUNED: dict[str, dict[str, dict[str, int]]] = {
    "NVIDIA H200/132sm": _FP8_LEAN_8B,
    "NVIDIA H100 80GB HBM3/132sm": _FP8_LEAN_8B_H100,
}
# device_key -> "NxK" -> AwqGemvConfig fields. H200, `bench/device_session.sh awq-lean` (2026-12-03, eighth
# session): the lean nibble-plane loop won every shape (layer projections 121.0 us with the default tiles ->
# 82.9 us swept; the seventh session's plane tiles gave 115.2); batch-1 decode on the fused path 232.0 -> 290.1
# tok/s, 8B shape.
AWQ_TUNED: dict[str, dict[str, dict[str, int | None]]] = {
    "NVIDIA H200/132sm": {
        "6144x4096": {"block_n": 256, "block_k": 16, "num_warps": 4, "split_k": None, "num_stages": 1, "use_gemm": 0,
                      "planes": 1, "lean": 1},
        "4096x4096": {"block_n": 128, "block_k": 32, "num_warps": 4, "split_k": None, "num_stages": 1, "use_gemm": 0,
                      "planes": 1, "lean": 1},
        "28672x4096": {"block_n": 256, "block_k": 16, "num_warps": 4, "split_k": None, "num_stages": 1, "use_gemm": 0,
                       "planes": 1, "lean": 1},
        "4096x14336": {"block_n": 128, "block_k": 32, "num_warps": 4, "split_k": None, "num_stages": 1, "use_gemm": 0,
                       "planes": 1, "lean": 1},
    },
}

_TABLES = {FP8_TUNED_ENV: FP8_TUNED, AWQ_TUNED_ENV: AWQ_TUNED}


@functools.cache
def _entries(env_var: str, device_name: str) -> dict[str, dict[str, int]]:
    entries = dict(_TABLES[env_var].get(device_name, {}))
    path = os.environ.get(env_var)
    if path:
        # A missing or broken overlay (e.g. its sweep failed) must not stop the engine: defaults apply.
        try:
            with open(path) as f:
                entries.update(json.load(f).get(device_name, {}))
        except (OSError, ValueError) as exc:
            print(f"{env_var}={path}: ignored ({exc})")
    return entries


def tuned_entry(env_var: str, device: torch.device, n: int, k: int) -> dict[str, int] | None:
    """The swept config fields for an [n, k] weight on this device, or None (use the default)."""
    if device.type != "cuda":
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    return _entries(env_var, device_key(index)).get(shape_key(n, k))
