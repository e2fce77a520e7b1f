"""ReqToTokenPool: request slot x position -> KV slot index, one row per running request."""

from __future__ import annotations

import torch


class ReqToTokenPool:
    def __init__(self, max_reqs: int, max_context_len: int, device: str | torch.device) -> None:
        self.max_reqs = max_reqs
        self.max_context_len = max_context_len
        self.req_to_token = torch.zeros((max_reqs, max_context_len), dtype=torch.int32, device=device)
        self._free_rows = list(range(max_reqs))

    @property
    def num_free(self) -> int:
        return len(self._free_rows)

    def alloc(self) -> int | None:
        return self._free_rows.pop() if self._free_rows else None

    def free(self, row: int) -> None:
        self._free_rows.append(row)

    def write(self, row: int, start: int, slots: torch.Tensor) -> None:
        if slots.device.type == "cpu" and self.req_to_token.is_cuda:
            # Pinned and asynchronous: a blocking copy from pageable memory would wait for every forward
            # already queued (the next prefill could then not be planned while the GPU works).
            slots = slots.to(torch.int32).pin_memory()
            self.req_to_token[row, start:start + slots.numel()].copy_(slots, non_blocking=True)
            return
        self.req_to_token[row, start:start + slots.numel()] = slots.to(self.req_to_token.device, torch.int32)

    def read(self, row: int, length: int) -> torch.Tensor:
        return self.req_to_token[row, :length].to(torch.int64)

    def clear(self) -> None:
        self._free_rows = list(range(self.max_reqs))
