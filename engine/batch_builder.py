"""Turns the scheduled requests into a ForwardBatch (tensors only) and remembers which logits row
belongs to which request and prompt position.

Decode batches take a fast path: every request adds one token, so the whole batch is a few host
integer columns packed into two tensors, moved with two host-to-device copies, and the new KV
slots are written into `req_to_token` with one indexed store. Per-request device ops would cost
~10 us each, which at batch 256 is more than a decode step's GPU time is worth. A decode batch that a
CUDA graph will replay goes straight into that graph's input block instead (`decode_inputs`,
engine.graph_inputs): one copy, no copies at replay.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from engine.forward_batch import ForwardBatch, ForwardMode
from engine.graph_inputs import DecodeInputBlock
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
    # DECODE: one fresh KV slot per request (host int64), not yet in req_to_token; None means the
    # slots were already written to req_to_token at position kv_len (the per-request path).
    # EXTEND with decode rows: the fresh slots of those rows, the same way.
    decode_slots: torch.Tensor | None = None
    # EXTEND only (engine.mixed_chunk): the last `num_decode_rows` requests are running decodes riding
    # along with the prefill chunks, one token each over their cached prefix.
    num_decode_rows: int = 0
    # DECODE only: this step's input tokens already on the device (overlap scheduling chains the
    # previous step's sampled ids here without reading them on the host).
    input_ids_gpu: torch.Tensor | None = None

    @property
    def num_prefill_reqs(self) -> int:
        return len(self.reqs) - self.num_decode_rows


def build_forward_batch(batch: ScheduleBatch, req_pool: ReqToTokenPool, device: torch.device,
                        decode_inputs: Callable[[int], DecodeInputBlock | None] | None = None) -> ForwardBatch:
    """Assumes KV slots were already allocated and `req.extend_len` set; advances req.kv_len.
    `decode_inputs(B)`: the input block a decode batch of B rows will be replayed from (ModelRunner.decode_inputs),
    None where no graph replays it."""
    if batch.mode.is_decode:
        block = decode_inputs(len(batch.reqs)) if decode_inputs is not None else None
        if block is not None and batch.decode_slots is not None:
            return _build_decode_into(block, batch, req_pool)
        return _build_decode(batch, req_pool, device)
    input_ids: list[int] = []
    positions: list[int] = []
    seq_lens, prefix_lens, extend_lens, starts, logits_idx = [], [], [], [], []
    batch.logit_rows, batch.samples = [], []
    prefill_reqs = batch.reqs[:batch.num_prefill_reqs]
    for req in prefill_reqs:
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
    locs_parts = [req_pool.req_to_token[r.req_pool_idx, p:p + e].to(torch.int64)
                  for r, p, e in zip(prefill_reqs, prefix_lens, extend_lens)]
    if batch.num_decode_rows:
        locs_parts.append(_add_decode_rows(batch, req_pool, device, input_ids, positions, seq_lens, prefix_lens,
                                           extend_lens, starts, logits_idx))
    rows = torch.tensor([r.req_pool_idx for r in batch.reqs], dtype=torch.int64)
    locs = torch.cat(locs_parts)

    def dev(values, dtype) -> torch.Tensor:
        return torch.tensor(values, dtype=dtype).to(device, non_blocking=True)

    return ForwardBatch(
        forward_mode=batch.mode, batch_size=len(batch.reqs),
        input_ids=dev(input_ids, torch.int64), positions=dev(positions, torch.int64),
        req_pool_indices=rows.to(device, non_blocking=True), seq_lens=dev(seq_lens, torch.int32), out_cache_loc=locs,
        req_to_token=req_pool.req_to_token, prefix_lens=dev(prefix_lens, torch.int32),
        extend_lens=dev(extend_lens, torch.int32), extend_start_loc=dev(starts, torch.int32),
        seq_lens_cpu=seq_lens, prefix_lens_cpu=prefix_lens, extend_lens_cpu=extend_lens,
        logits_indices=dev(logits_idx, torch.int64), kv_run_first=_kv_run_first(batch),
    )


def _kv_run_first(batch: ScheduleBatch) -> int | None:
    """The first KV slot of a one-request extend whose whole sequence is one host-known run of slots."""
    if len(batch.reqs) != 1 or batch.num_decode_rows:
        return None
    req = batch.reqs[0]
    run = req.kv_run
    return run[0] if run is not None and run[1] == req.kv_len and req.kv_len > 0 else None


def _add_decode_rows(batch: ScheduleBatch, req_pool: ReqToTokenPool, device: torch.device, input_ids: list[int],
                     positions: list[int], seq_lens: list[int], prefix_lens: list[int], extend_lens: list[int],
                     starts: list[int], logits_idx: list[int]) -> torch.Tensor:
    """Appends the batch's decode rows (one token each) to the extend columns; writes their fresh slots
    into req_to_token with one indexed store, as the decode path does. Returns those slots (device)."""
    reqs = batch.reqs[batch.num_prefill_reqs:]
    pos = [r.kv_len for r in reqs]
    for req, p in zip(reqs, pos):
        batch.logit_rows.append((len(logits_idx), 1, p))
        batch.samples.append(True)
        logits_idx.append(len(input_ids))
        starts.append(len(input_ids))
        input_ids.append(_last_token(req))  # before kv_len moves
        req.kv_len = p + 1
    positions.extend(pos)
    prefix_lens.extend(pos)
    extend_lens.extend([1] * len(reqs))
    seq_lens.extend(p + 1 for p in pos)
    assert batch.decode_slots is not None
    slots = batch.decode_slots.to(device, torch.int64, non_blocking=True)  # [D]
    index = torch.tensor([[r.req_pool_idx for r in reqs], pos], dtype=torch.int64).to(device, non_blocking=True)
    req_pool.req_to_token[index[0], index[1]] = slots.to(torch.int32)
    return slots


def _last_token(req: Req) -> int:
    # fill_ids[kv_len] without building fill_ids (a prompt-length list copy per request per step)
    pos, num_prompt = req.kv_len, len(req.origin_input_ids)
    return req.origin_input_ids[pos] if pos < num_prompt else req.output_ids[pos - num_prompt]


def _start_decode(batch: ScheduleBatch) -> tuple[list[int], list[int]]:
    """A decode batch's positions and host input ids (zeros where the previous step's ids are chained on the
    device); records its logits rows and moves every request's kv_len past the new token."""
    positions = [r.kv_len for r in batch.reqs]
    token_ids = [0] * len(positions) if batch.input_ids_gpu is not None else [_last_token(r) for r in batch.reqs]
    batch.logit_rows = [(i, 1, p) for i, p in enumerate(positions)]
    batch.samples = [True] * len(positions)
    for req in batch.reqs:
        req.kv_len += 1
    return positions, token_ids


