"""Attention backend on our Triton kernels (`kernels/`): store K/V with `store_kv` (or, when the model
hands over its rotary tables, rotate q/k and store K/V in one launch with `rotary_kv_store`), then
the split-KV decode kernel in DECODE mode or the one-pass prefix + causal extend kernel in EXTEND mode.
A decode step with rotary tables does the rotary and the store inside the decode kernel (`DecodeRotary`).
Decode runs single-pass (no stage-2 launch): the backend owns the zeroed per-(request, kv head)
counters that the kernel's last-arriving split uses to merge the others.

Per-batch metadata is only host integers (the grid of the extend kernel, the split count of the
decode kernel), so a decode step never syncs with the device. The decode split count depends on the
batch size alone, which keeps a captured CUDA graph valid for every replay at that size.
"""

from __future__ import annotations

import os

import torch

from engine.attention.base import AttentionLayerSpec, BaseAttentionBackend
from engine.forward_batch import ForwardBatch
from kernels import RopeCache, decode_attention, extend_attention
from kernels.decode_attention import default_max_kv_splits
from kernels.decode_rotary import DecodeRotary

# A decode step rotates q / k and stores K/V inside the decode kernel (one launch per layer, not two).
# TESSERA_FUSED_DECODE_ROTARY=0 restores the separate `rotary_kv_store` launch; read at each step (graphs keep
# what they captured), so `bench/step_ab.py --switch fused-rotary` can compare the two on one runner.
FUSED_DECODE_ROTARY = os.environ.get("TESSERA_FUSED_DECODE_ROTARY", "1") != "0"

# Decode batches up to this size (x kv heads) take the single-pass decode kernel; larger ones the
# two-stage kernel. 4096 x 8 kv heads is 128 KiB of int32 counters.
MAX_SINGLE_PASS_BATCH = 4096


class TritonAttentionBackend(BaseAttentionBackend):
    """`max_kv_splits` fixes the decode split count; None picks one per batch size from the SM count."""

    # The model may pass `rotary=(positions, RopeCache)` to `forward` and skip its own rotary launch.
    fuses_rotary = True

    def __init__(self, kv_pool, max_kv_splits: int | None = None) -> None:
        super().__init__(kv_pool)
        self.max_kv_splits = max_kv_splits
        # Allocated once here, outside any CUDA-graph capture; the kernel leaves them zero after each use.
        self._decode_counters = torch.zeros(MAX_SINGLE_PASS_BATCH * kv_pool.num_kv_heads, dtype=torch.int32,
                                            device=kv_pool.device)
        self._batch: ForwardBatch | None = None  # the batch the metadata below belongs to
        self._num_kv_splits = 1
        self._max_extend_len = 0

    def init_forward_metadata(self, forward_batch: ForwardBatch) -> None:
        fb = forward_batch
        self._batch = fb
        if fb.forward_mode.is_decode:
            self._num_kv_splits = self.max_kv_splits or default_max_kv_splits(
                fb.batch_size, self.kv_pool.num_kv_heads, fb.seq_lens.device)
        else:
            self._max_extend_len = max(fb.extend_lens_cpu, default=0)

    def forward(
        self,
        q: torch.Tensor,  # [T, Hq * D]
        k: torch.Tensor,  # [T, Hkv * D]
        v: torch.Tensor,  # [T, Hkv * D]
        layer: AttentionLayerSpec,
        forward_batch: ForwardBatch,
        rotary: tuple[torch.Tensor, RopeCache] | None = None,  # (positions [T], cos/sin tables): rotate here
    ) -> torch.Tensor:  # [T, Hq * D]
        fb = forward_batch
        if self._batch is not fb:  # a caller that skipped init_forward_metadata still gets a right answer
            self.init_forward_metadata(fb)
        num_tokens = q.shape[0]
        is_decode = fb.forward_mode.is_decode
        decode_rotary = None
        if is_decode and rotary is not None and FUSED_DECODE_ROTARY:
            # The decode kernel rotates q / k and stores this step's K/V itself (`DecodeRotary`): views only here.
            q3 = q.view(num_tokens, layer.num_q_heads, layer.head_dim)
            k3 = k.view(num_tokens, layer.num_kv_heads, layer.head_dim)
            v3 = v.view(num_tokens, layer.num_kv_heads, layer.head_dim)
            k_buffer, v_buffer = self.kv_pool.get_kv(layer.layer_id)
            decode_rotary = DecodeRotary(k3, v3, rotary[0], fb.out_cache_loc, rotary[1])
        else:
            # Extend attention reads the new tokens' k from k3, so a rotated k must land there too.
            q3, k3, v3, k_buffer, v_buffer = self.write_new_kv(q, k, v, layer, fb, rotary,
                                                               rotate_k_in_place=not is_decode)

        k_scale, v_scale = self.kv_pool.scales(layer.layer_id)  # fp8 pools: folded into the kernels' scales
        if is_decode:
            counters = self._decode_counters if num_tokens <= MAX_SINGLE_PASS_BATCH else None
            out = decode_attention(q3, k_buffer, v_buffer, fb.req_to_token, fb.req_pool_indices, fb.seq_lens,
                                   layer.scaling, k_scale=k_scale, v_scale=v_scale,
                                   max_kv_splits=self._num_kv_splits, counters=counters, rotary=decode_rotary)
        else:
            out = extend_attention(q3, k3, v3, k_buffer, v_buffer, fb.req_to_token, fb.req_pool_indices,
                                   fb.prefix_lens, fb.extend_lens, fb.extend_start_loc, self._max_extend_len,
                                   layer.scaling, k_scale=k_scale, v_scale=v_scale)
        return out.view(num_tokens, layer.num_q_heads * layer.head_dim)
