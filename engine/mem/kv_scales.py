"""Per-layer FP8 KV-cache scales from a checkpoint, for `--kv-cache-dtype fp8_e4m3`.

The pool stores `k / k_scale` and `v / v_scale` (per-tensor, one pair per layer). Checkpoints that
were calibrated for an FP8 KV cache carry the scales as scalar tensors; the names in use (the ones
vLLM and SGLang remap onto their attention layers) are, under `model.layers.<i>.self_attn.`:
  - `k_scale` / `v_scale` (also `attn.k_scale`, `k_proj.k_scale` / `v_proj.v_scale`: ModelOpt, Quark),
  - `k_proj.output_scale` / `v_proj.output_scale` (compressed-tensors),
  - `kv_scale` (older checkpoints: one scale for both K and V).
Without them both engines use 1.0 (and warn): fine for models whose K/V stay well inside e4m3's
+-448, which is the usual case after RMSNorm'd projections. We do the same. A scale tensor with more
than one element (per head) is reduced to its max, so nothing saturates that would not have before.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from safetensors import safe_open

logger = logging.getLogger(__name__)

_LAYER_SCALE = re.compile(r"(?:^|\.)layers\.(\d+)\.self_attn\.(?:attn\.)?(k_proj\.|v_proj\.)?(k_scale|v_scale|kv_scale|output_scale)$")


@dataclass(frozen=True)
class KVScales:
    k: list[float]  # one per layer
    v: list[float]
    num_found: int  # scale tensors read from the checkpoint


def scale_kind(name: str) -> tuple[int, str] | None:
    """(layer, "k" | "v" | "kv") when `name` is a KV-cache scale tensor, else None."""
    m = _LAYER_SCALE.search(name)
    if m is None:
        return None
    layer, proj, leaf = int(m.group(1)), m.group(2), m.group(3)
    if leaf == "output_scale":  # compressed-tensors: the k/v projection's output scale
        return (layer, proj[0]) if proj else None
    if leaf == "kv_scale":
        return None if proj else (layer, "kv")
    kind = leaf[0]
    if proj and proj[0] != kind:  # k_proj.v_scale makes no sense
        return None
    return layer, kind


def read_kv_scales(files: list[str], num_layers: int) -> KVScales | None:
    """The checkpoint's KV scales (layers without one get 1.0), or None when it has none at all."""
    k: dict[int, float] = {}
    v: dict[int, float] = {}
    kv: dict[int, float] = {}
    found = 0
    for path in files:
        with safe_open(path, framework="pt", device="cpu") as f:
            for name in f.keys():
                kind = scale_kind(name)
                if kind is None or kind[0] >= num_layers:
                    continue
                layer, which = kind
                value = float(f.get_tensor(name).float().max())
                if not value > 0:  # zero, negative or NaN: unusable, keep the default
                    logger.warning("ignoring KV scale %s = %s (must be positive)", name, value)
                    continue
                {"k": k, "v": v, "kv": kv}[which][layer] = value
                found += 1
    if not found:
        return None
    k_scales = [k.get(i, kv.get(i, 1.0)) for i in range(num_layers)]
    v_scales = [v.get(i, kv.get(i, 1.0)) for i in range(num_layers)]
    missing = [i for i in range(num_layers) if i not in k and i not in kv or i not in v and i not in kv]
    if missing:
        logger.warning("checkpoint has KV scales for some layers only; layers %s use 1.0", missing[:8])
    return KVScales(k_scales, v_scales, found)
