"""Speculative decoding on the GPU (`pytest -m gpu -o addopts="" tests/engine/test_gpu_speculative.py`).

fp32 so greedy ties stay away: with triton attention, CUDA graphs for normal decode and the draft's
one-token steps, and eager EXTEND verification, speculative greedy output must equal the
non-speculative output token for token; the target as its own draft must accept every draft.
"""

from __future__ import annotations

import random

import pytest
import torch

from engine import Engine

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

GREEDY = {"max_new_tokens": 48, "temperature": 0, "ignore_eos": True}
BASE = {"attention_backend": "triton", "dtype": "float32", "random_seed": 0}


@pytest.fixture(scope="module")
def gpu_llama(tmp_path_factory) -> str:
    from tests.fixtures.tiny_models import build_gpu_llama

    return build_gpu_llama(str(tmp_path_factory.mktemp("gpu_llama_spec")), num_key_value_heads=2)


def _prompts(vocab: int) -> list[list[int]]:
    rng = random.Random(0)
    prompts = [[rng.randrange(10, vocab) for _ in range(rng.randrange(5, 200))] for _ in range(6)]
    motif = [rng.randrange(10, vocab) for _ in range(8)]
    return prompts + [motif * 12]


@pytest.fixture(scope="module")
def reference(gpu_llama):
    prompts = _prompts(384)
    with Engine(model_path=gpu_llama, **BASE) as engine:
        return prompts, [o["output_ids"] for o in engine.generate(input_ids=prompts, sampling_params=GREEDY)]


@pytest.mark.parametrize("spec", [
    {"speculative_algorithm": "ngram", "speculative_num_draft_tokens": 3},
    {"speculative_algorithm": "ngram", "speculative_num_draft_tokens": 5, "disable_radix_cache": True},
    {"speculative_model": "SELF", "speculative_num_draft_tokens": 4},
], ids=["ngram3", "ngram5_no_radix", "self_draft4"])
def test_gpu_speculative_greedy_identical(gpu_llama, reference, spec):
    prompts, expected = reference
    spec = {k: (gpu_llama if v == "SELF" else v) for k, v in spec.items()}
    with Engine(model_path=gpu_llama, **BASE, **spec) as engine:
        outs = engine.generate(input_ids=prompts, sampling_params=GREEDY)
        info = engine.get_server_info()
    assert [o["output_ids"] for o in outs] == expected
    assert info["spec_num_verify_steps"] > 0
    if "speculative_model" in spec:
        assert info["spec_accept_rate"] == 1.0
    assert info["kv_free_tokens"] + info["kv_evictable_tokens"] == info["kv_total_tokens"]
