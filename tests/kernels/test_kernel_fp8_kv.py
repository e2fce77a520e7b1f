"""FP8 (e4m3) KV cache in the kernels and backends: the Triton stores quantize exactly as the torch
pool does (bit for bit), and decode / extend attention over an fp8 pool match a torch reference that
attends to the dequantized pool (stored value x scale). CPU runs go through the Triton interpreter;
the `gpu` tests repeat them on CUDA at serving sizes, FlashInfer included."""

from __future__ import annotations

import pytest
import torch
from backend_util import BackendScenario, qkv_for
from kernel_ref import PoolBatch, attention_ref

from engine.attention import AttentionLayerSpec
from engine.attention.torch_native import TorchNativeAttentionBackend
from engine.attention.triton_backend import TritonAttentionBackend
from engine.mem.kv_pool import FP8_E4M3_MAX, FP8_KV_DTYPE, quantize_fp8
from kernels import (
    apply_rotary,
    build_rope_cache,
    decode_attention,
    extend_attention,
    rotary_kv_store,
    store_kv,
)
from kernels.decode_attention import DecodeTiles

# Deliberately not powers of two: x / scale must round the same way in Triton (div_rn) and torch.
K_SCALE, V_SCALE = 0.37, 1.9
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def fp8_pool(pool: PoolBatch, k_scale: float, v_scale: float) -> tuple[torch.Tensor, ...]:
    """The pool's rows quantized to fp8 (what the kernels read) and dequantized in fp32 (the reference)."""
    k8, v8 = quantize_fp8(pool.k_buffer, k_scale), quantize_fp8(pool.v_buffer, v_scale)
    return k8, v8, k8.float() * k_scale, v8.float() * v_scale


def test_quantize_fp8_round_trip() -> None:
    x = torch.randn(4096) * 3
    x[:4] = torch.tensor([1e4, -1e4, 0.0, 448 * 0.5])
    stored = quantize_fp8(x, 0.5)
    assert stored.dtype == FP8_KV_DTYPE and not stored.float().isnan().any()
    back = stored.float() * 0.5
    assert back[0] == FP8_E4M3_MAX * 0.5 and back[1] == -FP8_E4M3_MAX * 0.5  # saturates, never NaN
    assert back[2] == 0 and back[3] == 224.0
    # e4m3 keeps 3 mantissa bits: round to nearest is within 2^-4 relative for normal values
    normal = x[4:].abs() > 2**-6 * 0.5
    rel = ((back[4:] - x[4:]).abs() / x[4:].abs())[normal]
    assert rel.max() <= 2**-4 + 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_store_kv_fp8_matches_torch_pool(dtype: torch.dtype) -> None:
    num_tokens, heads, head_dim, size = 9, 2, 64, 32
    k = (torch.randn(num_tokens, heads, head_dim) * 200).to(dtype)  # some beyond 448 * 0.37: saturate
    v = torch.randn(num_tokens, heads, head_dim).to(dtype)
    loc = torch.randperm(size - 1)[:num_tokens] + 1
    k_buf = torch.zeros(size, heads, head_dim, dtype=FP8_KV_DTYPE)
    v_buf = torch.zeros_like(k_buf)
    store_kv(k_buf, v_buf, loc, k, v, K_SCALE, V_SCALE)
    assert torch.equal(k_buf[loc].view(torch.uint8), quantize_fp8(k, K_SCALE).view(torch.uint8))
    assert torch.equal(v_buf[loc].view(torch.uint8), quantize_fp8(v, V_SCALE).view(torch.uint8))
    assert k_buf.float().abs().max() == FP8_E4M3_MAX


