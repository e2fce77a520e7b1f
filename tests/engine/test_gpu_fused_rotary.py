"""Decode with the rotary and K/V store inside the decode kernel (`DecodeRotary`, the triton backend's default)
against the separate `rotary_kv_store` launch (`TESSERA_FUSED_DECODE_ROTARY=0`), through the real engine
(`pytest -m gpu -o addopts="" tests/engine/test_gpu_fused_rotary.py`).

The fused kernel computes the same values with the same roundings (the CPU kernel test checks the pool and the
output bit for bit), so greedy runs, CUDA graphs and overlap scheduling on, must give the same tokens and the
same logprobs with it on and off: one request at a time (batch-1 graphs, the fused GEMV path) and three at
once, with a bf16 and an fp8 KV cache.
"""

from __future__ import annotations

import random

import pytest

from engine import Engine
from tests.engine.test_gpu_engine import TEST_KV_TOKENS

pytestmark = pytest.mark.gpu

FUSED_ENV = "TESSERA_FUSED_DECODE_ROTARY"


@pytest.fixture(scope="module")
def gpu_llama(tmp_path_factory) -> str:
    from tests.fixtures.tiny_models import build_gpu_llama

    return build_gpu_llama(str(tmp_path_factory.mktemp("gpu_llama_fused_rotary")), num_key_value_heads=2)


def _run(path: str, kv_cache_dtype: str) -> list[tuple[list[int], list[float]]]:
    rng = random.Random(1)
    prompts = [[rng.randrange(10, 384) for _ in range(rng.randrange(5, 300))] for _ in range(3)]
    params = {"max_new_tokens": 40, "temperature": 0, "ignore_eos": True}
    outs = []
    with Engine(model_path=path, device="cuda", dtype="bfloat16", random_seed=0, cuda_graph_max_bs=4,
                attention_backend="triton", skip_tokenizer_init=True, max_total_tokens=TEST_KV_TOKENS,
                kv_cache_dtype=kv_cache_dtype) as engine:
        for prompt in prompts:  # one at a time: batch-1 decode steps
            out = engine.generate(input_ids=prompt, sampling_params=params, return_logprob=True)
            outs.append((out["output_ids"], [lp for lp, _, _ in out["meta_info"]["output_token_logprobs"]]))
        batch = engine.generate(input_ids=prompts, sampling_params=params, return_logprob=True)
        for out in batch:  # three at once
            outs.append((out["output_ids"], [lp for lp, _, _ in out["meta_info"]["output_token_logprobs"]]))
    return outs


@pytest.mark.parametrize("kv_cache_dtype", ["auto", "fp8_e4m3"])
def test_fused_decode_rotary_greedy_identical_gpu(gpu_llama: str, kv_cache_dtype: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FUSED_ENV, "0")  # each engine's rank process is a fresh interpreter: it reads this
    separate = _run(gpu_llama, kv_cache_dtype)
    monkeypatch.setenv(FUSED_ENV, "1")
    fused = _run(gpu_llama, kv_cache_dtype)
    assert [ids for ids, _ in fused] == [ids for ids, _ in separate]
    assert [lps for _, lps in fused] == [lps for _, lps in separate], "the fused decode rotary changed the logits"
