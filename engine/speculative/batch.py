"""ForwardBatch for explicit token rows: row i appends `tokens[i]` at positions start_pos.. of its
req_to_token row, whose slots must already be written there. Unlike engine.batch_builder (which
reads a Req's fill_ids), the tokens here need not be part of any request yet (drafts).

Short rows run as a DECODE batch of one-token rows (`decode_rows_limit`): token j of a row becomes its
own row at position start_pos + j with sequence length start_pos + j + 1. Every backend writes all
rows' new K/V into the pool before any row attends, so row j sees the K/V of the row's earlier tokens
computed in the same layer: exactly the causal attention of an EXTEND pass over the row. A decode batch
replays CUDA graphs: on an H200 (8B shape) an eager EXTEND verification of 5 tokens cost ~4x a graphed
decode step, which made speculation slower than plain decoding.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from itertools import accumulate

import torch

from engine.forward_batch import ForwardBatch, ForwardMode


@dataclass(frozen=True)
class TokenRow:
    pool_row: int  # row in the ReqToTokenPool
    start_pos: int  # tokens before this have KV already
    tokens: list[int]


EAGER_DECODE_ROWS = 64


def decode_rows_limit(runner) -> int:
    """How many one-token rows a row batch may expand into: what the runner's CUDA graphs hold (beyond
    that an eager EXTEND pass is cheaper than an eager decode of many rows); eager runners (CPU, graphs
    off) use the same rows up to a fixed bound so they compute what a graphed GPU computes."""
    graphs = getattr(runner, "graph_runner", None)
    return graphs.max_bs if graphs is not None else EAGER_DECODE_ROWS


def build_rows_forward_batch(rows: list[TokenRow], req_to_token: torch.Tensor, device: torch.device,
                             all_logits: bool, max_decode_rows: int = 0) -> ForwardBatch:
    """Logits rows: every position of every row (all_logits) or only each row's last position.
    When the rows hold at most `max_decode_rows` tokens in all, multi-token rows are split into one-token
    rows (module docstring), so the batch is a DECODE batch that CUDA graphs can replay; the logits rows
    are the same positions either way."""
    if 1 < sum(len(r.tokens) for r in rows) <= max_decode_rows and any(len(r.tokens) > 1 for r in rows):
        split = [TokenRow(r.pool_row, r.start_pos + j, [t]) for r in rows for j, t in enumerate(r.tokens)]
        fb = build_rows_forward_batch(split, req_to_token, device, all_logits=True)
        if not all_logits:  # the last position of each original row
            ends = torch.tensor(rows_ends(rows), dtype=torch.int64)
            fb = dataclasses.replace(fb, logits_indices=ends.to(device, non_blocking=True))
        return fb
    is_decode = all(len(r.tokens) == 1 for r in rows)
    input_ids, positions, starts, logits_idx = [], [], [], []
    for r in rows:
        starts.append(len(input_ids))
        input_ids.extend(r.tokens)
        positions.extend(range(r.start_pos, r.start_pos + len(r.tokens)))
        first = starts[-1] if all_logits else len(input_ids) - 1
        logits_idx.extend(range(first, len(input_ids)))
    prefix_lens = [r.start_pos for r in rows]
    extend_lens = [len(r.tokens) for r in rows]
    seq_lens = [p + e for p, e in zip(prefix_lens, extend_lens)]
    pool_rows = torch.tensor([r.pool_row for r in rows], dtype=torch.int64)

    def dev(values, dtype) -> torch.Tensor:
        return torch.tensor(values, dtype=dtype).to(device, non_blocking=True)

    # one gather on the device (no per-row host round trip): the KV slot of every new token
    token_rows = dev([r.pool_row for r in rows for _ in r.tokens], torch.int64)
    locs = req_to_token[token_rows, dev(positions, torch.int64)]

    return ForwardBatch(
        forward_mode=ForwardMode.DECODE if is_decode else ForwardMode.EXTEND, batch_size=len(rows),
        input_ids=dev(input_ids, torch.int64), positions=dev(positions, torch.int64),
        req_pool_indices=pool_rows.to(device), seq_lens=dev(seq_lens, torch.int32),
        out_cache_loc=locs.to(torch.int64), req_to_token=req_to_token,
        prefix_lens=dev(prefix_lens, torch.int32), extend_lens=dev(extend_lens, torch.int32),
        extend_start_loc=dev(starts, torch.int32), seq_lens_cpu=seq_lens, prefix_lens_cpu=prefix_lens,
        extend_lens_cpu=extend_lens, logits_indices=dev(logits_idx, torch.int64),
    )


def rows_ends(rows: list[TokenRow]) -> list[int]:
    """Index of each row's last token in the rows' concatenation."""
    return [end - 1 for end in accumulate(len(r.tokens) for r in rows)]
