"""Rotary position embedding (rotate-half style, as HF Llama/Qwen), incl. rope_scaling variants.

The inverse frequencies come from transformers' own rope initialisers, so llama3 / linear /
dynamic / yarn scaling match the reference exactly; the cos/sin table is built once.

CPU keeps HF's expression (`x * cos + rotate_half(x) * sin` in the model dtype, bit-exact with HF).
CUDA rotates q and k in place with the Triton kernel over half-width fp32 tables: one launch
instead of ~10, and the tables are half the size (they matter at 128k-position contexts).
"""

from __future__ import annotations

import torch
from torch import nn


def compute_inv_freq(hf_config, head_dim: int) -> tuple[torch.Tensor, float]:
    """(inv_freq [head_dim/2] fp32, attention_scaling) for this config, via transformers."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    params = getattr(hf_config, "rope_parameters", None) or getattr(hf_config, "rope_scaling", None) or {}
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type == "default":
        base = params.get("rope_theta") or getattr(hf_config, "rope_theta", None) or 10000.0
        inv = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim))
        return inv, 1.0
    if rope_type not in ROPE_INIT_FUNCTIONS:
        raise ValueError(f"rope type {rope_type!r} is not supported")
    inv, scaling = ROPE_INIT_FUNCTIONS[rope_type](hf_config, "cpu")
    return inv.float().cpu(), float(scaling)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class RotaryEmbedding(nn.Module):
    def __init__(self, hf_config, head_dim: int, max_positions: int) -> None:
        super().__init__()
        inv_freq, scaling = compute_inv_freq(hf_config, head_dim)
        t = torch.arange(max_positions, dtype=torch.float32)  # on the model's device (loader's context)
        freqs = t[:, None] * inv_freq.to(t.device)[None, :]  # [P, D/2]
        if t.is_cuda:
            self.register_buffer("cos_half", (freqs.cos() * scaling).contiguous(), persistent=False)  # [P, D/2]
            self.register_buffer("sin_half", (freqs.sin() * scaling).contiguous(), persistent=False)
            self.has_half_tables = True
        else:
            emb = torch.cat((freqs, freqs), dim=-1)  # [P, D]
            self.register_buffer("cos_cache", emb.cos() * scaling, persistent=False)
            self.register_buffer("sin_cache", emb.sin() * scaling, persistent=False)
            self.has_half_tables = False

    def rope_cache(self):
        """The half-width fp32 tables as a `kernels.RopeCache` (CUDA only), for backends that fuse rotary
        into their KV store."""
        from kernels import RopeCache

        assert self.has_half_tables, "half-width tables exist on CUDA only"
        return RopeCache(self.cos_half, self.sin_half)

    def forward(self, positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor):
        """q [T, Hq, D], k [T, Hkv, D] -> rotated (CPU: copies; CUDA: the same tensors, rotated in place)."""
        if q.is_cuda:
            from kernels import RopeCache, apply_rotary

            apply_rotary(q, k, positions, RopeCache(self.cos_half, self.sin_half))
            return q, k
        cos = self.cos_cache[positions].unsqueeze(1).to(q.dtype)  # [T, 1, D]
        sin = self.sin_cache[positions].unsqueeze(1).to(q.dtype)
        return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
