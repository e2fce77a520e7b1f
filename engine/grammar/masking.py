"""Token masks: xgrammar fills a packed int32 bitmask on the CPU (bit j of word i allows token
32 i + j); the device unpacks it to a boolean [rows, vocab] mask that the sampler applies with
one masked_fill. Only constrained rows are filled; the rest stay all-ones."""

from __future__ import annotations

import torch

_SHIFTS: dict[torch.device, torch.Tensor] = {}


def unpack_bitmask(bitmask: torch.Tensor, vocab_size: int, device: torch.device) -> torch.Tensor:
    """bitmask [B, ceil(V/32)] int32 (CPU) -> allowed [B, V] bool on `device`. Bits past the
    tokenizer's vocabulary (padded LM-head rows) come out 0, so padding is never sampled."""
    shifts = _SHIFTS.get(device)
    if shifts is None:
        shifts = _SHIFTS[device] = torch.arange(32, dtype=torch.int32, device=device)
    words = bitmask.to(device, non_blocking=True)
    bits = (words[:, :, None] >> shifts) & 1  # [B, W, 32]
    return bits.reshape(bits.shape[0], -1)[:, :vocab_size].bool()
