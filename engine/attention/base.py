"""The attention-backend interface every backend implements.

A backend owns nothing but per-batch metadata: K/V live in the KV pool (`engine.mem.kv_pool`).
`forward` first stores the new tokens' K/V at `forward_batch.out_cache_loc`, then attends each
query token to its request's whole sequence (cached prefix + new tokens, causal).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from engine.forward_batch import ForwardBatch


@dataclass(frozen=True)
class AttentionLayerSpec:
    layer_id: int
    num_q_heads: int  # per TP rank
    num_kv_heads: int  # per TP rank
    head_dim: int
    scaling: float


class BaseAttentionBackend(ABC):
    def __init__(self, kv_pool) -> None:
        self.kv_pool = kv_pool

    def init_forward_metadata(self, forward_batch: ForwardBatch) -> None:
        """Called once per batch before the layers run (plan/index building goes here)."""

    @abstractmethod
    def forward(
        self,
        q: torch.Tensor,  # [num_tokens, num_q_heads * head_dim]
        k: torch.Tensor,  # [num_tokens, num_kv_heads * head_dim]
        v: torch.Tensor,  # [num_tokens, num_kv_heads * head_dim]
        layer: AttentionLayerSpec,
        forward_batch: ForwardBatch,
    ) -> torch.Tensor:  # [num_tokens, num_q_heads * head_dim]
        ...
