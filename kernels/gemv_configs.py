"""Tile choice for the batch-1 GEMV (`kernels.gemv`): a per-device table of swept winners, H100 defaults otherwise.

Tiles that stream weights best differ between GPUs of the same architecture: the H200 has the H100's
132 SMs but ~1.4x its memory bandwidth, so the small projections (qkv, o: few MiB per program wave)
become ramp-up / tail bound there, and a split-K tile may win where one program per row block won on
the H100. `bench/gemv_bench.py --sweep` times candidates per projection shape on one device and writes
`gemv_tuned.json`, whose one entry is pasted into `TUNED` below (the JSON is a valid Python literal).

Keys: `device_key` = torch's device name and SM count (an H100 PCIe and an H100 SXM differ in both);
then "NxK" of the weight. The table holds 16-bit tiles (the fused path runs only for fp16/bf16);
a shape or device not in it gets `default_config(k)`.

`TESSERA_GEMV_TUNED=<path to a sweep's gemv_tuned.json>` overlays that file on `TUNED` (read once per
process, inherited by the engine's rank processes): a device session can sweep and then measure the
engine with the winners in the same call, before anything is pasted.
"""

from __future__ import annotations

import functools
import json
import os
from typing import NamedTuple

import torch

from kernels._common import next_pow2


class GemvConfig(NamedTuple):
    block_n: int  # output rows per program
    block_k: int  # K-chunk per loop iteration
    num_warps: int
    num_stages: int = 1  # Triton's software pipelining of the K loop
    split_k: int = 1  # > 1: K is cut into this many slices, one program each, reduced by the last to finish


# Pasted from `bench/gemv_bench.py --sweep` output (gemv_tuned.json). Entries: device_key -> "NxK" -> config.
TUNED: dict[str, dict[str, dict[str, int]]] = {
    # H200 sweep 2026-12-02 (bench/gemv_bench.py --sweep): split-K lost to narrower one-pass tiles on every
    # shape; qkv +6.7 %, o +13.9 %, gate_up +7.6 %; single stream 224.0 -> 238.9 tok/s.
    "NVIDIA H200/132sm": {
        "6144x4096": {"block_n": 16, "block_k": 512, "num_warps": 8, "num_stages": 1, "split_k": 1},
        "4096x4096": {"block_n": 4, "block_k": 1024, "num_warps": 4, "num_stages": 1, "split_k": 1},
        "28672x4096": {"block_n": 8, "block_k": 512, "num_warps": 4, "num_stages": 3, "split_k": 1},
        "4096x14336": {"block_n": 8, "block_k": 512, "num_warps": 4, "num_stages": 3, "split_k": 1},
    },
}


def default_config(k: int) -> GemvConfig:
    """Tiles from the H100 sweep in bench/gemv_bench.py (2026-11-22), which picked the same winners for
    every Llama-3.1-8B projection: 8 output rows per program; whole 1 KiB-element K-chunks with 8 warps
    for K up to 8192; for the long down projection (K 14336), 512-element chunks with 4 warps and
    3-stage pipelining (every N from 4096 to 128256 took the same tile). Smaller blocks leave too few
    bytes in flight, larger ones too few programs."""
    if k <= 8192:
        return GemvConfig(block_n=8, block_k=min(next_pow2(k), 1024), num_warps=8, num_stages=1)
    return GemvConfig(block_n=8, block_k=512, num_warps=4, num_stages=3)


def shape_key(n: int, k: int) -> str:
    return f"{n}x{k}"


@functools.cache
def device_key(device_index: int) -> str:
    props = torch.cuda.get_device_properties(device_index)
    return f"{props.name}/{props.multi_processor_count}sm"


def validate(cfg: GemvConfig) -> GemvConfig:
    """Rejects tiles the kernels cannot run (a bad table entry fails loudly at its first use)."""
    for field in ("block_n", "block_k"):
        value = getattr(cfg, field)
        assert value >= 1 and value & (value - 1) == 0, f"{cfg}: {field} must be a power of 2"
    assert cfg.num_warps in (1, 2, 4, 8, 16), f"{cfg}: num_warps must be a power of 2 up to 16"
    assert cfg.num_stages >= 1 and cfg.split_k >= 1, f"{cfg}: num_stages and split_k must be >= 1"
    return cfg


TUNED_ENV = "TESSERA_GEMV_TUNED"


@functools.cache
def _tuned(device_name: str, n: int, k: int) -> GemvConfig | None:
    entries = dict(TUNED.get(device_name, {}))
    if os.environ.get(TUNED_ENV):
        with open(os.environ[TUNED_ENV]) as f:
            entries.update(json.load(f).get(device_name, {}))
    entry = entries.get(shape_key(n, k))
    return validate(GemvConfig(**entry)) if entry is not None else None


def pick_config(device: torch.device, n: int, k: int) -> GemvConfig:
    """This device's swept tile for an [n, k] weight, else the H100-derived default."""
    if device.type != "cuda":
        return default_config(k)
    index = device.index if device.index is not None else torch.cuda.current_device()
    return _tuned(device_key(index), n, k) or default_config(k)
