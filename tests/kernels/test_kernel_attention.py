"""Decode and extend attention kernels vs a per-request torch reference (CPU: Triton interpreter)."""

from __future__ import annotations

import pytest
import torch
from kernel_ref import PoolBatch, attention_ref

from kernels import decode_attention, extend_attention

# (num_q_heads, num_kv_heads, head_dim): MHA, GQA 4, and a padded non-power-of-two head dim.
HEAD_CONFIGS = [(4, 4, 64), (8, 2, 128), (4, 1, 80)]
DTYPES = [torch.float32, torch.float16]


def _tol(dtype: torch.dtype) -> dict[str, float]:
    return {"atol": 2e-5, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 4e-3, "rtol": 4e-3}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("heads", HEAD_CONFIGS)
def test_decode_attention(heads: tuple[int, int, int], dtype: torch.dtype) -> None:
    num_q_heads, num_kv_heads, head_dim = heads
    seq_lens = [1, 19, 70]  # 70 > min_split_len * max_kv_splits: splits longer than one block
    pool = PoolBatch(seq_lens, num_kv_heads, head_dim, dtype)
    q = torch.randn(len(seq_lens), num_q_heads, head_dim).to(dtype)
    scaling = head_dim**-0.5
    out = decode_attention(q, pool.k_buffer, pool.v_buffer, pool.req_to_token, pool.req_pool_indices,
                           torch.tensor(seq_lens, dtype=torch.int32), scaling, max_kv_splits=3, min_split_len=8)
    assert out.shape == q.shape and out.dtype == dtype
    for i in range(len(seq_lens)):
        s = pool.slots(i)
        ref = attention_ref(q[i : i + 1], pool.k_buffer[s], pool.v_buffer[s], scaling)[0]
        torch.testing.assert_close(out[i].float(), ref, **_tol(dtype))


