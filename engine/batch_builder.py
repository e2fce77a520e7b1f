"""Turns the scheduled requests into a ForwardBatch (tensors only) and remembers which logits row
belongs to which request and prompt position."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from engine.forward_batch import ForwardBatch, ForwardMode
from engine.mem.req_to_token import ReqToTokenPool
from engine.req import Req


@dataclass
class ScheduleBatch:
    mode: ForwardMode
    reqs: list[Req]
    # per request: (first logits row, number of rows, first prompt position those rows predict from)
    logit_rows: list[tuple[int, int, int]] = field(default_factory=list)
    # requests whose prompt is complete after this step and so sample a token
    samples: list[bool] = field(default_factory=list)


def build_forward_batch(batch: ScheduleBatch, req_pool: ReqToTokenPool, device: torch.device) -> ForwardBatch:
    """Assumes KV slots were already allocated and `req.extend_len` set; advances req.kv_len."""
    input_ids: list[int] = []
    positions: list[int] = []
    seq_lens, prefix_lens, extend_lens, starts, logits_idx = [], [], [], [], []
    batch.logit_rows, batch.samples = [], []
    for req in batch.reqs:
        start_pos, ext = req.kv_len, req.extend_len
        fill = req.fill_ids
        starts.append(len(input_ids))
        input_ids.extend(fill[start_pos:start_pos + ext])
        positions.extend(range(start_pos, start_pos + ext))
        prefix_lens.append(start_pos)
        extend_lens.append(ext)
        seq_lens.append(start_pos + ext)
        is_complete = start_pos + ext == req.fill_len
        first_row_pos = start_pos + ext - 1
        if req.wants_input_logprobs and req.logprob_start_len - 1 <= first_row_pos:
            # rows from logprob_start_len - 1 on predict the prompt tokens whose logprobs were asked for
            first_row_pos = max(req.logprob_start_len - 1, start_pos)
        n_rows = start_pos + ext - first_row_pos
        batch.logit_rows.append((len(logits_idx), n_rows, first_row_pos))
        base = starts[-1] - start_pos
        logits_idx.extend(base + p for p in range(first_row_pos, start_pos + ext))
        batch.samples.append(is_complete)
        req.kv_len = start_pos + ext
    rows = torch.tensor([r.req_pool_idx for r in batch.reqs], dtype=torch.int64)
    locs = torch.cat([req_pool.req_to_token[r.req_pool_idx, p:p + e]
                      for r, p, e in zip(batch.reqs, prefix_lens, extend_lens)]).to(torch.int64)

    def dev(values, dtype) -> torch.Tensor:
        return torch.tensor(values, dtype=dtype).to(device, non_blocking=True)

    return ForwardBatch(
        forward_mode=batch.mode, batch_size=len(batch.reqs),
        input_ids=dev(input_ids, torch.int64), positions=dev(positions, torch.int64),
        req_pool_indices=rows.to(device), seq_lens=dev(seq_lens, torch.int32), out_cache_loc=locs.to(device),
        req_to_token=req_pool.req_to_token, prefix_lens=dev(prefix_lens, torch.int32),
        extend_lens=dev(extend_lens, torch.int32), extend_start_loc=dev(starts, torch.int32),
        seq_lens_cpu=seq_lens, prefix_lens_cpu=prefix_lens, extend_lens_cpu=extend_lens,
        logits_indices=dev(logits_idx, torch.int64),
    )
