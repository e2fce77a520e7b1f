"""DecodeInputBlock (engine.graph_inputs): one copy writes a batch's columns where a captured graph reads them,
and pads the rest of the block so padded rows attend nothing and write only the scratch KV slot."""

from __future__ import annotations

import pytest
import torch

from engine.graph_inputs import DecodeInputBlock


def test_load_writes_the_rows_and_pads_the_rest() -> None:
    block = DecodeInputBlock(4, torch.device("cpu"))
    block.load([11, 12, 13], [5, 0, 9], [2, 0, 3], [40, 41, 42])
    assert block.input_ids.tolist() == [11, 12, 13, 0]
    assert block.positions.tolist() == [5, 0, 9, 0]
    assert block.req_pool_indices.tolist() == [2, 0, 3, 0]
    assert block.out_cache_loc.tolist() == [40, 41, 42, 0]
    assert block.out_cache_loc_int32.tolist() == [40, 41, 42, 0]
    assert block.seq_lens.tolist() == [6, 1, 10, 0]
    assert block.prefix_lens.tolist() == [5, 0, 9, 0]
    assert (block.seq_lens.dtype, block.out_cache_loc_int32.dtype, block.input_ids.dtype) == (
        torch.int32, torch.int32, torch.int64)
    # A smaller batch after it: the rows the larger one left behind become padding again.
    block.load([7], [3], [1], [2**31 - 1])
    assert block.seq_lens.tolist() == [4, 0, 0, 0]
    assert block.out_cache_loc.tolist() == [2**31 - 1, 0, 0, 0]
    assert block.req_pool_indices.tolist() == [1, 0, 0, 0]
    assert block.ones.tolist() == [1] * 4 and block.arange64.tolist() == [0, 1, 2, 3]


def test_views_share_one_buffer() -> None:
    block = DecodeInputBlock(8, torch.device("cpu"))
    base = block.buffer.data_ptr()
    ends = [t.data_ptr() + t.numel() * t.element_size() for t in
            (block.input_ids, block.positions, block.req_pool_indices, block.out_cache_loc, block.seq_lens,
             block.prefix_lens, block.out_cache_loc_int32)]
    assert max(ends) - base == block.nbytes == 8 * (4 * 8 + 3 * 4)
    assert all(t.is_contiguous() for t in (block.input_ids, block.seq_lens, block.out_cache_loc_int32))


def test_a_batch_larger_than_the_block_is_refused() -> None:
    with pytest.raises(AssertionError, match="5 rows do not fit a block of 4"):
        DecodeInputBlock(4, torch.device("cpu")).load([1] * 5, [0] * 5, [0] * 5, [0] * 5)