def test_store_kv_fp8_rounds_every_boundary_like_torch() -> None:
    """Every finite e4m3 value, every midpoint between neighbours (ties go to even), values just off
    the midpoints, signed zeros and subnormals: the Triton store rounds exactly as torch's cast."""
    finite = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(FP8_KV_DTYPE).float()
    finite = finite[~finite.isnan()].unique()  # sorted, -448 .. 448
    mids = (finite[1:] + finite[:-1]) / 2
    x = torch.cat([finite, mids, mids * (1 + 2**-20), mids * (1 - 2**-20), torch.tensor([-0.0, 1e-9, -1e-9])])
    x = torch.cat([x, torch.zeros((-x.numel()) % 64)]).view(-1, 1, 64)
    loc = torch.arange(1, x.shape[0] + 1)
    k_buf = torch.zeros(x.shape[0] + 1, 1, 64, dtype=FP8_KV_DTYPE)
    v_buf = torch.zeros_like(k_buf)
    store_kv(k_buf, v_buf, loc, x, -x, 1.0, 1.0)
    assert torch.equal(k_buf[loc].view(torch.uint8), quantize_fp8(x, 1.0).view(torch.uint8))
    assert torch.equal(v_buf[loc].view(torch.uint8), quantize_fp8(-x, 1.0).view(torch.uint8))


def test_rotary_kv_store_fp8_matches_unfused() -> None:
    num_tokens, num_q_heads, num_kv_heads, head_dim, size = 5, 4, 2, 64, 16
    cache = build_rope_cache(head_dim, 2048, 10000.0, None)
    positions = torch.randint(0, 2048, (num_tokens,))
    loc = torch.randperm(size - 1)[:num_tokens] + 1
    q, k, v = (torch.randn(num_tokens, h, head_dim) * 30 for h in (num_q_heads, num_kv_heads, num_kv_heads))
    q_ref, k_ref = q.clone(), k.clone()
    apply_rotary(q_ref, k_ref, positions, cache)
    ref_kb = torch.zeros(size, num_kv_heads, head_dim, dtype=FP8_KV_DTYPE)
    ref_vb = torch.zeros_like(ref_kb)
    store_kv(ref_kb, ref_vb, loc, k_ref, v, K_SCALE, V_SCALE)
    k_buf, v_buf = torch.zeros_like(ref_kb), torch.zeros_like(ref_kb)
    rotary_kv_store(q, k, v, k_buf, v_buf, positions, loc, cache, k_scale=K_SCALE, v_scale=V_SCALE)
    assert torch.equal(q, q_ref)
    assert torch.equal(k_buf.view(torch.uint8), ref_kb.view(torch.uint8))
    assert torch.equal(v_buf.view(torch.uint8), ref_vb.view(torch.uint8))


def _check_decode(q_dtype: torch.dtype, heads: tuple[int, int, int], seq_lens: list[int], device: str,
                  tol: dict[str, float], **launch) -> None:
    num_q_heads, num_kv_heads, head_dim = heads
    pool = PoolBatch(seq_lens, num_kv_heads, head_dim, torch.float32, device, seed=len(seq_lens))
    k8, v8, k_ref, v_ref = fp8_pool(pool, K_SCALE, V_SCALE)
    q = torch.randn(len(seq_lens), num_q_heads, head_dim, device=device).to(q_dtype)
    lens = torch.tensor(seq_lens, dtype=torch.int32, device=device)
    scaling = head_dim**-0.5
    out = decode_attention(q, k8, v8, pool.req_to_token, pool.req_pool_indices, lens, scaling,
                           k_scale=K_SCALE, v_scale=V_SCALE, **launch)
    assert out.dtype == q_dtype
    for i in range(len(seq_lens)):
        s = pool.slots(i)
        ref = attention_ref(q[i : i + 1], k_ref[s], v_ref[s], scaling)[0]
        torch.testing.assert_close(out[i].float(), ref, **tol)


