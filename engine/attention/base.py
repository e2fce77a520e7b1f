"""The attention-backend interface every backend implements.

A backend owns nothing but per-batch metadata: K/V live in the KV pool (`engine.mem.kv_pool`).
`forward` first stores the new tokens' K/V at `forward_batch.out_cache_loc`, then attends each
query token to its request's whole sequence (cached prefix + new tokens, causal).

Decode CUDA graphs (`engine.cuda_graph_runner`) call two more hooks instead of `init_forward_metadata`:
`init_forward_metadata_capture` before warming up and capturing the graph of one batch size, and
`init_forward_metadata_replay` before every replay. Both get the runner's static batch, whose tensors
keep their addresses for the graph's life.
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

    def init_forward_metadata_capture(self, forward_batch: ForwardBatch) -> None:
        """Before the decode graph of `forward_batch.batch_size` rows is warmed up and captured over
        the runner's static batch (every row padding). Whatever the captured kernels read must be
        allocated by now or during the warm-up forward, never inside the capture."""
        self.init_forward_metadata(forward_batch)

    def init_forward_metadata_replay(self, forward_batch: ForwardBatch, seq_lens_cpu: list[int]) -> None:
        """Before each replay of the graph of `forward_batch.batch_size` rows, after the runner filled
        its static batch. `seq_lens_cpu` holds the host lengths of the real rows, the first
        `len(seq_lens_cpu)`; the rows after them are padding (seq_len 0 on the device, K/V written to
        scratch slot 0, outputs discarded). Must not wait on the device. The default does nothing:
        right for a backend whose captured metadata depends on the batch size alone (triton)."""

    def write_new_kv(
        self,
        q: torch.Tensor,  # [T, Hq * D]
        k: torch.Tensor,  # [T, Hkv * D]
        v: torch.Tensor,  # [T, Hkv * D]
        layer: AttentionLayerSpec,
        forward_batch: ForwardBatch,
        rotary: tuple | None,  # (positions [T], RopeCache) when the model left rotary to the backend
        rotate_k_in_place: bool,  # the caller reads the new tokens' k from `k` afterwards, not the pool
    ) -> tuple[torch.Tensor, ...]:  # q3 [T, Hq, D], k3, v3 [T, Hkv, D] (views), k_buffer, v_buffer [N, Hkv, D]
        """Stores the new tokens' K/V in the pool at `out_cache_loc` (quantized with the layer's scales
        when the pool is fp8). With `rotary`, one Triton launch
        rotates q (in place) and k and stores them (`rotary_kv_store`), instead of a rotary launch in the
        model plus a store here. Views, not copies: q/k/v usually slice one fused projection."""
        from kernels import rotary_kv_store, store_kv

        num_tokens = q.shape[0]
        q3 = q.view(num_tokens, layer.num_q_heads, layer.head_dim)
        k3 = k.view(num_tokens, layer.num_kv_heads, layer.head_dim)
        v3 = v.view(num_tokens, layer.num_kv_heads, layer.head_dim)
        k_buffer, v_buffer = self.kv_pool.get_kv(layer.layer_id)
        k_scale, v_scale = self.kv_pool.scales(layer.layer_id)  # an fp8 pool stores x / scale
        if rotary is None:
            store_kv(k_buffer, v_buffer, forward_batch.out_cache_loc, k3, v3, k_scale, v_scale)
        else:
            positions, rope_cache = rotary
            rotary_kv_store(q3, k3, v3, k_buffer, v_buffer, positions, forward_batch.out_cache_loc, rope_cache,
                            write_k=rotate_k_in_place, k_scale=k_scale, v_scale=v_scale)
        return q3, k3, v3, k_buffer, v_buffer

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
