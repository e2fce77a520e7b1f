"""Fused kernels vs the unfused ones and torch references (CPU: Triton interpreter): rotary + KV store
in one launch, and single-pass decode attention (no stage-2 launch)."""

from __future__ import annotations

import pytest
import torch
from kernel_ref import PoolBatch, attention_ref, rotary_ref

from kernels import apply_rotary, build_rope_cache, decode_attention, rotary_kv_store, store_kv
from kernels.decode_rotary import DecodeRotary
from kernels.decode_tiles import DecodeTiles

DTYPES = [torch.float32, torch.float16]
LLAMA3_SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 8192}


@pytest.mark.parametrize("write_k", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("heads", [(4, 2, 64), (3, 1, 80)])
def test_rotary_kv_store_matches_unfused(heads: tuple[int, int, int], dtype: torch.dtype, write_k: bool) -> None:
    num_q_heads, num_kv_heads, head_dim = heads
    num_tokens, pool_size = 6, 24
    q_size, kv_size = num_q_heads * head_dim, num_kv_heads * head_dim
    # q/k/v as strided views of one fused projection output, as the model passes them
    qkv = torch.randn(num_tokens, q_size + 2 * kv_size).to(dtype)
    cache = build_rope_cache(head_dim, 4096, 500000.0, LLAMA3_SCALING)
    positions = torch.randint(0, 4096, (num_tokens,))
    loc = torch.randperm(pool_size - 1)[:num_tokens] + 1

    def views(t: torch.Tensor):
        q, k, v = t.split([q_size, kv_size, kv_size], dim=-1)
        return (q.view(num_tokens, num_q_heads, head_dim), k.view(num_tokens, num_kv_heads, head_dim),
                v.view(num_tokens, num_kv_heads, head_dim))

    # unfused reference path: apply_rotary + store_kv
    ref_qkv = qkv.clone()
    q_r, k_r, v_r = views(ref_qkv)
    k_orig = k_r.clone()
    ref_kb = torch.zeros(pool_size, num_kv_heads, head_dim, dtype=dtype)
    ref_vb = torch.zeros_like(ref_kb)
    apply_rotary(q_r, k_r, positions, cache)
    store_kv(ref_kb, ref_vb, loc, k_r, v_r)

    q, k, v = views(qkv)
    k_buffer = torch.zeros_like(ref_kb)
    v_buffer = torch.zeros_like(ref_kb)
    rotary_kv_store(q, k, v, k_buffer, v_buffer, positions, loc, cache, write_k=write_k)
    assert torch.equal(q, q_r), "q must be rotated in place exactly as apply_rotary does"
    assert torch.equal(k_buffer, ref_kb) and torch.equal(v_buffer, ref_vb)
    assert torch.equal(k, k_r if write_k else k_orig)
    assert torch.equal(v, v_r)
    # and against the HF formula
    tol = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 2e-3, "rtol": 2e-3}
    torch.testing.assert_close(k_buffer[loc], rotary_ref(k_orig, positions, cache.cos, cache.sin), **tol)


def test_rotary_kv_store_casts_to_pool_dtype() -> None:
    q = torch.randn(3, 2, 32)
    k, v = torch.randn(3, 1, 32), torch.randn(3, 1, 32)
    cache = build_rope_cache(32, 64)
    positions, loc = torch.tensor([0, 5, 63]), torch.tensor([2, 1, 3])
    k_buffer = torch.zeros(4, 1, 32, dtype=torch.float16)
    v_buffer = torch.zeros_like(k_buffer)
    k_ref = rotary_ref(k, positions, cache.cos, cache.sin)
    rotary_kv_store(q, k, v, k_buffer, v_buffer, positions, loc, cache)
    assert torch.equal(k_buffer[loc], k_ref.half()) and torch.equal(v_buffer[loc], v.half())
    assert not k_buffer[0].any()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("heads", [(4, 4, 64), (8, 2, 128), (4, 1, 80)])