def test_decode_attention_split_counts_agree() -> None:
    """One split, many splits and the default all give the same answer; seq_len 0 yields zeros."""
    seq_lens = [33, 5, 0]
    pool = PoolBatch([33, 5, 1], 2, 64, torch.float32, seed=1)
    q = torch.randn(3, 4, 64)
    lens = torch.tensor(seq_lens, dtype=torch.int64)
    args = (q, pool.k_buffer, pool.v_buffer, pool.req_to_token, pool.req_pool_indices, lens, 0.125)
    one = decode_attention(*args, max_kv_splits=1)
    many = decode_attention(*args, max_kv_splits=16, min_split_len=2)
    torch.testing.assert_close(one, many, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(decode_attention(*args), one, atol=1e-5, rtol=1e-5)
    assert torch.equal(one[2], torch.zeros_like(one[2]))


@pytest.mark.parametrize("single_pass", [False, True], ids=["two-stage", "single-pass"])
def test_decode_attention_long_split_rule(single_pass: bool) -> None:
    """Past `long_from` tokens a request's splits are `long_split_len` long: stage 1 and the merge (stage 2, or
    the last-arriving program) must agree on that layout, for rows on both sides of the threshold in one batch."""
    seq_lens = [40, 41, 97, 12]  # 40 <= long_from < 41: 10 splits of 4 vs 3 of 16; 97: 7 of 16 (not 8 of 13)
    pool = PoolBatch(seq_lens, 2, 64, torch.float32, seed=3)
    q = torch.randn(len(seq_lens), 4, 64)
    args = (q, pool.k_buffer, pool.v_buffer, pool.req_to_token, pool.req_pool_indices,
            torch.tensor(seq_lens, dtype=torch.int32), 0.125)
    counters = torch.zeros(len(seq_lens) * 2, dtype=torch.int32) if single_pass else None
    out = decode_attention(*args, max_kv_splits=8, min_split_len=4, long_split_len=16, long_from=40, counters=counters)
    one = decode_attention(*args, max_kv_splits=1)
    torch.testing.assert_close(out, one, atol=1e-5, rtol=1e-5)
    for i in range(len(seq_lens)):
        s = pool.slots(i)
        torch.testing.assert_close(out[i], attention_ref(q[i : i + 1], pool.k_buffer[s], pool.v_buffer[s], 0.125)[0],
                                   atol=2e-5, rtol=1e-4)
    if counters is not None:
        assert torch.equal(counters, torch.zeros_like(counters)), "the merge leaves the counters zero"


def _run_extend(prefix_lens: list[int], extend_lens: list[int], heads: tuple[int, int, int], dtype: torch.dtype,
                **blocks: int) -> None:
    num_q_heads, num_kv_heads, head_dim = heads
    seq_lens = [p + e for p, e in zip(prefix_lens, extend_lens)]
    pool = PoolBatch(seq_lens, num_kv_heads, head_dim, dtype, seed=2)
    num_tokens = sum(extend_lens)
    # q/k/v as strided views of one fused projection, the way a model hands them over.
    qkv = torch.randn(num_tokens, (num_q_heads + 2 * num_kv_heads) * head_dim).to(dtype)
    q, k, v = qkv.split([num_q_heads * head_dim, num_kv_heads * head_dim, num_kv_heads * head_dim], dim=1)
    q = q.view(num_tokens, num_q_heads, head_dim)
    k = k.view(num_tokens, num_kv_heads, head_dim)
    v = v.view(num_tokens, num_kv_heads, head_dim)
    starts = torch.tensor([0, *extend_lens[:-1]]).cumsum(0).to(torch.int32)
    scaling = head_dim**-0.5
    out = extend_attention(q, k, v, pool.k_buffer, pool.v_buffer, pool.req_to_token, pool.req_pool_indices,
                           torch.tensor(prefix_lens, dtype=torch.int32), torch.tensor(extend_lens, dtype=torch.int32),
                           starts, max(extend_lens), scaling, **blocks)
    assert out.shape == q.shape and out.dtype == dtype
    for i, (p, e) in enumerate(zip(prefix_lens, extend_lens)):
        s0 = int(starts[i])
        prefix = pool.slots(i, p)
        keys = torch.cat([pool.k_buffer[prefix], k[s0 : s0 + e]])
        values = torch.cat([pool.v_buffer[prefix], v[s0 : s0 + e]])
        ref = attention_ref(q[s0 : s0 + e], keys, values, scaling)
        torch.testing.assert_close(out[s0 : s0 + e].float(), ref, **_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("heads", HEAD_CONFIGS)
def test_extend_attention(heads: tuple[int, int, int], dtype: torch.dtype) -> None:
    # ragged: prefix 0 and > 0, extend lengths 1 and across several query/key blocks
    _run_extend([0, 21, 40], [9, 1, 27], heads, dtype, block_m=16, block_n=16)


def test_extend_attention_no_prefix_default_blocks() -> None:
    _run_extend([0, 0], [5, 40], (8, 2, 64), torch.float32)


def test_launchers_reject_bad_input() -> None:
    pool = PoolBatch([4], 2, 64, torch.float32)
    q = torch.randn(1, 4, 64)
    lens = torch.tensor([4], dtype=torch.int32)
    with pytest.raises(AssertionError, match="contiguous"):
        decode_attention(q.transpose(1, 2).contiguous().transpose(1, 2), pool.k_buffer, pool.v_buffer,
                         pool.req_to_token, pool.req_pool_indices, lens, 0.1)
    with pytest.raises(AssertionError, match="multiple"):
        decode_attention(torch.randn(1, 3, 64), pool.k_buffer, pool.v_buffer, pool.req_to_token,
                         pool.req_pool_indices, lens, 0.1)
    with pytest.raises(AssertionError):
        decode_attention(q, pool.k_buffer, pool.v_buffer, pool.req_to_token.long(), pool.req_pool_indices, lens, 0.1)
