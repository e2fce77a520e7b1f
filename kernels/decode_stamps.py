"""Debug hook for bench/attention_stamps.py: per-program %globaltimer stamps of the batch-1 early-KV decode attention
(`kernels/decode_attention.py`), taken at a program's start, before its PDL wait, after it and at its end, with its
SM id. The engine never sets it: with no buffers the kernel's `STAMP` constexpr is false and nothing is compiled in."""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import globaltimer, smid

FIELDS = ("start", "before_wait", "after_wait", "end", "sm")
# int64 [programs, len(FIELDS)] buffers, one per early-KV launch of a forward: launches are counted modulo their number,
# so warm-up forwards and the graph capture give each layer the same buffer.
STAMPS: list[torch.Tensor] | None = None
_launches = 0


def set_buffers(buffers: list[torch.Tensor] | None) -> None:
    """Stamp the next early-KV launches into `buffers` (one per layer, in launch order); None turns the hook off."""
    global STAMPS, _launches
    STAMPS, _launches = buffers, 0


def launch_options(wanted: bool, programs: int) -> dict:
    """The stamp arguments of one launch of `programs` (kv heads x splits) programs, or none."""
    global _launches
    if STAMPS is None or not wanted:
        return {}
    buffer = STAMPS[_launches % len(STAMPS)]
    _launches += 1
    assert buffer.dtype == torch.int64 and buffer.shape[0] >= programs and buffer.shape[1] == len(FIELDS)
    return {"stamps_ptr": buffer, "STAMP": True}


@triton.jit
def stamp_now():
    return globaltimer()


@triton.jit
def store_stamps(stamps_ptr, program, t_start, t_before_wait, t_after_wait):
    row = stamps_ptr + program * 5
    tl.store(row, t_start)
    tl.store(row + 1, t_before_wait)
    tl.store(row + 2, t_after_wait)
    tl.store(row + 3, globaltimer())
    tl.store(row + 4, smid().to(tl.int64))