def test_decode_single_pass(heads: tuple[int, int, int], dtype: torch.dtype) -> None:
    """Single pass (counters) equals two stages up to fp32 merge order; counters are left zeroed;
    a padded row (seq_len 0) yields zeros; max_kv_splits=1 writes the output straight from stage 1."""
    num_q_heads, num_kv_heads, head_dim = heads
    seq_lens = [1, 19, 70, 0, 33]
    pool = PoolBatch([max(n, 1) for n in seq_lens], num_kv_heads, head_dim, dtype, seed=3)
    q = torch.randn(len(seq_lens), num_q_heads, head_dim).to(dtype)
    lens = torch.tensor(seq_lens, dtype=torch.int32)
    scaling = head_dim**-0.5
    args = (q, pool.k_buffer, pool.v_buffer, pool.req_to_token, pool.req_pool_indices, lens, scaling)
    counters = torch.zeros(len(seq_lens) * num_kv_heads + 3, dtype=torch.int32)
    tol = {"atol": 2e-5, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 4e-3, "rtol": 4e-3}
    for splits, min_len in ((3, 8), (16, 2), (5, 64)):
        two_stage = decode_attention(*args, max_kv_splits=splits, min_split_len=min_len)
        single = decode_attention(*args, max_kv_splits=splits, min_split_len=min_len, counters=counters)
        assert not counters.any(), "the kernel must leave its counters at zero"
        torch.testing.assert_close(single.float(), two_stage.float(), atol=1e-3 if dtype != torch.float32 else 1e-6,
                                   rtol=1e-3 if dtype != torch.float32 else 1e-5)
        assert torch.equal(single[3], torch.zeros_like(single[3]))
        for i, n in enumerate(seq_lens):
            if n:
                s = pool.slots(i)[:n]
                ref = attention_ref(q[i : i + 1], pool.k_buffer[s], pool.v_buffer[s], scaling)[0]
                torch.testing.assert_close(single[i].float(), ref, **tol)
    one = decode_attention(*args, max_kv_splits=1)  # no stage 2, no counters needed
    torch.testing.assert_close(one.float(), two_stage.float(), **tol)
    assert torch.equal(one[3], torch.zeros_like(one[3]))


def test_decode_single_pass_checks_counters() -> None:
    pool = PoolBatch([4, 4], 2, 64, torch.float32)
    q = torch.randn(2, 4, 64)
    args = (q, pool.k_buffer, pool.v_buffer, pool.req_to_token, pool.req_pool_indices,
            torch.tensor([4, 4], dtype=torch.int32), 0.125)
    with pytest.raises(AssertionError, match="counters"):
        decode_attention(*args, counters=torch.zeros(3, dtype=torch.int32))
    with pytest.raises(AssertionError, match="int32"):
        decode_attention(*args, counters=torch.zeros(8, dtype=torch.int64))


