"""Swept tiles for the quantized batch-1 GEMVs (`kernels.fp8_gemv`, `kernels.awq_gemm.awq_gemv`), the
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

# device_key -> "NxK" -> Fp8GemvConfig fields. Empty until an H200 sweep is pasted.
FP8_TUNED: dict[str, dict[str, dict[str, int]]] = {}
# device_key -> "NxK" -> AwqGemvConfig fields.
AWQ_TUNED: dict[str, dict[str, dict[str, int]]] = {}

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