def _check_extend(q_dtype: torch.dtype, heads: tuple[int, int, int], prefix_lens: list[int],
                  extend_lens: list[int], device: str, tol: dict[str, float], **blocks) -> None:
    num_q_heads, num_kv_heads, head_dim = heads
    pool = PoolBatch([p + e for p, e in zip(prefix_lens, extend_lens)], num_kv_heads, head_dim, torch.float32,
                     device, seed=3)
    k8, v8, k_ref, v_ref = fp8_pool(pool, K_SCALE, V_SCALE)
    num_tokens = sum(extend_lens)
    q, k, v = (torch.randn(num_tokens, h, head_dim, device=device).to(q_dtype)
               for h in (num_q_heads, num_kv_heads, num_kv_heads))
    starts = torch.tensor([0, *extend_lens[:-1]]).cumsum(0).to(device, torch.int32)
    scaling = head_dim**-0.5
    out = extend_attention(q, k, v, k8, v8, pool.req_to_token, pool.req_pool_indices,
                           torch.tensor(prefix_lens, dtype=torch.int32, device=device),
                           torch.tensor(extend_lens, dtype=torch.int32, device=device), starts, max(extend_lens),
                           scaling, k_scale=K_SCALE, v_scale=V_SCALE, **blocks)
    for i, (p, e) in enumerate(zip(prefix_lens, extend_lens)):
        s0 = int(starts[i])
        prefix = pool.slots(i, p)
        # the prefix comes from the fp8 pool, the new tokens unquantized from the ragged k/v
        keys = torch.cat([k_ref[prefix], k[s0 : s0 + e].float()])
        values = torch.cat([v_ref[prefix], v[s0 : s0 + e].float()])
        ref = attention_ref(q[s0 : s0 + e], keys, values, scaling)
        torch.testing.assert_close(out[s0 : s0 + e].float(), ref, **tol)


FP32_TOL = {"atol": 2e-5, "rtol": 1e-4}
HALF_TOL = {"atol": 4e-3, "rtol": 4e-3}
BF16_TOL = {"atol": 1e-2, "rtol": 1e-2}