@pytest.mark.parametrize("dtype", DTYPES)
def test_triton_backend_fused_rotary_matches_torch_native(dtype: torch.dtype) -> None:
    """The backend's `rotary=` path (rotary + KV store in one launch, single-pass decode) vs rotating with
    the torch reference first and attending with torch_native; pools must be identical."""
    from backend_util import BackendScenario, qkv_for

    from engine.attention import AttentionLayerSpec
    from engine.attention.torch_native import TorchNativeAttentionBackend
    from engine.attention.triton_backend import TritonAttentionBackend

    num_q_heads, num_kv_heads, head_dim = 8, 2, 64
    sc = BackendScenario([0, 13, 30], 2, num_kv_heads, head_dim, dtype, "cpu")
    ref_pool = sc.clone_pool()
    backend = TritonAttentionBackend(sc.pool, max_kv_splits=2)
    reference = TorchNativeAttentionBackend(ref_pool)
    cache = build_rope_cache(head_dim, 256, 10000.0)
    atol = 1e-4 if dtype == torch.float32 else 3e-3
    layers = [AttentionLayerSpec(i, num_q_heads, num_kv_heads, head_dim, head_dim**-0.5) for i in range(2)]
    for fb in (sc.extend_batch([6, 1, 9]), sc.decode_batch(), sc.decode_batch()):
        backend.init_forward_metadata(fb)
        reference.init_forward_metadata(fb)
        for layer in layers:
            q, k, v = qkv_for(fb.num_tokens, num_q_heads, num_kv_heads, head_dim, dtype, "cpu")
            q3, k3 = q.view(-1, num_q_heads, head_dim), k.view(-1, num_kv_heads, head_dim)
            q_rot = rotary_ref(q3, fb.positions, cache.cos, cache.sin).reshape(q.shape)
            k_rot = rotary_ref(k3, fb.positions, cache.cos, cache.sin).reshape(k.shape)
            expected = reference.forward(q_rot, k_rot, v.clone(), layer, fb)
            out = backend.forward(q, k, v, layer, fb, rotary=(fb.positions, cache))
            torch.testing.assert_close(out.float(), expected.float(), atol=atol, rtol=atol)
    assert not backend._decode_counters.any()
    for layer in range(2):
        torch.testing.assert_close(sc.pool.k_buffers[layer], ref_pool.k_buffers[layer], atol=atol, rtol=atol)
        assert torch.equal(sc.pool.v_buffers[layer], ref_pool.v_buffers[layer])


# (q dtype, pool dtype): a pool of q's dtype, and fp8 pools with a 16-bit q (fp8 pools decode fp32 q through the
# unfused path's own test)
FUSED_ROTARY_DTYPES = [(torch.float32, torch.float32), (torch.float16, torch.float16), (torch.bfloat16, torch.bfloat16),
                       (torch.float16, torch.float8_e4m3fn), (torch.bfloat16, torch.float8_e4m3fn)]


@pytest.mark.parametrize(("dtype", "pool_dtype"), FUSED_ROTARY_DTYPES,
                         ids=["fp32", "fp16", "bf16", "fp16-pool-fp8", "bf16-pool-fp8"])
@pytest.mark.parametrize("heads", [(4, 2, 64), (3, 1, 80)])
@pytest.mark.parametrize("single_pass", [False, True], ids=["two-stage", "single-pass"])
@pytest.mark.parametrize("early_kv", [False, True], ids=["plain", "early-kv"])
def test_decode_attention_fused_rotary(heads: tuple[int, int, int], dtype: torch.dtype, pool_dtype: torch.dtype,
                                       single_pass: bool, early_kv: bool) -> None:
    """`decode_attention(rotary=DecodeRotary(...))` gives the same output and the same pool, bit for bit, as
    `rotary_kv_store` followed by `decode_attention`: the rotation (fp32, rounded to q's dtype), the K/V
    written at `loc` (fp8: divided by the scales) and the attention over them, with the new token in the last
    split of 1 to several (seq_lens 1 / 9 / 70 with splits of 8). A padded row (seq_len 0) stores nothing.
    Early KV (the new token's row from registers, the first rows loaded before the wait) changes none of it."""
    _check_fused_rotary(heads, dtype, pool_dtype, single_pass, [9, 1, 70, 0], 8, "cpu", early_kv=early_kv)


@pytest.mark.parametrize(("dtype", "pool_dtype"), [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16),
                                                   (torch.bfloat16, torch.float8_e4m3fn)], ids=["fp32", "bf16", "bf16-pool-fp8"])
@pytest.mark.parametrize("seq_len", [1, 20, 64, 65, 200, 331])
def test_decode_attention_early_kv_long_splits(dtype: torch.dtype, pool_dtype: torch.dtype, seq_len: int) -> None:
    """Early KV with splits longer than its early rows: 64 rows before the wait, then 64-row blocks (the tiles of
    the plain launch it is compared with), the new token in the early rows, in a later block, or alone."""
    _check_fused_rotary((4, 2, 64), dtype, pool_dtype, True, [seq_len], 2, "cpu", early_kv=True,
                        tiles=DecodeTiles(block_n=64))


