"""Vocab-parallel embedding and LM head: each rank owns a contiguous slice of the (padded) vocabulary."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.distributed.parallel_state import TPContext


class VocabParallelEmbedding(nn.Module):
    def __init__(self, vocab_size: int, hidden_size: int, tp: TPContext) -> None:
        super().__init__()
        self.tp = tp
        self.vocab_size = vocab_size
        self.shard_size = -(-vocab_size // tp.size)  # padded so every rank holds the same rows
        self.start = tp.rank * self.shard_size
        self.weight = nn.Parameter(torch.empty(self.shard_size, hidden_size), requires_grad=False)
        self.weight.weight_loader = self._load

    def _load(self, param: nn.Parameter, loaded: torch.Tensor, shard_id: int | None = None) -> None:
        if loaded.shape[0] != self.vocab_size or loaded.shape[1] != param.shape[1]:
            raise ValueError(f"embedding shape {tuple(loaded.shape)} != ({self.vocab_size}, {param.shape[1]})")
        rows = loaded[self.start:self.start + self.shard_size]
        param.data.zero_()
        param.data[: rows.shape[0]].copy_(rows)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.tp.size == 1:
            return F.embedding(input_ids, self.weight)
        local = input_ids - self.start
        outside = (local < 0) | (local >= self.shard_size)
        out = F.embedding(local.masked_fill(outside, 0), self.weight)  # [T, H]
        out.masked_fill_(outside.unsqueeze(-1), 0.0)
        return self.tp.all_reduce(out)


class ParallelLMHead(VocabParallelEmbedding):
    """logits = hidden @ W^T, vocab-sharded; ranks gather the full row so every rank samples alike."""

    def compute_logits(self, hidden: torch.Tensor, single_row_gemv: bool = False) -> torch.Tensor:
        """`single_row_gemv`: a [1, H] row goes through the Triton GEMV, which streams this (largest)
        weight at ~3.15 TB/s on an H100 where cuBLAS's batch-1 kernel reached ~2.6 (bench/gemv_bench.py)."""
        if single_row_gemv and hidden.shape[0] == 1:
            from kernels.gemv import fused_gemv

            logits = fused_gemv(hidden, self.weight)  # [1, shard_size]
        else:
            logits = F.linear(hidden, self.weight)  # [N, shard_size]
        logits = self.tp.all_gather_last_dim(logits)  # [N, shard_size * tp]
        return logits[:, : self.vocab_size]
