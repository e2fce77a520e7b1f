"""Launch shape of the decode attention kernel's stage 1 (`kernels.decode_attention`): the tiles
`bench/kernels_bench.py --sweep-tiles` measures, and the defaults they chose."""

from __future__ import annotations

from typing import NamedTuple


class DecodeTiles(NamedTuple):
    """Stage 1's launch shape (`bench/kernels_bench.py --sweep-tiles`)."""
    # KV rows per loop step. None: 128 for 16-bit / fp8 pools with head_dim <= 128 (fastest of the sweep at
    # batch 1 / 100k, batch 64 / 1k and batch 256 / 768 on an H200, 2026-12-03: 15-52 % under the old 64;
    # 72 KB of shared memory for bf16), 64 for fp32 pools, 32 above head_dim 128.
    block_n: int | None = None
    num_warps: int = 4
    # None: 3 for fp8 pools (block 128: 161.8 vs 181.1 us at batch 256 / 768, the best at all three shapes),
    # 2 for 16-bit pools
    num_stages: int | None = None
    fp8_as_fp16: bool = True  # fp8 pools with a 16-bit q: upcast to fp16 (False: to q's dtype, the old way)
    # fp8 pools upcast to fp16: which tiles convert in their load layout through `_e4m3_to_f16` (bit 0: K,
    # bit 1: V; 3: both) rather than Triton's cast, which it moves after the layout change to the dot operand
    # (one LDS.U8 per V element). SASS, block 128 / 4 warps / 3 stages: 1100 -> 738 (V) / 693 (both)
    # instructions per loop iteration, 207 -> 144 / 115 registers, 41 -> 73 KB shared, but the fp16 tile
    # makes a second trip through shared memory (bench/NOTES.md, 2026-12-03 eighth session). 0 until measured.
    fp8_convert: int = 0


def launch_shape(tiles: DecodeTiles, block_d: int, kv_element_size: int) -> tuple[int, int]:
    """(block_n, num_stages) of stage 1: `tiles`' own, or the defaults `DecodeTiles` describes."""
    block_n = tiles.block_n or (32 if block_d > 128 else 128 if kv_element_size <= 2 else 64)
    return block_n, tiles.num_stages or (3 if kv_element_size == 1 else 2)
