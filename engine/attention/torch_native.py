"""Reference attention backend in plain torch: per request, gather the sequence's K/V from the pool
through `req_to_token` (dequantized when the pool is fp8) and run causal SDPA for its new tokens.
Every other backend is tested against this one."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.attention.base import AttentionLayerSpec, BaseAttentionBackend
from engine.forward_batch import ForwardBatch


class TorchNativeAttentionBackend(BaseAttentionBackend):
    def forward(self, q, k, v, layer: AttentionLayerSpec, forward_batch: ForwardBatch) -> torch.Tensor:
        fb = forward_batch
        hq, hkv, d = layer.num_q_heads, layer.num_kv_heads, layer.head_dim
        self.kv_pool.store(layer.layer_id, fb.out_cache_loc, k.view(-1, hkv, d), v.view(-1, hkv, d))
        q = q.view(-1, hq, d)
        out = torch.empty_like(q)  # [T, Hq, D]
        # On the CPU, SDPA's rounding for a query row depends on how many queries and keys its request has (the
        # kernel's vector tails; seen on AVX-512 hosts): equal prompt prefixes in one batch (SGLang select's
        # choices) then got logprobs differing in the last bit. Computed in fp64 and rounded once, a row's
        # value no longer depends on its neighbours. GPUs keep their own backends' dtype.
        wide = torch.float64 if q.device.type == "cpu" else None
        req_rows = fb.req_pool_indices.tolist()
        start = 0
        for i, row in enumerate(req_rows):
            seq_len, prefix_len, ext = fb.seq_lens_cpu[i], fb.prefix_lens_cpu[i], fb.extend_lens_cpu[i]
            slots = fb.req_to_token[row, :seq_len].long()
            keys, vals = self.kv_pool.load(layer.layer_id, slots, q.dtype)  # dequantized when fp8
            keys, vals = keys.transpose(0, 1), vals.transpose(0, 1)  # [Hkv, S, D]
            qi = q[start:start + ext].transpose(0, 1)  # [Hq, E, D]
            # query j sits at position prefix_len + j and may see keys 0..prefix_len + j
            key_pos = torch.arange(seq_len, device=q.device)
            q_pos = torch.arange(prefix_len, prefix_len + ext, device=q.device)
            mask = key_pos[None, :] <= q_pos[:, None]  # [E, S]
            if wide is not None:
                qi, keys, vals = qi.to(wide), keys.to(wide), vals.to(wide)
            o = F.scaled_dot_product_attention(qi, keys, vals, attn_mask=mask, scale=layer.scaling,
                                               enable_gqa=hq != hkv)  # [Hq, E, D]
            out[start:start + ext] = o.transpose(0, 1).to(out.dtype)
            start += ext
        return out.view(-1, hq * d)
