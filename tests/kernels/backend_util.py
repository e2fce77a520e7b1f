"""Hand-built KV pools and ForwardBatches for attention-backend tests (CPU and GPU)."""

from __future__ import annotations

import copy

import torch

from engine.forward_batch import ForwardBatch, ForwardMode
from engine.mem.kv_pool import KVPool

MAX_REQS, MAX_CONTEXT = 8, 4096


class BackendScenario:
    """Requests with cached prefixes already in the pool; `extend_batch` / `decode_batch` add tokens."""

    def __init__(self, prefix_lens: list[int], num_layers: int, num_kv_heads: int, head_dim: int,
                 dtype: torch.dtype, device: str = "cpu", seed: int = 0, extra_tokens: int = 1024, *,
                 kv_dtype: torch.dtype | None = None, k_scales: list[float] | None = None,
                 v_scales: list[float] | None = None, contiguous: bool = False) -> None:
        """`kv_dtype` (default `dtype`) is the pool's storage dtype; scales apply to fp8 pools. `contiguous`
        hands slots out in order (one request's slots then form one run, as on a fresh pool)."""
        torch.manual_seed(seed)
        self.device = device
        capacity = sum(prefix_lens) + extra_tokens
        self.pool = KVPool(capacity, num_layers, num_kv_heads, head_dim, kv_dtype or dtype, device,
                           k_scales=k_scales, v_scales=v_scales)
        self.req_to_token = torch.zeros(MAX_REQS, MAX_CONTEXT, dtype=torch.int32, device=device)
        self.rows = torch.randperm(MAX_REQS)[: len(prefix_lens)].tolist()
        self.lens = list(prefix_lens)
        # Hand out slots in a shuffled order so a request's slots are not contiguous (unless asked).
        all_slots = self.pool.allocator.alloc(capacity)
        self._free = all_slots if contiguous else all_slots[torch.randperm(capacity)]
        for i, n in enumerate(prefix_lens):
            slots = self._alloc(n)
            self.req_to_token[self.rows[i], :n] = slots.to(device, torch.int32)
            for layer in range(num_layers):
                k = torch.randn(n, num_kv_heads, head_dim, device=device)
                self.pool.store(layer, slots.to(device), k, torch.randn_like(k))

    def _alloc(self, n: int) -> torch.Tensor:
        slots, self._free = self._free[:n], self._free[n:]
        assert slots.numel() == n, "scenario pool too small"
        return slots

    def _run_first(self) -> int | None:
        """What the scheduler's host bookkeeping would report for the one request: its first slot when
        its whole sequence is one ascending run (this test helper may read the device table)."""
        slots = self.req_to_token[self.rows[0], : self.lens[0]].to(torch.int64).cpu()
        is_run = bool((slots - slots[0] == torch.arange(slots.numel())).all())
        return int(slots[0]) if is_run else None

    def clone_pool(self) -> KVPool:
        return copy.deepcopy(self.pool)

    def _batch(self, mode: ForwardMode, extend_lens: list[int]) -> ForwardBatch:
        dev = self.device
        prefix_lens = list(self.lens)
        out_loc = []
        for i, n in enumerate(extend_lens):
            slots = self._alloc(n)
            self.req_to_token[self.rows[i], prefix_lens[i] : prefix_lens[i] + n] = slots.to(dev, torch.int32)
            out_loc.append(slots)
            self.lens[i] += n
        num_tokens = sum(extend_lens)
        positions = torch.cat([torch.arange(p, p + n) for p, n in zip(prefix_lens, extend_lens)])
        starts = torch.tensor([0, *extend_lens[:-1]]).cumsum(0)
        ends = torch.tensor(extend_lens).cumsum(0)
        return ForwardBatch(
            forward_mode=mode,
            batch_size=len(extend_lens),
            input_ids=torch.zeros(num_tokens, dtype=torch.int64, device=dev),
            positions=positions.to(dev),
            req_pool_indices=torch.tensor(self.rows, dtype=torch.int64, device=dev),
            seq_lens=torch.tensor(self.lens, dtype=torch.int32, device=dev),
            out_cache_loc=torch.cat(out_loc).to(dev),
            req_to_token=self.req_to_token,
            prefix_lens=torch.tensor(prefix_lens, dtype=torch.int32, device=dev),
            extend_lens=torch.tensor(extend_lens, dtype=torch.int32, device=dev),
            extend_start_loc=starts.to(dev, torch.int32),
            seq_lens_cpu=list(self.lens),
            kv_run_first=self._run_first() if len(extend_lens) == 1 else None,
            prefix_lens_cpu=prefix_lens,
            extend_lens_cpu=list(extend_lens),
            logits_indices=(ends - 1).to(dev),
        )

    def extend_batch(self, extend_lens: list[int]) -> ForwardBatch:
        return self._batch(ForwardMode.EXTEND, extend_lens)

    def decode_batch(self) -> ForwardBatch:
        return self._batch(ForwardMode.DECODE, [1] * len(self.rows))


def qkv_for(num_tokens: int, num_q_heads: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype,
            device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v [T, H * D] as column slices of one fused projection output (strided rows)."""
    sizes = [num_q_heads * head_dim, num_kv_heads * head_dim, num_kv_heads * head_dim]
    qkv = torch.randn(num_tokens, sum(sizes), device=device).to(dtype)
    q, k, v = qkv.split(sizes, dim=1)
    return q, k, v
