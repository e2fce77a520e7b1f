"""GPU engine equivalence (`pytest -m gpu -o addopts="" tests/engine/test_gpu_engine.py`).

One small Llama (head_dim 64, so FlashInfer's kernels apply too) runs greedy through every GPU
configuration. In fp32 all must produce torch_native's eager tokens exactly: the configurations
differ in kernel choice and padded batch shapes, never in the math, and fp32 keeps greedy ties
away. FlashInfer has no fp32 kernels, so bf16 runs are compared by agreement (the common prefix of
each output) with triton eager in bf16. torch_native is no bf16 reference: its SDPA rounds
differently, and on an H200 (2026-11-22) triton and flashinfer both agreed with it on only 70% of
tokens, with identical outputs to each other. Prompts finish at different lengths so decode
batches shrink through padded CUDA-graph sizes.
"""

from __future__ import annotations

import random

import pytest
import torch

from engine import Engine
from tests.engine.hf_reference import greedy_agreement

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

EAGER = {"disable_cuda_graph": True, "disable_overlap_schedule": True}
CONFIGS = {
    "triton_eager": {"attention_backend": "triton", **EAGER},
    "triton_graph": {"attention_backend": "triton", "disable_overlap_schedule": True},
    "triton_graph_overlap": {"attention_backend": "triton"},
    "triton_graph_overlap_small_kv": {"attention_backend": "triton", "max_total_tokens": 700,
                                      "chunked_prefill_size": 64},
    # Small chunks keep prompts prefilling while earlier ones decode, so decodes ride along (mixed chunks).
    "triton_graph_overlap_mixed": {"attention_backend": "triton", "enable_mixed_chunk": True,
                                   "chunked_prefill_size": 64},
}
BF16_CONFIGS = {
    "triton_graph_overlap": {"attention_backend": "triton"},
    # The reference runs batch-1 steps through the fused GEMVs; this is the cuBLAS + small-kernel path.
    "triton_unfused_gemv": {"attention_backend": "triton", "disable_fused_gemv": True, **EAGER},
    "flashinfer": {"attention_backend": "flashinfer", **EAGER},
    "flashinfer_graph_overlap": {"attention_backend": "flashinfer"},
    # hybrid + mixed chunks is not judged here: free-running bf16 agreement is chaotic on this random model
    # (H200: 0.860, with every kernel it uses within bf16 rounding of fp32 teacher-forced;
    # tests/engine/test_gpu_flashinfer_hybrid.py checks the hybrid against fp32 that way).
}


def _build_model(out_dir: str) -> str:
    from tests.fixtures.tiny_models import build_gpu_llama

    return build_gpu_llama(out_dir, num_key_value_heads=2)


@pytest.fixture(scope="module")
def gpu_llama(tmp_path_factory) -> str:
    return _build_model(str(tmp_path_factory.mktemp("gpu_llama")))


def _prompts(vocab: int) -> list[list[int]]:
    rng = random.Random(0)
    shared = [rng.randrange(10, vocab) for _ in range(90)]
    prompts = [shared + [rng.randrange(10, vocab) for _ in range(rng.randrange(1, 40))] for _ in range(3)]
    prompts += [[rng.randrange(10, vocab) for _ in range(rng.randrange(5, 300))] for _ in range(6)]
    return prompts


# A fixed KV pool: pytest-xdist workers share one GPU, and the default pool (85 % of its memory) starves the others.
TEST_KV_TOKENS = 16384


def _run(path: str, dtype: str = "float32", **kwargs) -> list[list[int]]:
    kwargs.setdefault("max_total_tokens", TEST_KV_TOKENS)
    params = [{"max_new_tokens": 6 + 5 * i, "temperature": 0, "ignore_eos": True} for i in range(9)]
    with Engine(model_path=path, device="cuda", dtype=dtype, random_seed=0, cuda_graph_max_bs=16,
                skip_tokenizer_init=True, **kwargs) as engine:
        outs = engine.generate(input_ids=_prompts(384), sampling_params=params)
        info = engine.get_server_info()
    assert info["kv_protected_tokens"] == 0
    assert info["kv_free_tokens"] + info["kv_evictable_tokens"] == info["kv_total_tokens"]
    if kwargs.get("disable_overlap_schedule") is None and kwargs.get("attention_backend") == "triton":
        assert info["num_overlapped_steps"] > 0, "overlap scheduling never chained a decode step"
    return [o["output_ids"] for o in outs]


@pytest.fixture(scope="module")
def reference(gpu_llama) -> list[list[int]]:
    return _run(gpu_llama, attention_backend="torch_native", **EAGER)


@pytest.mark.parametrize("config", list(CONFIGS))
def test_matches_torch_native(gpu_llama: str, reference: list[list[int]], config: str) -> None:
    got = _run(gpu_llama, **CONFIGS[config])
    bad = [i for i, (g, e) in enumerate(zip(got, reference)) if g != e]
    assert not bad, f"{config}: prompts {bad} differ; first: {got[bad[0]]} vs {reference[bad[0]]}"


@pytest.fixture(scope="module")
def reference_bf16(gpu_llama) -> list[list[int]]:
    return _run(gpu_llama, dtype="bfloat16", attention_backend="triton", **EAGER)


@pytest.mark.parametrize("config", list(BF16_CONFIGS))
def test_bf16_agrees_with_triton_eager(gpu_llama: str, reference_bf16: list[list[int]], config: str) -> None:
    if BF16_CONFIGS[config]["attention_backend"] in ("flashinfer", "hybrid"):
        pytest.importorskip("flashinfer")
    got = _run(gpu_llama, dtype="bfloat16", **BF16_CONFIGS[config])
    assert all(len(g) == len(r) for g, r in zip(got, reference_bf16))
    score = greedy_agreement(got, reference_bf16)
    print(f"bf16 {config}: agreement with triton eager {score:.3f}")
    # Measured 0.963 (graphs + overlap) and 0.970 (flashinfer) on the H100: keep the bar just under that.
    assert score >= 0.95, f"{config}: bf16 greedy agrees with triton eager on only {score:.0%} of tokens"
