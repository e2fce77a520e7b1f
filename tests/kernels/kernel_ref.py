"""Plain-torch references the kernel tests compare against (fp32 math, per request)."""

from __future__ import annotations

import torch


def attention_ref(
    q: torch.Tensor,  # [L, Hq, D] queries at positions prefix_len .. prefix_len + L - 1
    k: torch.Tensor,  # [S, Hkv, D] whole sequence (S = prefix_len + L)
    v: torch.Tensor,  # [S, Hkv, D]
    scaling: float,
) -> torch.Tensor:  # [L, Hq, D] fp32
    num_q, num_q_heads, _ = q.shape
    seq_len, num_kv_heads, _ = k.shape
    group = num_q_heads // num_kv_heads
    qf = q.float().transpose(0, 1)  # [Hq, L, D]
    kf = k.float().repeat_interleave(group, dim=1).transpose(0, 1)  # [Hq, S, D]
    vf = v.float().repeat_interleave(group, dim=1).transpose(0, 1)
    scores = qf @ kf.transpose(1, 2) * scaling  # [Hq, L, S]
    q_pos = torch.arange(seq_len - num_q, seq_len, device=q.device)[:, None]
    mask = torch.arange(seq_len, device=q.device)[None, :] <= q_pos  # [L, S]
    scores = scores.masked_fill(~mask, float("-inf"))
    return (scores.softmax(-1) @ vf).transpose(0, 1)  # [L, Hq, D]


def rmsnorm_ref(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """HF LlamaRMSNorm.forward."""
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(x.dtype)


def rotary_ref(x: torch.Tensor, positions: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """HF apply_rotary_pos_emb with fp32 cos/sin: x [T, H, D], tables [P, D/2]."""
    c = torch.cat([cos, cos], -1)[positions][:, None, :]  # [T, 1, D]
    s = torch.cat([sin, sin], -1)[positions][:, None, :]
    xf = x.float()
    half = x.shape[-1] // 2
    rotated = torch.cat([-xf[..., half:], xf[..., :half]], -1)
    return (xf * c + rotated * s).to(x.dtype)


class PoolBatch:
    """A random KV pool plus a request table for a ragged batch (request slots deliberately shuffled)."""

    def __init__(self, seq_lens: list[int], num_kv_heads: int, head_dim: int, dtype: torch.dtype,
                 device: str = "cpu", seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        total = sum(seq_lens)
        self.num_slots = total + 8
        # Drawn on the target device: GPU tests use pools of hundreds of MB.
        self.k_buffer = torch.randn(self.num_slots, num_kv_heads, head_dim, device=device).to(dtype)
        self.v_buffer = torch.randn(self.num_slots, num_kv_heads, head_dim, device=device).to(dtype)
        max_reqs, max_context = len(seq_lens) + 3, max(seq_lens) + 5
        self.req_to_token = torch.zeros(max_reqs, max_context, dtype=torch.int32)
        rows = torch.randperm(max_reqs, generator=gen)[: len(seq_lens)]
        slots = torch.randperm(self.num_slots - 1, generator=gen)[:total] + 1  # slot 0 is scratch
        off = 0
        for row, n in zip(rows.tolist(), seq_lens):
            self.req_to_token[row, :n] = slots[off : off + n].int()
            off += n
        self.req_to_token = self.req_to_token.to(device)
        self.req_pool_indices = rows.to(device)  # [B] int64
        self.seq_lens = seq_lens

    def slots(self, i: int, n: int | None = None) -> torch.Tensor:
        n = self.seq_lens[i] if n is None else n
        return self.req_to_token[self.req_pool_indices[i], :n].long()
