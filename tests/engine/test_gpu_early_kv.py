"""Batch-1 decode with early-KV attention (`TESSERA_DECODE_EARLY_KV=1`: the attention kernel is a PDL launch
that reads the KV cache while the qkv GEMV before it streams, kernels/decode_attention.py) against the plain
launch, through the real engine (`pytest -m gpu -o addopts="" tests/engine/test_gpu_early_kv.py`). With it on, the
o projection after it is a PDL launch too (`TESSERA_PDL_O`, default on); off, neither is.

The early rows of a split are one 64-row tile where the plain kernel uses a 128-row one, so the softmax sum may
round differently in its last bit (the CPU kernel tests compare the two with equal tiles, bit for bit): greedy
tokens must be identical and logprobs equal to 1e-3, one request at a time (batch-1 graphs, the fused GEMV
path; prompts of 5-700 tokens with 128-token splits past 256, so both short splits and the long-split loop run)
and three at once (no early KV there), with bf16 and FP8 weights and a bf16 and an fp8 KV cache.
"""

from __future__ import annotations

import random

import pytest

from engine import Engine
from tests.engine.test_gpu_engine import TEST_KV_TOKENS

pytestmark = pytest.mark.gpu

EARLY_ENV = "TESSERA_DECODE_EARLY_KV"


@pytest.fixture(scope="module")
def gpu_llama(tmp_path_factory) -> str:
    from tests.fixtures.tiny_models import build_gpu_llama

    return build_gpu_llama(str(tmp_path_factory.mktemp("gpu_llama_early_kv")), num_key_value_heads=2)


def _run(path: str, kv_cache_dtype: str, quantization: str | None) -> list[tuple[list[int], list[float]]]:
    rng = random.Random(3)
    prompts = [[rng.randrange(10, 384) for _ in range(n)] for n in (5, 150, 700)]
    params = {"max_new_tokens": 40, "temperature": 0, "ignore_eos": True}
    outs = []
    with Engine(model_path=path, device="cuda", dtype="bfloat16", random_seed=0, cuda_graph_max_bs=4,
                attention_backend="triton", skip_tokenizer_init=True, max_total_tokens=TEST_KV_TOKENS,
                kv_cache_dtype=kv_cache_dtype, quantization=quantization) as engine:
        for prompt in prompts:  # one at a time: batch-1 decode steps
            out = engine.generate(input_ids=prompt, sampling_params=params, return_logprob=True)
            outs.append((out["output_ids"], [lp for lp, _, _ in out["meta_info"]["output_token_logprobs"]]))
        for out in engine.generate(input_ids=prompts, sampling_params=params, return_logprob=True):
            outs.append((out["output_ids"], [lp for lp, _, _ in out["meta_info"]["output_token_logprobs"]]))
    return outs


@pytest.mark.parametrize(("kv_cache_dtype", "quantization"), [("auto", None), ("fp8_e4m3", None), ("auto", "fp8")],
                         ids=["bf16", "kv-fp8", "weights-fp8"])
def test_early_kv_decode_matches_plain_gpu(gpu_llama: str, kv_cache_dtype: str, quantization: str | None,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # 128-token splits past 256 tokens: the 700-token prompt's splits are longer than the early rows (the loop runs)
    monkeypatch.setenv("TESSERA_DECODE_LONG_SPLIT_FROM", "256")
    monkeypatch.setenv(EARLY_ENV, "0")  # each engine's rank process is a fresh interpreter: it reads this
    plain = _run(gpu_llama, kv_cache_dtype, quantization)
    monkeypatch.setenv(EARLY_ENV, "1")
    early = _run(gpu_llama, kv_cache_dtype, quantization)
    assert [ids for ids, _ in early] == [ids for ids, _ in plain]
    worst = max(abs(a - b) for (_, x), (_, y) in zip(early, plain) for a, b in zip(x, y))
    assert worst <= 1e-3, f"early KV moved a logprob by {worst}"
