"""kv_store, RMSNorm, SiLU-and-mul and rotary kernels vs torch / HF references (CPU: Triton interpreter)."""

from __future__ import annotations

import pytest
import torch
from kernel_ref import rmsnorm_ref, rotary_ref

from kernels import apply_rotary, build_rope_cache, fused_add_rmsnorm, rmsnorm, silu_and_mul, store_kv
from kernels.rotary import rope_inv_freq

DTYPES = [torch.float32, torch.float16]
LLAMA3_SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 8192}


def _tol(dtype: torch.dtype) -> dict[str, float]:
    return {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 2e-3, "rtol": 2e-3}


@pytest.mark.parametrize("dtype", DTYPES)
def test_store_kv(dtype: torch.dtype) -> None:
    num_tokens, num_kv_heads, head_dim = 7, 2, 80
    k_buffer = torch.zeros(20, num_kv_heads, head_dim, dtype=dtype)
    v_buffer = torch.zeros_like(k_buffer)
    # fp32 inputs as strided views of a fused projection: the kernel casts to the pool dtype
    fused = torch.randn(num_tokens, 3 * num_kv_heads * head_dim)
    k = fused[:, : num_kv_heads * head_dim].view(num_tokens, num_kv_heads, head_dim)
    v = fused[:, num_kv_heads * head_dim : 2 * num_kv_heads * head_dim].view(num_tokens, num_kv_heads, head_dim)
    loc = torch.randperm(19)[:num_tokens] + 1
    store_kv(k_buffer, v_buffer, loc, k, v)
    assert torch.equal(k_buffer[loc], k.to(dtype)) and torch.equal(v_buffer[loc], v.to(dtype))
    untouched = torch.ones(20, dtype=torch.bool)
    untouched[loc] = False
    assert not k_buffer[untouched].any() and not v_buffer[untouched].any()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden", [96, 256])
def test_rmsnorm(dtype: torch.dtype, hidden: int) -> None:
    x = torch.randn(5, hidden).to(dtype)
    weight = (1 + 0.1 * torch.randn(hidden)).to(dtype)
    torch.testing.assert_close(rmsnorm(x, weight, 1e-6), rmsnorm_ref(x, weight, 1e-6), **_tol(dtype))
    # [T, H, D] per-head norm (Qwen3 q/k norm) goes through the N-d path
    x3 = torch.randn(3, 4, hidden).to(dtype)
    torch.testing.assert_close(rmsnorm(x3, weight, 1e-5), rmsnorm_ref(x3, weight, 1e-5), **_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_add_rmsnorm(dtype: torch.dtype) -> None:
    hidden = 160
    x = torch.randn(6, 2 * hidden).to(dtype)[:, :hidden]  # strided rows
    residual = torch.randn(6, hidden).to(dtype)
    weight = torch.randn(hidden).to(dtype)
    out, new_residual = fused_add_rmsnorm(x, residual, weight, 1e-6)
    expected_residual = x + residual
    assert torch.equal(new_residual, expected_residual)
    torch.testing.assert_close(out, rmsnorm_ref(expected_residual, weight, 1e-6), **_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("inter", [100, 1500])
def test_silu_and_mul(dtype: torch.dtype, inter: int) -> None:
    x = (3 * torch.randn(4, 2 * inter)).to(dtype)
    gate, up = x.chunk(2, dim=-1)
    expected = torch.nn.functional.silu(gate.float()).to(dtype) * up
    torch.testing.assert_close(silu_and_mul(x), expected, **_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head_dim", [64, 80])
def test_rotary(dtype: torch.dtype, head_dim: int) -> None:
    num_tokens, num_q_heads, num_kv_heads = 6, 4, 2
    cache = build_rope_cache(head_dim, 4096, 500000.0, LLAMA3_SCALING)
    qkv = torch.randn(num_tokens, (num_q_heads + 2 * num_kv_heads) * head_dim).to(dtype)
    q = qkv[:, : num_q_heads * head_dim].view(num_tokens, num_q_heads, head_dim)
    k = qkv[:, num_q_heads * head_dim : (num_q_heads + num_kv_heads) * head_dim].view(num_tokens, num_kv_heads, head_dim)
    positions = torch.tensor([0, 1, 2, 4000, 17, 900])
    q_expected = rotary_ref(q, positions, cache.cos, cache.sin)
    k_expected = rotary_ref(k, positions, cache.cos, cache.sin)
    v_before = qkv[:, (num_q_heads + num_kv_heads) * head_dim :].clone()
    apply_rotary(q, k, positions, cache)
    torch.testing.assert_close(q, q_expected, **_tol(dtype))
    torch.testing.assert_close(k, k_expected, **_tol(dtype))
    assert torch.equal(qkv[:, (num_q_heads + num_kv_heads) * head_dim :], v_before)  # v untouched


def test_rotary_matches_hf_llama3() -> None:
    """Cache + kernel against transformers' own llama3 inverse frequencies and apply_rotary_pos_emb."""
    transformers = pytest.importorskip("transformers")
    from transformers.models.llama import modeling_llama as hf

    config = transformers.LlamaConfig(hidden_size=256, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
                                      rope_theta=500000.0, rope_scaling=dict(LLAMA3_SCALING),
                                      max_position_embeddings=131072)
    rotary = hf.LlamaRotaryEmbedding(config)
    assert torch.equal(rotary.inv_freq, rope_inv_freq(64, 500000.0, LLAMA3_SCALING))
    positions = torch.tensor([0, 5, 8191, 9000, 20000])
    q = torch.randn(5, 4, 64)
    k = torch.randn(5, 2, 64)
    cos, sin = rotary(q, positions[None])  # [1, T, D]
    q_hf, k_hf = hf.apply_rotary_pos_emb(q.transpose(0, 1)[None], k.transpose(0, 1)[None], cos, sin)
    apply_rotary(q, k, positions, build_rope_cache(64, 20001, 500000.0, LLAMA3_SCALING))
    torch.testing.assert_close(q, q_hf[0].transpose(0, 1), atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(k, k_hf[0].transpose(0, 1), atol=2e-5, rtol=1e-5)


def test_rope_inv_freq_variants() -> None:
    plain = rope_inv_freq(64, 10000.0)
    assert torch.equal(rope_inv_freq(64, 10000.0, {"rope_type": "default"}), plain)
    assert torch.equal(rope_inv_freq(64, 10000.0, {"type": "linear", "factor": 2.0}), plain / 2.0)
    with pytest.raises(ValueError, match="yarn"):
        rope_inv_freq(64, 10000.0, {"rope_type": "yarn", "factor": 4.0})
