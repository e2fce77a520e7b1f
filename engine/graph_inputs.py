"""DecodeInputBlock: one captured decode batch size's per-row inputs in one device buffer, which its CUDA graph
reads and one host-to-device copy fills.

A decode step used to move its rows in two host-to-device copies, cast its new KV slots for the index store,
then copy five columns into the graph's static buffers: nine small GPU operations around every replay (~16 us of
an FP8 8B batch-1 token on an H100, bench/token_timeline.py). Built straight into the
block, a step queues one copy and the store (plus, when overlap scheduling chains it, one device copy of the
previous step's tokens).

Rows past the batch are padding: sequence length 0 and KV slot 0 (the pool's scratch slot), so the graph's
padded rows attend nothing and write only the scratch slot, whatever an earlier batch left there.
"""

from __future__ import annotations

import numpy as np
import torch

INT64_COLUMNS = 4  # token ids, positions, req_to_token rows, new KV slots
INT32_COLUMNS = 3  # sequence lengths, prefix lengths (= positions), new KV slots as req_to_token stores them


class DecodeInputBlock:
    def __init__(self, size: int, device: torch.device) -> None:
        self.size = size
        self.device = torch.device(device)
        self._split = 8 * INT64_COLUMNS * size
        self.nbytes = self._split + 4 * INT32_COLUMNS * size
        self.buffer = torch.zeros(self.nbytes, dtype=torch.uint8, device=device)
        cols64 = self.buffer[:self._split].view(torch.int64).view(INT64_COLUMNS, size)
        cols32 = self.buffer[self._split:].view(torch.int32).view(INT32_COLUMNS, size)
        self.input_ids, self.positions, self.req_pool_indices, self.out_cache_loc = cols64.unbind(0)
        self.seq_lens, self.prefix_lens, self.out_cache_loc_int32 = cols32.unbind(0)
        # Columns every decode batch has alike (one token per row, its logits row its own index).
        with torch.device(device):
            self.ones = torch.ones(size, dtype=torch.int32)
            self.arange = torch.arange(size, dtype=torch.int32)
            self.arange64 = torch.arange(size, dtype=torch.int64)

    def load(self, token_ids: list[int], positions: list[int], rows: list[int], slots: list[int]) -> None:
        """Writes a batch of `len(positions)` rows (<= size) and the padding after them with one copy, queued on the
        current stream behind whatever still reads the block. Each call fills a fresh pinned host buffer: the
        caching host allocator does not hand it out again until its copy has run, so the host may go on to
        the next step at once."""
        bs = len(positions)
        assert bs <= self.size, f"{bs} rows do not fit a block of {self.size}"
        host = torch.zeros(self.nbytes, dtype=torch.uint8, pin_memory=self.device.type == "cuda")
        raw = host.numpy()
        cols64 = raw[:self._split].view(np.int64).reshape(INT64_COLUMNS, self.size)
        cols32 = raw[self._split:].view(np.int32).reshape(INT32_COLUMNS, self.size)
        cols64[:, :bs] = (token_ids, positions, rows, slots)
        cols32[0, :bs] = positions
        cols32[0, :bs] += 1  # sequence length: the row's new token included
        cols32[1, :bs] = positions
        cols32[2, :bs] = slots
        self.buffer.copy_(host, non_blocking=True)