@pytest.mark.parametrize("q_dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("heads", [(4, 4, 64), (8, 2, 128)])
def test_decode_attention_fp8(heads: tuple[int, int, int], q_dtype: torch.dtype) -> None:
    # bf16 q runs the fp16 upcast (the interpreter cannot convert fp8 to bf16, so the GPU test covers the
    # old bf16 upcast); the output is still rounded to bf16: up to half a bf16 ulp (2^-9 relative) on top.
    tol = FP32_TOL if q_dtype == torch.float32 else BF16_TOL if q_dtype == torch.bfloat16 else HALF_TOL
    _check_decode(q_dtype, heads, [1, 19, 70], "cpu", tol, max_kv_splits=3, min_split_len=8)
    _check_decode(q_dtype, heads, [5, 33], "cpu", tol, max_kv_splits=4, min_split_len=4,
                  counters=torch.zeros(8, dtype=torch.int32))  # single-pass merge


def test_decode_attention_fp8_clamps_bf16_q_to_fp16_range() -> None:
    """A bf16 q beyond fp16's range is clamped before the fp16 dot, never turned into inf / NaN."""
    pool = PoolBatch([1, 9], 2, 64, torch.float32, "cpu", seed=5)
    k8, v8, k_ref, v_ref = fp8_pool(pool, K_SCALE, V_SCALE)
    q = torch.randn(2, 4, 64) * 1e-3
    q[:, :, 0] = 1e6  # every head has one component 15x past fp16's max
    q = q.to(torch.bfloat16)
    lens = torch.tensor([1, 9], dtype=torch.int32)
    out = decode_attention(q, k8, v8, pool.req_to_token, pool.req_pool_indices, lens, 64**-0.5,
                           k_scale=K_SCALE, v_scale=V_SCALE)
    assert torch.isfinite(out.float()).all()
    clamped = q.float().clamp(-65504, 65504)
    for i in range(2):
        s = pool.slots(i)
        ref = attention_ref(clamped[i : i + 1], k_ref[s], v_ref[s], 64**-0.5)[0]
        torch.testing.assert_close(out[i].float(), ref, atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("q_dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_decode_attention_fp8_convert_in_load_layout(q_dtype: torch.dtype) -> None:
    """DecodeTiles.fp8_convert (K and V converted by `_e4m3_to_f16`): the interpreter runs its plain-cast
    branch (the inline asm is CUDA only: test_decode_attention_fp8_gpu); an fp32 q ignores the option."""
    tol = FP32_TOL if q_dtype == torch.float32 else BF16_TOL if q_dtype == torch.bfloat16 else HALF_TOL
    _check_decode(q_dtype, (8, 2, 64), [1, 19, 70], "cpu", tol, max_kv_splits=3, min_split_len=8,
                  tiles=DecodeTiles(block_n=16, fp8_convert=3))
    with pytest.raises(AssertionError, match="fp8_convert"):
        _check_decode(q_dtype, (8, 2, 64), [3], "cpu", tol, tiles=DecodeTiles(fp8_convert=4))


@pytest.mark.parametrize("q_dtype", [torch.float32, torch.float16])
def test_extend_attention_fp8(q_dtype: torch.dtype) -> None:
    tol = FP32_TOL if q_dtype == torch.float32 else HALF_TOL
    _check_extend(q_dtype, (8, 2, 64), [0, 21, 40], [9, 1, 27], "cpu", tol, block_m=16, block_n=16)


def _compare_fp8_backends(make_backend, dtype: torch.dtype, device: str, heads: tuple[int, int, int],
                          prefix_lens: list[int], extend_lens: list[int], atol: float) -> None:
    """One extend and two decode steps over two layers with different scales: the backend vs torch_native
    on an fp8 pool. The pools must end bit-identical (same quantization). New K/V are drawn on the fp8
    grid (x scale), so the Triton extend kernel, which reads them unquantized from the ragged tensors,
    sees what torch_native reads back from the pool: outputs then agree to the compute dtype's rounding."""
    num_q_heads, num_kv_heads, head_dim = heads
    sc = BackendScenario(prefix_lens, 2, num_kv_heads, head_dim, dtype, device, kv_dtype=FP8_KV_DTYPE,
                         k_scales=[K_SCALE, 0.05], v_scales=[V_SCALE, 0.02])
    ref_pool = sc.clone_pool()
    backend, reference = make_backend(sc.pool), TorchNativeAttentionBackend(ref_pool)
    layers = [AttentionLayerSpec(i, num_q_heads, num_kv_heads, head_dim, head_dim**-0.5) for i in range(2)]
    for fb in (sc.extend_batch(extend_lens), sc.decode_batch(), sc.decode_batch()):
        backend.init_forward_metadata(fb)
        reference.init_forward_metadata(fb)
        for layer in layers:
            q, k, v = qkv_for(fb.num_tokens, num_q_heads, num_kv_heads, head_dim, dtype, device)
            k_scale, v_scale = sc.pool.scales(layer.layer_id)
            k.copy_(quantize_fp8(k, k_scale).float() * k_scale)  # k, v: views of one fused qkv
            v.copy_(quantize_fp8(v, v_scale).float() * v_scale)
            out = backend.forward(q, k, v, layer, fb)
            expected = reference.forward(q, k, v, layer, fb)
            assert out.shape == (fb.num_tokens, num_q_heads * head_dim) and out.dtype == dtype
            torch.testing.assert_close(out.float(), expected.float(), atol=atol, rtol=atol)
    for layer in range(2):
        assert torch.equal(sc.pool.k_buffers[layer].view(torch.uint8), ref_pool.k_buffers[layer].view(torch.uint8))
        assert torch.equal(sc.pool.v_buffers[layer].view(torch.uint8), ref_pool.v_buffers[layer].view(torch.uint8))


def test_triton_backend_fp8_matches_torch_native() -> None:
    _compare_fp8_backends(lambda pool: TritonAttentionBackend(pool, max_kv_splits=2), torch.float32, "cpu",
                          (8, 2, 64), prefix_lens=[0, 13, 30], extend_lens=[6, 1, 9], atol=1e-4)


# ---- GPU: serving sizes, bf16 queries -------------------------------------------------------------

@pytest.mark.gpu
@CUDA
@pytest.mark.parametrize("heads", [(32, 8, 128), (8, 8, 64), (28, 4, 128)])
def test_decode_attention_fp8_gpu(heads: tuple[int, int, int]) -> None:
    tol = {"atol": 2e-2, "rtol": 2e-2}
    seq_lens = [1, 2, 77, 300, 1500, 4000]
    for splits in (None, 1, 7):
        _check_decode(torch.bfloat16, heads, seq_lens, "cuda", tol, max_kv_splits=splits)
    _check_decode(torch.bfloat16, heads, seq_lens, "cuda", tol,
                  counters=torch.zeros(len(seq_lens) * heads[1], dtype=torch.int32, device="cuda"))
    # The bf16 upcast the fp16 one replaced stays selectable for the kernels_bench sweep; and other tiles.
    # fp8_convert: the inline-asm e4m3 -> fp16 conversion in the load layout (K, V, both), at the tiles the
    # sweep times; bf16 q with fp8_as_fp16=False ignores it.
    for tiles in (DecodeTiles(fp8_as_fp16=False), DecodeTiles(block_n=32, num_warps=2, num_stages=3),
                  DecodeTiles(block_n=128, num_warps=8, num_stages=2),
                  DecodeTiles(block_n=128, num_stages=3, fp8_convert=3), DecodeTiles(fp8_convert=2),
                  DecodeTiles(fp8_convert=1), DecodeTiles(block_n=64, num_stages=3, fp8_convert=3),
                  DecodeTiles(block_n=128, num_warps=8, num_stages=2, fp8_convert=3),
                  DecodeTiles(block_n=32, num_warps=2, num_stages=3, fp8_convert=3),
                  DecodeTiles(fp8_as_fp16=False, fp8_convert=3)):
        _check_decode(torch.bfloat16, heads, seq_lens, "cuda", tol, tiles=tiles)


@pytest.mark.gpu
@CUDA
@pytest.mark.parametrize("heads", [(32, 8, 128), (8, 8, 64)])
def test_extend_attention_fp8_gpu(heads: tuple[int, int, int]) -> None:
    _check_extend(torch.bfloat16, heads, [0, 700, 2100, 31], [300, 1, 129, 64], "cuda", {"atol": 2e-2, "rtol": 2e-2})


@pytest.mark.gpu
@CUDA
def test_store_kv_fp8_gpu() -> None:
    k = torch.randn(300, 8, 128, device="cuda", dtype=torch.bfloat16) * 200
    v = torch.randn_like(k)
    loc = (torch.randperm(999, device="cuda")[:300] + 1)
    k_buf = torch.zeros(1000, 8, 128, dtype=FP8_KV_DTYPE, device="cuda")
    v_buf = torch.zeros_like(k_buf)
    store_kv(k_buf, v_buf, loc, k, v, K_SCALE, V_SCALE)
    assert torch.equal(k_buf[loc].view(torch.uint8), quantize_fp8(k, K_SCALE).view(torch.uint8))
    assert torch.equal(v_buf[loc].view(torch.uint8), quantize_fp8(v, V_SCALE).view(torch.uint8))


@pytest.mark.gpu
@CUDA
@pytest.mark.parametrize("heads", [(32, 8, 128), (16, 2, 128)])
def test_triton_backend_fp8_gpu(heads: tuple[int, int, int]) -> None:
    _compare_fp8_backends(TritonAttentionBackend, torch.bfloat16, "cuda", heads,
                          prefix_lens=[0, 700, 2100, 31], extend_lens=[300, 1, 129, 64], atol=2e-2)


@pytest.mark.gpu
@CUDA
@pytest.mark.parametrize("heads", [(32, 8, 128), (8, 8, 64)])
def test_flashinfer_backend_fp8_gpu(heads: tuple[int, int, int]) -> None:
    pytest.importorskip("flashinfer")
    from engine.attention.flashinfer_backend import FlashInferAttentionBackend

    _compare_fp8_backends(FlashInferAttentionBackend, torch.bfloat16, "cuda", heads,
                          prefix_lens=[0, 700, 2100], extend_lens=[300, 1, 129], atol=2e-2)