def _build_decode_into(block: DecodeInputBlock, batch: ScheduleBatch, req_pool: ReqToTokenPool) -> ForwardBatch:
    """The decode batch as views of a graph's input block: one host-to-device copy (plus one device copy of
    chained input ids) and the index store of the new slots."""
    reqs = batch.reqs
    bs = len(reqs)
    positions, token_ids = _start_decode(batch)
    assert batch.decode_slots is not None
    block.load(token_ids, positions, [r.req_pool_idx for r in reqs], batch.decode_slots.tolist())
    input_ids, rows, pos = block.input_ids[:bs], block.req_pool_indices[:bs], block.positions[:bs]
    if batch.input_ids_gpu is not None:
        input_ids.copy_(batch.input_ids_gpu, non_blocking=True)
    req_pool.req_to_token[rows, pos] = block.out_cache_loc_int32[:bs]
    return ForwardBatch(
        forward_mode=ForwardMode.DECODE, batch_size=bs, input_ids=input_ids, positions=pos, req_pool_indices=rows,
        seq_lens=block.seq_lens[:bs], out_cache_loc=block.out_cache_loc[:bs], req_to_token=req_pool.req_to_token,
        prefix_lens=block.prefix_lens[:bs], extend_lens=block.ones[:bs], extend_start_loc=block.arange[:bs],
        seq_lens_cpu=[p + 1 for p in positions], prefix_lens_cpu=positions, extend_lens_cpu=[1] * bs,
        logits_indices=block.arange64[:bs],
    )


def _build_decode(batch: ScheduleBatch, req_pool: ReqToTokenPool, device: torch.device) -> ForwardBatch:
    reqs = batch.reqs
    bs = len(reqs)
    positions, token_ids = _start_decode(batch)
    seq_lens = [p + 1 for p in positions]
    rows = [r.req_pool_idx for r in reqs]
    arange = list(range(bs))
    # int64 columns: input_ids, positions, req rows, out_cache_loc, logits rows
    cols64 = torch.tensor([token_ids, positions, rows, [0] * bs, arange], dtype=torch.int64)  # [5, B]
    if batch.decode_slots is not None:
        cols64[3] = batch.decode_slots
    # int32 columns: seq_lens, prefix_lens, extend_lens, extend_start_loc
    cols32 = torch.tensor([seq_lens, positions, [1] * bs, arange], dtype=torch.int32)  # [4, B]
    dev64 = cols64.to(device, non_blocking=True)
    dev32 = cols32.to(device, non_blocking=True)
    input_ids, pos_d, rows_d, locs_d, logits_idx = dev64.unbind(0)
    if batch.input_ids_gpu is not None:
        input_ids = batch.input_ids_gpu
    if batch.decode_slots is not None:
        req_pool.req_to_token[rows_d, pos_d] = locs_d.to(torch.int32)  # one store for the whole batch
    else:
        locs_d = req_pool.req_to_token[rows_d, pos_d].to(torch.int64)
    seq_d, prefix_d, ext_d, starts_d = dev32.unbind(0)
    return ForwardBatch(
        forward_mode=ForwardMode.DECODE, batch_size=bs, input_ids=input_ids, positions=pos_d,
        req_pool_indices=rows_d, seq_lens=seq_d, out_cache_loc=locs_d, req_to_token=req_pool.req_to_token,
        prefix_lens=prefix_d, extend_lens=ext_d, extend_start_loc=starts_d,
        seq_lens_cpu=seq_lens, prefix_lens_cpu=positions, extend_lens_cpu=[1] * bs, logits_indices=logits_idx,
    )
