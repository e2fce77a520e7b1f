"""Greedy outputs equal HF transformers token for token, under every scheduling configuration that
changes how KV is computed: radix on/off, chunked prefill, retraction under a tiny KV pool, TP=2 and
TP=4 (gloo on the CPU; the GPU runs NCCL through the same code, `bench/tp_bench.py`)."""

from __future__ import annotations

import random

import pytest

from engine import Engine
from tests.engine.hf_reference import hf_greedy

NEW_TOKENS = 32
ARCHS = ["llama", "qwen2", "qwen3"]
CONFIGS = {
    "radix": {},
    "no_radix": {"disable_radix_cache": True},
    "chunked16": {"chunked_prefill_size": 16},
    "small_kv": {"max_total_tokens": 360, "chunked_prefill_size": 64},
    "tp2": {"tp_size": 2},
}


def make_prompts(vocab: int, seed: int = 0) -> list[list[int]]:
    """16 prompts of 3..70 tokens; two groups share long prefixes (40 and 25 tokens)."""
    rng = random.Random(seed)

    def toks(n: int) -> list[int]:
        return [rng.randrange(10, vocab) for _ in range(n)]

    shared_a, shared_b = toks(40), toks(25)
    prompts = [shared_a + toks(rng.randrange(1, 30)) for _ in range(6)]
    prompts += [shared_b + toks(rng.randrange(1, 20)) for _ in range(4)]
    prompts += [toks(rng.randrange(3, 70)) for _ in range(6)]
    return prompts


@pytest.fixture(scope="module", params=ARCHS)
def arch_model(request, tiny_model_factory):
    path = tiny_model_factory(request.param)
    from tests.engine.hf_reference import hf_model

    vocab = hf_model(path).config.vocab_size
    prompts = make_prompts(vocab)
    expected = [hf_greedy(path, p, NEW_TOKENS) for p in prompts]
    return path, prompts, expected


@pytest.mark.parametrize("config", list(CONFIGS))
def test_greedy_matches_hf(arch_model, config):
    path, prompts, expected = arch_model
    params = {"max_new_tokens": NEW_TOKENS, "temperature": 0, "ignore_eos": True}
    with Engine(model_path=path, device="cpu", random_seed=0, **CONFIGS[config]) as engine:
        outs = engine.generate(input_ids=prompts, sampling_params=params)
        info = engine.get_server_info()
    got = [o["output_ids"] for o in outs]
    mismatches = [i for i, (g, e) in enumerate(zip(got, expected)) if g != e]
    assert not mismatches, f"{config}: prompts {mismatches} differ from HF; first: {got[mismatches[0]]} vs " \
                           f"{expected[mismatches[0]]}"
    for o in outs:
        assert o["meta_info"]["finish_reason"] == {"type": "length", "length": NEW_TOKENS}
        assert o["meta_info"]["completion_tokens"] == NEW_TOKENS
    if config == "small_kv":
        assert info["num_retractions"] > 0, "the small KV pool should have forced retraction"
    # Nothing leaks: every slot is either free or held by the (unlocked) radix tree.
    assert info["kv_protected_tokens"] == 0
    assert info["kv_free_tokens"] + info["kv_evictable_tokens"] == info["kv_total_tokens"]


def test_tp4_matches_hf(tiny_model_factory):
    """Four ranks, each with 2 of 8 query heads, 1 of 4 KV heads and a quarter of the MLP and vocab."""
    path = tiny_model_factory("llama_kv4")
    from tests.engine.hf_reference import hf_model

    prompts = make_prompts(hf_model(path).config.vocab_size, seed=2)[:8]
    expected = [hf_greedy(path, p, 16) for p in prompts]
    with Engine(model_path=path, device="cpu", random_seed=0, tp_size=4) as engine:
        outs = engine.generate(input_ids=prompts, sampling_params={"max_new_tokens": 16, "temperature": 0,
                                                                   "ignore_eos": True})
        assert engine.get_server_info()["tp_size"] == 4
    assert [o["output_ids"] for o in outs] == expected


@pytest.mark.parametrize("extra", [{}, {"schedule_policy": "lpm"}], ids=["fcfs", "lpm"])
def test_llama3_rope_scaling_tied_embeddings_sharded(tiny_model_factory, tmp_path, extra):
    """Llama 3.x rope scaling and tied embeddings, loaded from a sharded checkpoint."""
    import transformers

    src = tiny_model_factory("llama3")
    model = transformers.AutoModelForCausalLM.from_pretrained(src)
    sharded = tmp_path / "sharded"
    model.save_pretrained(sharded, max_shard_size="40KB", safe_serialization=True)
    transformers.AutoTokenizer.from_pretrained(src).save_pretrained(sharded)
    assert (sharded / "model.safetensors.index.json").exists()
    prompts = make_prompts(model.config.vocab_size, seed=1)[:8]
    expected = [hf_greedy(src, p, 16) for p in prompts]
    with Engine(model_path=str(sharded), device="cpu", **extra) as engine:
        outs = engine.generate(input_ids=prompts, sampling_params={"max_new_tokens": 16, "temperature": 0,
                                                                   "ignore_eos": True})
    assert [o["output_ids"] for o in outs] == expected
