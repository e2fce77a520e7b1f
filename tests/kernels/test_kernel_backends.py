"""Triton and FlashInfer attention backends vs the torch_native reference on hand-built ForwardBatches."""

from __future__ import annotations

import sys

import pytest
import torch
from backend_util import BackendScenario, qkv_for

from engine.attention import AttentionLayerSpec
from engine.attention.flashinfer_backend import build_kv_indices
from engine.attention.torch_native import TorchNativeAttentionBackend
from engine.attention.triton_backend import TritonAttentionBackend


def _compare_backends(make_backend, dtype: torch.dtype, device: str, heads: tuple[int, int, int],
                      prefix_lens: list[int], extend_lens: list[int], atol: float) -> None:
    """One extend step then two decode steps, over two layers; outputs and pools must agree."""
    num_q_heads, num_kv_heads, head_dim = heads
    sc = BackendScenario(prefix_lens, 2, num_kv_heads, head_dim, dtype, device)
    ref_pool = sc.clone_pool()
    backend, reference = make_backend(sc.pool), TorchNativeAttentionBackend(ref_pool)
    layers = [AttentionLayerSpec(i, num_q_heads, num_kv_heads, head_dim, head_dim**-0.5) for i in range(2)]
    for fb in (sc.extend_batch(extend_lens), sc.decode_batch(), sc.decode_batch()):
        backend.init_forward_metadata(fb)
        reference.init_forward_metadata(fb)
        for layer in layers:
            q, k, v = qkv_for(fb.num_tokens, num_q_heads, num_kv_heads, head_dim, dtype, device)
            out = backend.forward(q, k, v, layer, fb)
            expected = reference.forward(q, k, v, layer, fb)
            assert out.shape == (fb.num_tokens, num_q_heads * head_dim) and out.dtype == dtype
            torch.testing.assert_close(out.float(), expected.float(), atol=atol, rtol=atol)
    for layer in range(2):
        assert torch.equal(sc.pool.k_buffers[layer], ref_pool.k_buffers[layer])
        assert torch.equal(sc.pool.v_buffers[layer], ref_pool.v_buffers[layer])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_triton_backend_matches_torch_native(dtype: torch.dtype) -> None:
    _compare_backends(lambda pool: TritonAttentionBackend(pool, max_kv_splits=2), dtype, "cpu", (8, 2, 64),
                      prefix_lens=[0, 13, 30], extend_lens=[6, 1, 9], atol=1e-4 if dtype == torch.float32 else 3e-3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_backend_fused_decode_rotary(dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch) -> None:
    """With rotary tables handed over, the triton backend's decode steps rotate and store inside the decode kernel
    (`DecodeRotary`); with `FUSED_DECODE_ROTARY` off they launch `rotary_kv_store` first. Outputs and pools must be
    the same bit for bit over an extend step and two decode steps (two layers)."""
    from engine.attention import triton_backend
    from kernels import build_rope_cache

    heads, cache = (8, 2, 64), build_rope_cache(64, 4096, 500000.0)
    runs = {}
    for fused in (False, True):
        monkeypatch.setattr(triton_backend, "FUSED_DECODE_ROTARY", fused)
        sc = BackendScenario([0, 13, 30], 2, heads[1], heads[2], dtype, "cpu")
        backend = TritonAttentionBackend(sc.pool, max_kv_splits=2)
        layers = [AttentionLayerSpec(i, heads[0], heads[1], heads[2], heads[2] ** -0.5) for i in range(2)]
        torch.manual_seed(1)
        outs = []
        for fb in (sc.extend_batch([6, 1, 9]), sc.decode_batch(), sc.decode_batch()):
            backend.init_forward_metadata(fb)
            for layer in layers:
                q, k, v = qkv_for(fb.num_tokens, *heads, dtype, "cpu")
                outs.append(backend.forward(q, k, v, layer, fb, rotary=(fb.positions, cache)))
        runs[fused] = (outs, sc.pool)
    for separate, fused in zip(runs[False][0], runs[True][0]):
        assert torch.equal(separate, fused)
    for layer in range(2):
        assert torch.equal(runs[False][1].k_buffers[layer], runs[True][1].k_buffers[layer])
        assert torch.equal(runs[False][1].v_buffers[layer], runs[True][1].v_buffers[layer])


def test_build_kv_indices() -> None:
    req_to_token = torch.arange(40, dtype=torch.int32).view(4, 10)
    kv = build_kv_indices(req_to_token, torch.tensor([2, 0, 3]), torch.tensor([3, 1, 4], dtype=torch.int32), [3, 1, 4])
    assert kv.indptr_cpu.tolist() == [0, 3, 4, 8] and kv.indptr_cpu.dtype == torch.int32
    assert kv.indices.tolist() == [20, 21, 22, 0, 30, 31, 32, 33] and kv.indices.dtype == torch.int32
    assert kv.last_page_len_cpu.tolist() == [1, 1, 1]


def test_flashinfer_backend_missing_package_is_clear(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.attention.flashinfer_backend import FlashInferAttentionBackend

    monkeypatch.setitem(sys.modules, "flashinfer", None)  # makes `import flashinfer` raise ImportError
    sc = BackendScenario([2], 1, 1, 16, torch.float32)
    with pytest.raises(ImportError, match="flashinfer-python"):
        FlashInferAttentionBackend(sc.pool)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("heads", [(32, 8, 128), (8, 8, 64), (16, 2, 128)])
def test_triton_backend_gpu(dtype: torch.dtype, heads: tuple[int, int, int]) -> None:
    _compare_backends(TritonAttentionBackend, dtype, "cuda", heads,
                      prefix_lens=[0, 700, 2100, 31], extend_lens=[300, 1, 129, 64], atol=2e-2)


@pytest.mark.gpu
@pytest.mark.parametrize("heads", [(32, 8, 128), (8, 8, 64)])
def test_flashinfer_backend_gpu(heads: tuple[int, int, int]) -> None:
    pytest.importorskip("flashinfer")
    from engine.attention.flashinfer_backend import FlashInferAttentionBackend

    _compare_backends(FlashInferAttentionBackend, torch.bfloat16, "cuda", heads,
                      prefix_lens=[0, 700, 2100], extend_lens=[300, 1, 129], atol=2e-2)


@pytest.mark.gpu
@pytest.mark.parametrize("contiguous", [True, False])
def test_flashinfer_dense_prefill_gpu(contiguous: bool) -> None:
    """A long one-request extend over one run of slots takes FlashInfer's ragged kernel (the causal mask
    aligned to the end of the prefix) and matches torch_native; scattered slots fall back to paged."""
    pytest.importorskip("flashinfer")
    from engine.attention.flashinfer_backend import FlashInferAttentionBackend

    heads, dtype = (32, 8, 128), torch.bfloat16
    # prefix + extend stays inside the scenario's 4096-token request rows
    sc = BackendScenario([2000], 2, heads[1], heads[2], dtype, "cuda", extra_tokens=2048, contiguous=contiguous)
    ref_pool = sc.clone_pool()
    backend = FlashInferAttentionBackend(sc.pool, dense_prefill_min_tokens=1024)
    reference = TorchNativeAttentionBackend(ref_pool)
    layers = [AttentionLayerSpec(i, heads[0], heads[1], heads[2], heads[2] ** -0.5) for i in range(2)]
    fb = sc.extend_batch([1500])
    backend.init_forward_metadata(fb)
    reference.init_forward_metadata(fb)
    assert (backend._dense_first is not None) == contiguous
    for layer in layers:
        q, k, v = qkv_for(fb.num_tokens, heads[0], heads[1], heads[2], dtype, "cuda")
        out = backend.forward(q, k, v, layer, fb)
        expected = reference.forward(q, k, v, layer, fb)
        torch.testing.assert_close(out.float(), expected.float(), atol=2e-2, rtol=2e-2)
    assert (backend._dense_prefill is not None) == contiguous
