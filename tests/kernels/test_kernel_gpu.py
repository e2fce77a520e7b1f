"""GPU kernel tests (`pytest -m gpu tests/kernels`): bf16/fp16, random ragged sizes, GQA 1/4/8, long prefixes."""

from __future__ import annotations

import random

import pytest
import torch
from kernel_ref import PoolBatch, attention_ref, rmsnorm_ref, rotary_ref

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

DTYPES = [torch.bfloat16, torch.float16]
HEADS = [(8, 8), (16, 4), (32, 4)]  # GQA group 1, 4, 8
HEAD_DIMS = [64, 128]
LLAMA3_SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 8192}


def _tol(dtype: torch.dtype) -> dict[str, float]:
    return {"atol": 2e-2, "rtol": 2e-2} if dtype == torch.bfloat16 else {"atol": 4e-3, "rtol": 4e-3}


def _rng(*key: object) -> random.Random:
    return random.Random(str(key))


@pytest.mark.parametrize("head_dim", HEAD_DIMS)
@pytest.mark.parametrize("heads", HEADS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_decode_attention_gpu(dtype: torch.dtype, heads: tuple[int, int], head_dim: int) -> None:
    from kernels import decode_attention

    num_q_heads, num_kv_heads = heads
    rng = _rng("decode", dtype, heads, head_dim)
    batch_size = rng.randint(1, 24)
    seq_lens = [rng.choice([1, 2, rng.randint(1, 300), rng.randint(300, 4000)]) for _ in range(batch_size)]
    pool = PoolBatch(seq_lens, num_kv_heads, head_dim, dtype, "cuda", seed=batch_size)
    q = torch.randn(batch_size, num_q_heads, head_dim, device="cuda").to(dtype)
    lens = torch.tensor(seq_lens, dtype=torch.int32, device="cuda")
    scaling = head_dim**-0.5
    outs = [decode_attention(q, pool.k_buffer, pool.v_buffer, pool.req_to_token, pool.req_pool_indices, lens,
                             scaling, max_kv_splits=splits) for splits in (None, 1, 7, 32)]
    for i in range(batch_size):
        s = pool.slots(i)
        ref = attention_ref(q[i : i + 1], pool.k_buffer[s], pool.v_buffer[s], scaling)[0]
        for out in outs:
            torch.testing.assert_close(out[i].float(), ref, **_tol(dtype))


@pytest.mark.parametrize("head_dim", HEAD_DIMS)
@pytest.mark.parametrize("heads", HEADS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_extend_attention_gpu(dtype: torch.dtype, heads: tuple[int, int], head_dim: int) -> None:
    from kernels import extend_attention

    num_q_heads, num_kv_heads = heads
    rng = _rng("extend", dtype, heads, head_dim)
    batch_size = rng.randint(1, 6)
    prefix_lens = [rng.choice([0, rng.randint(1, 200), rng.randint(200, 3000)]) for _ in range(batch_size)]
    extend_lens = [rng.choice([1, rng.randint(1, 130), rng.randint(130, 700)]) for _ in range(batch_size)]
    seq_lens = [p + e for p, e in zip(prefix_lens, extend_lens)]
    pool = PoolBatch(seq_lens, num_kv_heads, head_dim, dtype, "cuda", seed=batch_size)
    num_tokens = sum(extend_lens)
    q = torch.randn(num_tokens, num_q_heads, head_dim, device="cuda").to(dtype)
    k = torch.randn(num_tokens, num_kv_heads, head_dim, device="cuda").to(dtype)
    v = torch.randn(num_tokens, num_kv_heads, head_dim, device="cuda").to(dtype)
    starts = torch.tensor([0, *extend_lens[:-1]]).cumsum(0).to("cuda", torch.int32)

    def i32(xs: list[int]) -> torch.Tensor:
        return torch.tensor(xs, dtype=torch.int32, device="cuda")

    scaling = head_dim**-0.5
    out = extend_attention(q, k, v, pool.k_buffer, pool.v_buffer, pool.req_to_token, pool.req_pool_indices,
                           i32(prefix_lens), i32(extend_lens), starts, max(extend_lens), scaling)
    for i, (p, e) in enumerate(zip(prefix_lens, extend_lens)):
        s0 = int(starts[i])
        prefix = pool.slots(i, p)
        keys = torch.cat([pool.k_buffer[prefix], k[s0 : s0 + e]])
        values = torch.cat([pool.v_buffer[prefix], v[s0 : s0 + e]])
        ref = attention_ref(q[s0 : s0 + e], keys, values, scaling)
        torch.testing.assert_close(out[s0 : s0 + e].float(), ref, **_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_pointwise_kernels_gpu(dtype: torch.dtype) -> None:
    from kernels import apply_rotary, build_rope_cache, fused_add_rmsnorm, rmsnorm, silu_and_mul, store_kv

    hidden, num_tokens = 4096, 37
    x = torch.randn(num_tokens, hidden, device="cuda").to(dtype)
    residual = torch.randn_like(x)
    weight = (1 + 0.1 * torch.randn(hidden, device="cuda")).to(dtype)
    # One-ulp differences can come from the mean's summation order; anything more is a bug.
    ulp = {"atol": 1e-2, "rtol": 1e-2} if dtype == torch.bfloat16 else {"atol": 2e-3, "rtol": 2e-3}
    torch.testing.assert_close(rmsnorm(x, weight, 1e-5), rmsnorm_ref(x, weight, 1e-5), **ulp)
    out, new_residual = fused_add_rmsnorm(x, residual, weight, 1e-5)
    assert torch.equal(new_residual, x + residual)
    torch.testing.assert_close(out, rmsnorm_ref(x + residual, weight, 1e-5), **ulp)

    gate_up = torch.randn(num_tokens, 2 * 11008, device="cuda").to(dtype)
    gate, up = gate_up.chunk(2, dim=-1)
    torch.testing.assert_close(silu_and_mul(gate_up), torch.nn.functional.silu(gate) * up, **ulp)

    cache = build_rope_cache(128, 131072, 500000.0, LLAMA3_SCALING, device="cuda")
    q = torch.randn(num_tokens, 32, 128, device="cuda").to(dtype)
    k = torch.randn(num_tokens, 8, 128, device="cuda").to(dtype)
    positions = torch.randint(0, 131072, (num_tokens,), device="cuda")
    q_ref, k_ref = rotary_ref(q, positions, cache.cos, cache.sin), rotary_ref(k, positions, cache.cos, cache.sin)
    apply_rotary(q, k, positions, cache)
    torch.testing.assert_close(q, q_ref, **ulp)
    torch.testing.assert_close(k, k_ref, **ulp)

    k_buffer = torch.zeros(1000, 8, 128, device="cuda", dtype=dtype)
    v_buffer = torch.zeros_like(k_buffer)
    loc = torch.randperm(999, device="cuda")[:num_tokens] + 1
    store_kv(k_buffer, v_buffer, loc, k, q[:, :8])
    assert torch.equal(k_buffer[loc], k) and torch.equal(v_buffer[loc], q[:, :8])


@pytest.mark.parametrize("head_dim", HEAD_DIMS)
@pytest.mark.parametrize("heads", HEADS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_decode_single_pass_gpu(dtype: torch.dtype, heads: tuple[int, int], head_dim: int) -> None:
    """Single-pass decode (last-arriving split merges, atomic counters) vs the reference, repeated so a
    visibility race would show; the counters must come back zeroed after every launch."""
    from kernels import decode_attention

    num_q_heads, num_kv_heads = heads
    rng = _rng("decode1", dtype, heads, head_dim)
    batch_size = rng.randint(1, 24)
    seq_lens = [rng.choice([0, 1, 2, rng.randint(1, 300), rng.randint(300, 4000)]) for _ in range(batch_size)]
    seq_lens[0] = rng.randint(300, 4000)
    pool = PoolBatch([max(n, 1) for n in seq_lens], num_kv_heads, head_dim, dtype, "cuda", seed=batch_size)
    q = torch.randn(batch_size, num_q_heads, head_dim, device="cuda").to(dtype)
    lens = torch.tensor(seq_lens, dtype=torch.int32, device="cuda")
    scaling = head_dim**-0.5
    counters = torch.zeros(batch_size * num_kv_heads, dtype=torch.int32, device="cuda")
    args = (q, pool.k_buffer, pool.v_buffer, pool.req_to_token, pool.req_pool_indices, lens, scaling)
    for splits in (None, 1, 7, 32):
        first = decode_attention(*args, max_kv_splits=splits, counters=counters)
        for _ in range(20):
            again = decode_attention(*args, max_kv_splits=splits, counters=counters)
            assert torch.equal(again, first), f"max_kv_splits={splits}: results differ between launches"
        assert not counters.any()
        for i, n in enumerate(seq_lens):
            if n == 0:
                assert not first[i].any()
                continue
            s = pool.slots(i, n)
            ref = attention_ref(q[i : i + 1], pool.k_buffer[s], pool.v_buffer[s], scaling)[0]
            torch.testing.assert_close(first[i].float(), ref, **_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_rotary_kv_store_gpu(dtype: torch.dtype) -> None:
    from kernels import apply_rotary, build_rope_cache, rotary_kv_store, store_kv

    num_tokens, hq, hkv, d = 37, 32, 8, 128
    cache = build_rope_cache(d, 131072, 500000.0, LLAMA3_SCALING, device="cuda")
    qkv = torch.randn(num_tokens, (hq + 2 * hkv) * d, device="cuda").to(dtype)
    positions = torch.randint(0, 131072, (num_tokens,), device="cuda")
    loc = torch.randperm(999, device="cuda")[:num_tokens] + 1

    def views(t: torch.Tensor):
        q, k, v = t.split([hq * d, hkv * d, hkv * d], dim=-1)
        return q.view(-1, hq, d), k.view(-1, hkv, d), v.view(-1, hkv, d)

    ref = qkv.clone()
    q_r, k_r, v_r = views(ref)
    kb_ref = torch.zeros(1000, hkv, d, device="cuda", dtype=dtype)
    vb_ref = torch.zeros_like(kb_ref)
    apply_rotary(q_r, k_r, positions, cache)
    store_kv(kb_ref, vb_ref, loc, k_r, v_r)
    for write_k in (False, True):
        fused = qkv.clone()
        q, k, v = views(fused)
        kb, vb = torch.zeros_like(kb_ref), torch.zeros_like(kb_ref)
        rotary_kv_store(q, k, v, kb, vb, positions, loc, cache, write_k=write_k)
        # Same fp32 expression as apply_rotary; allow a last-ulp difference should codegen contract it otherwise.
        ulp = {"atol": 1e-2, "rtol": 1e-2}
        torch.testing.assert_close(q, q_r, **ulp)
        torch.testing.assert_close(kb, kb_ref, **ulp)
        assert torch.equal(vb, vb_ref)
        torch.testing.assert_close(k, k_r if write_k else views(qkv)[1], **ulp)


# (block_n, block_k, num_warps, num_stages, split_k); None: the launcher's own pick (table or defaults)
GEMV_TILES = {"picked": None, "pipelined": (16, 512, 4, 3, 1), "split4": (8, 512, 4, 1, 4),
              "split3_pipelined": (16, 256, 4, 2, 3)}


@pytest.mark.parametrize("tiles", GEMV_TILES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_gemv_gpu(dtype: torch.dtype, tiles: str) -> None:
    """Real projection shapes (Llama-3.1-8B, Qwen2.5-7B with its qkv bias) plus random ragged ones, every
    prologue / epilogue (incl. bias + residual written in place), for the picked tiles, a pipelined tile
    and two split-K tiles, vs fp32 math on the same rounded inputs; repeated launches bit-identical."""
    import torch.nn.functional as F

    from kernels.gemv import GemvConfig, _split_k_counters, fused_gemv
    from kernels.gemv_configs import pick_config

    cfg = GemvConfig(*GEMV_TILES[tiles]) if GEMV_TILES[tiles] else None
    rng = _rng("gemv", dtype)
    shapes = [(6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336), (4608, 3584), (3584, 18944)]
    shapes += [(rng.randrange(1, 3000), rng.randrange(1, 3000)) for _ in range(4)]
    for n, k in shapes:
        w = (torch.randn(n, k, device="cuda") / k ** 0.5).to(dtype)
        x = (torch.randn(1, k, device="cuda") * 4).to(dtype)
        gamma = (1 + 0.1 * torch.randn(k, device="cuda")).to(dtype)
        bias = torch.randn(n, device="cuda").to(dtype)
        residual = torch.randn(1, n, device="cuda").to(dtype)
        gate_up = torch.randn(1, 2 * k, device="cuda").to(dtype)
        gate, up = gate_up.float().chunk(2, dim=-1)
        act = (F.silu(gate).to(dtype).float() * up).to(dtype).float()
        normed = rmsnorm_ref(x, gamma, 1e-5).float()
        in_place = residual.clone()  # out aliasing residual: each output slice has one writer
        fused_gemv(x, w, norm_weight=gamma, eps=1e-5, bias=bias, residual=in_place, out=in_place, config=cfg)
        cases = [
            (fused_gemv(x, w, bias=bias, config=cfg), F.linear(x.float(), w.float(), bias.float())),
            (fused_gemv(x, w, norm_weight=gamma, eps=1e-5, config=cfg), F.linear(normed, w.float())),
            (fused_gemv(gate_up, w, silu_mul=True, residual=residual, config=cfg),
             residual.float() + F.linear(act, w.float()).to(dtype).float()),
            (in_place, residual.float() + F.linear(normed, w.float(), bias.float()).to(dtype).float()),
        ]
        for got, ref in cases:
            torch.testing.assert_close(got.float(), ref, **_tol(dtype), msg=f"{n}x{k} {cfg or pick_config(w.device, n, k)}")
        # Deterministic: split-K reduces its partials in a fixed order (no float atomics), so repeated
        # launches are bit-identical, and the arrival counters are back to zero for the next launch.
        first = fused_gemv(x, w, norm_weight=gamma, eps=1e-5, config=cfg)
        for _ in range(3):
            assert torch.equal(first, fused_gemv(x, w, norm_weight=gamma, eps=1e-5, config=cfg)), f"{n}x{k} {cfg}"
    torch.cuda.synchronize()
    assert int(_split_k_counters(w.device).abs().sum()) == 0