@pytest.mark.gpu
@pytest.mark.parametrize("pool_dtype", [torch.bfloat16, torch.float8_e4m3fn], ids=["pool-bf16", "pool-fp8"])
@pytest.mark.parametrize("single_pass", [False, True], ids=["two-stage", "single-pass"])
def test_decode_attention_fused_rotary_gpu(pool_dtype: torch.dtype, single_pass: bool) -> None:
    """The same on the GPU, 8B attention shape (32 q / 8 kv heads, head_dim 128), the new token in splits of
    64 and 128 tokens (batch-1 single pass at 3000 tokens, a short row, a padded row): compiled code may
    contract the rotation into FMAs, and both kernels must do it alike."""
    _check_fused_rotary((32, 8, 128), torch.bfloat16, pool_dtype, single_pass, [3000, 5, 700, 0], 32, "cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("pool_dtype", [torch.bfloat16, torch.float8_e4m3fn], ids=["pool-bf16", "pool-fp8"])
@pytest.mark.parametrize("seq_len", [5, 64, 700, 3000])
def test_decode_attention_early_kv_gpu(pool_dtype: torch.dtype, seq_len: int) -> None:
    """Early KV as the engine launches it at batch 1 (a PDL launch on Hopper, single pass, 8B attention shape),
    bit for bit against the plain launch with the same 64-row tiles: splits of 64 tokens (all rows loaded before
    the wait) and of 125 (3000 tokens, past 1024 the splits are >= 128: the loop after the wait)."""
    _check_fused_rotary((32, 8, 128), torch.bfloat16, pool_dtype, True, [seq_len], 32, "cuda", early_kv=True,
                        tiles=DecodeTiles(block_n=64))


@pytest.mark.gpu
def test_decode_attention_early_kv_stamps_gpu(monkeypatch) -> None:
    """The STAMPS debug hook (bench/attention_stamps.py): the same output bit for bit, and each active program's
    stamps in order (start <= before the wait <= after it <= end); inactive splits write nothing."""
    from kernels import decode_stamps

    stamps = torch.zeros(8 * 32, len(decode_stamps.FIELDS), dtype=torch.int64, device="cuda")
    monkeypatch.setattr(decode_stamps, "STAMPS", [stamps])
    monkeypatch.setattr(decode_stamps, "_launches", 0)
    _check_fused_rotary((32, 8, 128), torch.bfloat16, torch.bfloat16, True, [640], 32, "cuda", early_kv=True,
                        tiles=DecodeTiles(block_n=64))
    rows = stamps.view(32, 8, 5)  # [split, kv head, field]
    active, idle = rows[:10], rows[10:]  # 640 tokens: ten 64-token splits
    assert bool((active[..., 0] > 0).all()) and not idle.any()
    assert bool((active[..., 0] <= active[..., 1]).all() and (active[..., 1] <= active[..., 2]).all()
                and (active[..., 2] <= active[..., 3]).all())
    assert bool((active[..., 4] >= 0).all())  # %smid (virtual SM ids may exceed the SM count: no upper bound)


@pytest.mark.gpu
@pytest.mark.parametrize("batch", [64, 256])
@pytest.mark.parametrize("pool_dtype", [torch.bfloat16, torch.float8_e4m3fn], ids=["pool-bf16", "pool-fp8"])
def test_decode_attention_fused_rotary_large_batch_gpu(batch: int, pool_dtype: torch.dtype) -> None:
    """Large decode batches (the engine takes the fused path at every batch size): 64 / 256 rows of 1-1000
    tokens, two-stage merge with the engine's split count for that batch."""
    lens = torch.randint(1, 1000, (batch,), generator=torch.Generator().manual_seed(batch)).tolist()
    _check_fused_rotary((32, 8, 128), torch.bfloat16, pool_dtype, False, lens, 8, "cuda")


def _check_fused_rotary(heads: tuple[int, int, int], dtype: torch.dtype, pool_dtype: torch.dtype, single_pass: bool,
                        seq_lens: list[int], max_kv_splits: int, device: str, early_kv: bool = False,
                        tiles: DecodeTiles | None = None) -> None:
    num_q_heads, num_kv_heads, head_dim = heads
    pool = PoolBatch([max(n, 1) for n in seq_lens], num_kv_heads, head_dim, torch.float32, device=device, seed=5)
    k_scale, v_scale = (0.5, 0.25) if pool_dtype == torch.float8_e4m3fn else (1.0, 1.0)
    k_buffer, v_buffer = pool.k_buffer.to(pool_dtype), pool.v_buffer.to(pool_dtype)
    batch = len(seq_lens)
    q_size, kv_size = num_q_heads * head_dim, num_kv_heads * head_dim
    qkv = (torch.randn(batch, q_size + 2 * kv_size, device=device) * 2).to(dtype)  # strided views of one projection
    q, k, v = qkv.split([q_size, kv_size, kv_size], dim=-1)
    q = q.view(batch, num_q_heads, head_dim)
    k, v = k.view(batch, num_kv_heads, head_dim), v.view(batch, num_kv_heads, head_dim)
    cache = build_rope_cache(head_dim, 8192, 500000.0, LLAMA3_SCALING, device=device)
    offsets = torch.tensor([100, 0, 7, 0] * (batch // 4 + 1))[:batch]  # positions past seq_len - 1 (radix reuse)
    positions = (torch.tensor([n - 1 if n else 0 for n in seq_lens]) + offsets).to(device)
    # each request's newest slot (the last of its seq_len); the padded row points at the scratch slot 0
    loc = torch.stack([pool.slots(i)[n - 1] if n else torch.tensor(0, device=device)
                       for i, n in enumerate(seq_lens)])
    lens = torch.tensor(seq_lens, dtype=torch.int32, device=device)
    kw = dict(k_scale=k_scale, v_scale=v_scale, max_kv_splits=max_kv_splits, tiles=tiles,
              **({"min_split_len": 8} if device == "cpu" else {}),
              counters=torch.zeros(batch * num_kv_heads, dtype=torch.int32, device=device) if single_pass else None)

    ref_k, ref_v, ref_q = k_buffer.clone(), v_buffer.clone(), q.clone()
    rotary_kv_store(ref_q, k.clone(), v, ref_k, ref_v, positions, loc, cache, k_scale=k_scale, v_scale=v_scale)
    expected = decode_attention(ref_q, ref_k, ref_v, pool.req_to_token, pool.req_pool_indices, lens,
                                head_dim**-0.5, **kw)

    q_before, k_before = q.clone(), k.clone()
    out = decode_attention(q, k_buffer, v_buffer, pool.req_to_token, pool.req_pool_indices, lens, head_dim**-0.5,
                           rotary=DecodeRotary(k, v, positions, loc, cache), early_kv=early_kv, **kw)
    assert torch.equal(out, expected)
    live = loc[lens > 0]  # the unfused path also writes the padded row's scratch slot; the fused one does not
    assert torch.equal(k_buffer[live].float(), ref_k[live].float()) and torch.equal(v_buffer[live].float(),
                                                                                     ref_v[live].float())
    others = torch.ones(k_buffer.shape[0], dtype=torch.bool, device=device)
    others[loc] = False
    assert torch.equal(k_buffer[others].float(), ref_k[others].float()), "only the new tokens' slots change"
    assert torch.equal(q, q_before) and torch.equal(k, k_before), "q and k stay unrotated in memory"
    if kw["counters"] is not None:
        assert not kw["counters"].any()
