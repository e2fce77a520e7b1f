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

    def __init__(self, vocab_size: int, hidden_size: int, tp: TPContext) -> None:
        super().__init__(vocab_size, hidden_size, tp)
        # `quantize_fp8` fills these: e4m3 [shard_size, H] and one fp32 scale per vocabulary row.
        self.register_buffer("fp8_weight", None, persistent=False)
        self.register_buffer("fp8_scale", None, persistent=False)

    @torch.no_grad()
    def quantize_fp8(self, tied: bool) -> None:
        """--lm-head-quantization fp8: the LM head is the largest single weight (1.05 GB of Llama-3.1-8B's
        16 GB in bf16, ~0.33 ms of an H100's batch-1 step), and quantized models keep it 16-bit. Per-row
        (output channel) scales, as `--quantization fp8` quantizes the layers. Untied, the 16-bit copy is freed
        (an empty tensor of the model dtype stays as `weight`); tied, the embedding still reads it."""
        from kernels.fp8_quant import quantize_weight_per_channel

        q, scale = quantize_weight_per_channel(self.weight.data)
        self.fp8_weight, self.fp8_scale = q, scale
        if not tied:
            self.weight = nn.Parameter(self.weight.data.new_empty(0, self.weight.shape[1]), requires_grad=False)

    def compute_logits(self, hidden: torch.Tensor, single_row_gemv: bool = False) -> torch.Tensor:
        """`single_row_gemv`: a [1, H] row goes through the Triton GEMV, which streams this (largest)
        weight at ~3.15 TB/s on an H100 where cuBLAS's batch-1 kernel reached ~2.6 (bench/gemv_bench.py).
        An FP8 head goes through `engine.quant.fp8.fp8_apply` (weight-only GEMV for one row, `_scaled_mm` with
        per-token activation scales for more, the dequantized reference on the CPU)."""
        if self.fp8_weight is not None:
            from engine.quant.fp8 import fp8_apply

            logits = fp8_apply(hidden, self.fp8_weight, self.fp8_scale, None, None)
        elif single_row_gemv and hidden.shape[0] == 1:
            from kernels.gemv import fused_gemv

            logits = fused_gemv(hidden, self.weight)  # [1, shard_size]
        else:
            logits = F.linear(hidden, self.weight)  # [N, shard_size]
        logits = self.tp.all_gather_last_dim(logits)  # [N, shard_size * tp]
        return logits[:, : self.vocab_size]
