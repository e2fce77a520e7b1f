"""SlotAllocator: the KV slot free list. Host frees are immediate; device frees (a finished request's
`req_to_token` row with the radix cache off, radix evictions, rejected speculative drafts) are copied to the
host without waiting for the GPU, count as free at once, and are waited for only when an allocation needs them."""

from __future__ import annotations

import pytest
import torch

from engine.mem.kv_pool import SlotAllocator


def test_host_frees_return_slots_in_order() -> None:
    alloc = SlotAllocator(6)
    first = alloc.alloc(4)
    assert first.tolist() == [1, 2, 3, 4] and alloc.num_free == 2
    assert alloc.alloc(3) is None  # never a partial allocation
    alloc.free(first[1:3])
    alloc.free(torch.empty(0, dtype=torch.int64))
    assert alloc.num_free == 4
    assert alloc.alloc(4).tolist() == [5, 6, 2, 3]
    alloc.clear()
    assert alloc.num_free == 6


@pytest.mark.gpu
def test_device_frees_do_not_wait_for_the_gpu_gpu() -> None:
    alloc = SlotAllocator(8)
    slots = alloc.alloc(8)
    device_slots = slots[2:5].cuda()
    torch.cuda.synchronize()
    torch.cuda._sleep(200_000_000)  # ~0.1 s of GPU work queued ahead of the copy
    alloc.free(device_slots)
    # Counted at once, while the copy still waits behind the sleep: free did not block on the GPU.
    assert alloc.num_free == 3
    assert not alloc._pending[0][0].query()
    assert alloc.alloc(4) is None
    # Only now does an allocation need them: it waits for the copy and gets exactly those slots.
    assert sorted(alloc.alloc(3).tolist()) == [3, 4, 5]
    assert alloc.num_free == 0
    alloc.free(torch.tensor([7], device="cuda", dtype=torch.int32))  # int32 rows of req_to_token too
    torch.cuda.synchronize()
    assert alloc.alloc(1).tolist() == [7]
