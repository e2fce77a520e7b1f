"""ForwardBatch: the tensors one model forward needs (no Python request objects).

Tokens of all requests are flattened into one ragged run of `num_tokens`. In EXTEND mode request i
contributes `extend_lens[i]` new tokens after `prefix_lens[i]` cached ones; in DECODE mode every
request contributes exactly one token. `out_cache_loc` names the KV slot each new token writes.
`req_to_token[req_pool_indices[i], :seq_lens[i]]` lists the KV slots of request i's whole sequence.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import torch


class ForwardMode(Enum):
    EXTEND = "extend"  # prefill chunks (a request may have a cached prefix)
    DECODE = "decode"  # one new token per request

    @property
    def is_decode(self) -> bool:
        return self is ForwardMode.DECODE

    @property
    def is_extend(self) -> bool:
        return self is ForwardMode.EXTEND


@dataclass
class ForwardBatch:
    forward_mode: ForwardMode
    batch_size: int
    input_ids: torch.Tensor  # [num_tokens] int64
    positions: torch.Tensor  # [num_tokens] int64
    req_pool_indices: torch.Tensor  # [batch_size] int64
    seq_lens: torch.Tensor  # [batch_size] int32, prefix + new tokens
    out_cache_loc: torch.Tensor  # [num_tokens] int64
    req_to_token: torch.Tensor  # [max_reqs, max_context_len] int32 (the pool's table)
    # EXTEND only (DECODE: prefix_lens = seq_lens - 1, extend_lens = 1)
    prefix_lens: torch.Tensor  # [batch_size] int32
    extend_lens: torch.Tensor  # [batch_size] int32
    extend_start_loc: torch.Tensor  # [batch_size] int32, offset of each request in the ragged run
    # Host copies, so backends need not sync with the device to read lengths.
    seq_lens_cpu: list[int]
    prefix_lens_cpu: list[int]
    extend_lens_cpu: list[int]
    # Which flattened rows need logits: the last token of each request, or every prompt position
    # from logprob_start_len on for requests that asked for prompt logprobs.
    logits_indices: torch.Tensor  # [num_logit_rows] int64
    # EXTEND with one request: the first of its KV slots when all `seq_lens_cpu[0]` of them are one ascending
    # run (the host allocated them so, `Req.kv_run`); None when unknown. FlashInfer's dense prefill needs it.
    kv_run_first: int | None = None

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.shape[0])
