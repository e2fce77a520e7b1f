"""Token-granular KV pool: per layer K and V buffers `[num_slots, num_kv_heads, head_dim]`, plus a
free-list allocator over slot indices.

Slot 0 is reserved as a scratch slot (padded CUDA-graph rows write there), so usable capacity is
`size` and slots run 1..size.

FP8 (`--kv-cache-dtype fp8_e4m3`): buffers are float8_e4m3fn, one byte per element, so the same
memory holds twice the tokens of a 16-bit pool. Each layer has a per-tensor K scale and V scale (1.0
unless the checkpoint provides them, `engine.mem.kv_scales`); the pool holds `x / scale` saturated to
+-448 and every reader multiplies back (the attention kernels fold the K scale into the softmax
scale and the V scale into the output).
"""

from __future__ import annotations

import collections
from collections.abc import Sequence

import torch

FP8_KV_DTYPE = torch.float8_e4m3fn
FP8_E4M3_MAX = 448.0  # largest finite e4m3 value; casting anything larger gives NaN, so stores clamp


def quantize_fp8(x: torch.Tensor, scale: float) -> torch.Tensor:
    """The fp8 value the pool stores for x: x / scale in fp32, saturated, rounded to nearest even."""
    return (x.float() / scale).clamp_(-FP8_E4M3_MAX, FP8_E4M3_MAX).to(FP8_KV_DTYPE)


class KVPool:
    def __init__(self, size: int, num_layers: int, num_kv_heads: int, head_dim: int,
                 dtype: torch.dtype, device: str | torch.device, *,
                 k_scales: Sequence[float] | None = None, v_scales: Sequence[float] | None = None) -> None:
        self.size = size
        self.num_layers = num_layers
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.dtype = dtype  # what the buffers hold (the storage dtype, fp8 included)
        self.device = torch.device(device)
        self.k_scales = [float(s) for s in k_scales] if k_scales is not None else [1.0] * num_layers
        self.v_scales = [float(s) for s in v_scales] if v_scales is not None else [1.0] * num_layers
        assert len(self.k_scales) == len(self.v_scales) == num_layers, "one K and one V scale per layer"
        assert all(s > 0 for s in self.k_scales + self.v_scales), "KV scales must be positive"
        shape = (size + 1, num_kv_heads, head_dim)
        self.k_buffers = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.v_buffers = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.allocator = SlotAllocator(size)

    @property
    def is_fp8(self) -> bool:
        return self.dtype == FP8_KV_DTYPE

    @staticmethod
    def bytes_per_token(num_layers: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype) -> int:
        """K and V of one token over all layers, in the pool's storage dtype (fp8: 1 byte an element)."""
        return 2 * num_layers * num_kv_heads * head_dim * torch.tensor([], dtype=dtype).element_size()

    def get_kv(self, layer_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.k_buffers[layer_id], self.v_buffers[layer_id]

    def scales(self, layer_id: int) -> tuple[float, float]:
        """(k_scale, v_scale) of a layer: the real value is the stored value times the scale (1.0 for
        16-bit pools)."""
        return self.k_scales[layer_id], self.v_scales[layer_id]

    def store(self, layer_id: int, loc: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """k, v: [num_tokens, num_kv_heads, head_dim]; loc: [num_tokens] slot indices. The torch path
        (torch_native backend, tests); the Triton backends store with `kernels.store_kv`."""
        k_buf, v_buf = self.get_kv(layer_id)
        if not self.is_fp8:
            k_buf[loc] = k.to(self.dtype)
            v_buf[loc] = v.to(self.dtype)
            return
        k_scale, v_scale = self.scales(layer_id)
        # index_put has no fp8 kernel on every device: write the bytes through uint8 views.
        k_buf.view(torch.uint8)[loc] = quantize_fp8(k, k_scale).view(torch.uint8)
        v_buf.view(torch.uint8)[loc] = quantize_fp8(v, v_scale).view(torch.uint8)

    def load(self, layer_id: int, slots: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """K and V rows at `slots` in `dtype`, dequantized (stored value x scale) for an fp8 pool."""
        k_buf, v_buf = self.get_kv(layer_id)
        if not self.is_fp8:
            return k_buf[slots].to(dtype), v_buf[slots].to(dtype)
        k_scale, v_scale = self.scales(layer_id)
        keys = k_buf.view(torch.uint8)[slots].view(FP8_KV_DTYPE).float() * k_scale
        vals = v_buf.view(torch.uint8)[slots].view(FP8_KV_DTYPE).float() * v_scale
        return keys.to(dtype), vals.to(dtype)


class SlotAllocator:
    """Free list of KV slot indices 1..size, kept as a host tensor so alloc/free are slicing ops.

    Slots freed from a device tensor (a finished request's row of `req_to_token` with the radix cache off, radix
    evictions, rejected speculative drafts) reach the host by a non-blocking copy into pinned memory, tracked with
    an event: `free` does not wait for the GPU. A blocking `.cpu()` there stalled the scheduler until every forward
    already queued had run, once per finished request (the overlap schedule lost its overlap for that step). They
    count as free at once (`num_free`); `alloc` moves completed copies into the list and waits for pending ones
    only when the list alone is too short. The slots' later reuse is ordered after the copy by the stream."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.clear()

    def clear(self) -> None:
        self._free = torch.arange(1, self.size + 1, dtype=torch.int64)
        self._pending: collections.deque[tuple[torch.cuda.Event, torch.Tensor]] = collections.deque()
        self._pending_count = 0

    @property
    def num_free(self) -> int:
        return int(self._free.numel()) + self._pending_count

    def alloc(self, n: int) -> torch.Tensor | None:
        """n slot indices (int64 host tensor), or None when fewer than n are free."""
        if n > self.num_free:
            return None
        self._collect(wait=False)
        if n > self._free.numel():
            self._collect(wait=True)
        out, self._free = self._free[:n], self._free[n:]
        return out

    def free(self, slots: torch.Tensor) -> None:
        if not slots.numel():
            return
        if slots.device.type != "cuda":
            self._free = torch.cat([self._free, slots.to(torch.int64)])
            return
        host = torch.empty(slots.numel(), dtype=torch.int64, pin_memory=True)
        with torch.cuda.device(slots.device):  # the copy and its event on that device's current stream
            host.copy_(slots.to(torch.int64), non_blocking=True)
            copied = torch.cuda.Event()
            copied.record()
        self._pending.append((copied, host))
        self._pending_count += host.numel()

    def _collect(self, wait: bool) -> None:
        """Moves freed device slots whose copy finished into the list (all of them, waiting, if `wait`)."""
        done = []
        while self._pending and (wait or self._pending[0][0].query()):
            copied, host = self._pending.popleft()
            copied.synchronize()
            done.append(host)
            self._pending_count -= host.numel()
        if done:
            self._free = torch.cat([self._free, *done])
