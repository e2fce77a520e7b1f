"""Offline Engine behaviour on one tiny Llama: prefix caching, logprobs vs HF, sampling controls,
finish reasons, streaming, abort and bad input."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from engine import Engine
from engine.client import EngineStartError
from engine.sampling_params import SamplingParamsError
from tests.engine.hf_reference import hf_greedy, hf_prompt_logprobs

GREEDY = {"temperature": 0, "ignore_eos": True}


@pytest.fixture(scope="module")
def engine(tiny_llama):
    with Engine(model_path=tiny_llama, device="cpu", random_seed=0, context_length=256) as e:
        yield e


def test_second_wave_reports_shared_prefix_as_cached(engine):
    assert engine.flush_cache()
    shared = list(range(20, 60))  # 40 tokens
    engine.generate(input_ids=[shared + [100, 101, 102], shared + [110, 111]],
                    sampling_params={"max_new_tokens": 4, **GREEDY})
    second = engine.generate(input_ids=[shared + [120, 121, 122, 123], shared + [130]],
                             sampling_params={"max_new_tokens": 4, **GREEDY})
    assert [o["meta_info"]["cached_tokens"] for o in second] == [40, 40]
    again = engine.generate(input_ids=shared + [120, 121, 122, 123], sampling_params={"max_new_tokens": 4, **GREEDY})
    # The whole prompt is cached except the last token, which must be recomputed for its logits.
    assert again["meta_info"]["cached_tokens"] == 43
    assert again["output_ids"] == second[0]["output_ids"]


def test_prompt_logprobs_match_hf(engine, tiny_llama):
    prompt = [5, 17, 99, 250, 31, 77, 8, 140, 12, 60]
    ref = hf_prompt_logprobs(tiny_llama, prompt)  # row i predicts token i+1
    for start in (0, 4):
        out = engine.generate(input_ids=prompt, sampling_params={"max_new_tokens": 3, **GREEDY},
                              return_logprob=True, logprob_start_len=start, top_logprobs_num=5)
        meta = out["meta_info"]
        entries = meta["input_token_logprobs"]
        assert len(entries) == len(prompt) - start
        for pos, (lp, tok, text) in zip(range(start, len(prompt)), entries):
            assert tok == prompt[pos] and text is None
            if pos == 0:
                assert lp is None
            else:
                assert abs(lp - ref[pos - 1, tok].item()) < 1e-4
        tops = meta["input_top_logprobs"]
        for pos, top in zip(range(start, len(prompt)), tops):
            if pos == 0:
                assert top is None
                continue
            vals, ids = ref[pos - 1].topk(5)
            assert [t[1] for t in top] == ids.tolist()
            assert torch.allclose(torch.tensor([t[0] for t in top]), vals, atol=1e-4)
        out_lps = meta["output_token_logprobs"]
        assert [t[1] for t in out_lps] == out["output_ids"]
        assert all(len(t) == 5 for t in meta["output_top_logprobs"])
        # The chosen greedy token is the top-1 entry.
        assert [t[0][1] for t in meta["output_top_logprobs"]] == out["output_ids"]


def test_logprob_text_when_asked(engine):
    out = engine.generate(input_ids=[5, 6, 7], sampling_params={"max_new_tokens": 2, **GREEDY},
                          return_logprob=True, logprob_start_len=0, return_text_in_logprobs=True)
    assert all(isinstance(e[2], str) for e in out["meta_info"]["output_token_logprobs"])


def test_seeded_sampling_reproduces_and_differs_by_seed(engine):
    prompt = [5, 17, 99, 250, 31]
    params = {"max_new_tokens": 16, "temperature": 1.0, "ignore_eos": True}
    a = engine.generate(input_ids=[prompt] * 3, sampling_params=[{**params, "sampling_seed": 7}] * 3)
    assert a[0]["output_ids"] == a[1]["output_ids"] == a[2]["output_ids"]
    b = engine.generate(input_ids=prompt, sampling_params={**params, "sampling_seed": 8})
    assert b["output_ids"] != a[0]["output_ids"]


def test_top_k_1_equals_greedy(engine, tiny_llama):
    prompt = [9, 8, 7, 6, 5, 4]
    out = engine.generate(input_ids=prompt, sampling_params={"max_new_tokens": 12, "temperature": 0.8,
                                                             "top_k": 1, "ignore_eos": True})
    assert out["output_ids"] == hf_greedy(tiny_llama, prompt, 12)


def test_finish_reasons(engine, tiny_llama):
    prompt = [9, 8, 7, 6, 5, 4]
    ref = hf_greedy(tiny_llama, prompt, 12)
    out = engine.generate(input_ids=prompt, sampling_params={"max_new_tokens": 12, "temperature": 0,
                                                             "stop_token_ids": [ref[3]]})
    first = ref.index(ref[3])
    assert out["output_ids"] == ref[:first + 1]
    assert out["meta_info"]["finish_reason"] == {"type": "stop", "matched": ref[3]}
    # min_new_tokens masks stop tokens until reached
    out = engine.generate(input_ids=prompt, sampling_params={"max_new_tokens": 12, "temperature": 0,
                                                             "stop_token_ids": [ref[0]], "min_new_tokens": 2})
    assert len(out["output_ids"]) >= 2 and ref[0] not in out["output_ids"][:2]
    # stop string: generated text is trimmed before it
    full = engine.generate(input_ids=prompt, sampling_params={"max_new_tokens": 12, **GREEDY})["text"]
    needle = full[len(full) // 2:len(full) // 2 + 2]
    if needle.strip():
        out = engine.generate(input_ids=prompt, sampling_params={"max_new_tokens": 12, "temperature": 0,
                                                                 "stop": [needle]})
        assert out["meta_info"]["finish_reason"] == {"type": "stop", "matched": needle}
        assert needle not in out["text"] and full.startswith(out["text"])
    # max_new_tokens=0 prefills only (and caches the prompt)
    out = engine.generate(input_ids=prompt + [3], sampling_params={"max_new_tokens": 0})
    assert out["output_ids"] == [] and out["meta_info"]["finish_reason"] == {"type": "length", "length": 0}


def test_n_samples_share_prompt(engine):
    prompt = list(range(200, 240))
    outs = engine.generate(input_ids=prompt, sampling_params={"max_new_tokens": 4, "temperature": 1.0, "n": 3,
                                                              "ignore_eos": True})
    assert len(outs) == 3
    assert all(o["meta_info"]["cached_tokens"] == len(prompt) - 1 for o in outs)


def test_streaming_yields_increments(engine):
    prompt = [11, 12, 13, 14]
    chunks = list(engine.generate(input_ids=prompt, sampling_params={"max_new_tokens": 6, **GREEDY}, stream=True))
    whole = engine.generate(input_ids=prompt, sampling_params={"max_new_tokens": 6, **GREEDY})
    assert sum((c["output_ids"] for c in chunks), []) == whole["output_ids"]
    assert "".join(c["text"] for c in chunks) == whole["text"]
    assert chunks[-1]["meta_info"]["finish_reason"]["type"] == "length"


def test_long_prompt_fails_alone(engine):
    outs = engine.generate(input_ids=[[5] * 300, [5, 6, 7]], sampling_params={"max_new_tokens": 2, **GREEDY})
    reason = outs[0]["meta_info"]["finish_reason"]
    assert reason["type"] == "abort" and "context length" in reason["message"]
    assert outs[1]["meta_info"]["finish_reason"]["type"] == "length"


@pytest.mark.parametrize("params,param", [({"max_new_tokens": -1}, "max_new_tokens"), ({"top_p": 0.0}, "top_p"),
                                          ({"top_p": 1.5}, "top_p"), ({"regex": "("}, "regex"),
                                          ({"regex": "a+", "ebnf": 'root ::= "a"'}, "ebnf")])
def test_bad_sampling_params(engine, params, param):
    with pytest.raises(SamplingParamsError) as err:
        engine.generate(input_ids=[1, 2, 3], sampling_params=params)
    assert err.value.param == param


def test_unknown_architecture_and_missing_weights(tiny_llama, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_llama, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["architectures"] = ["FancyNewForCausalLM"]
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(EngineStartError, match="unsupported model architecture.*LlamaForCausalLM"):
        Engine(model_path=str(bad), device="cpu")
    nowts = tmp_path / "noweights"
    shutil.copytree(tiny_llama, nowts)
    os.remove(nowts / "model.safetensors")
    with pytest.raises(EngineStartError, match="no \\*.safetensors weight files"):
        Engine(model_path=str(nowts), device="cpu")


def test_dummy_load_format_runs_without_weights(tiny_llama, tmp_path):
    cfg_only = tmp_path / "shape"
    cfg_only.mkdir()
    shutil.copy(os.path.join(tiny_llama, "config.json"), cfg_only / "config.json")
    with Engine(model_path=str(cfg_only), device="cpu", load_format="dummy", skip_tokenizer_init=True) as e:
        out = e.generate(input_ids=[1, 2, 3], sampling_params={"max_new_tokens": 4, **GREEDY})
    assert len(out["output_ids"]) == 4 and out["text"] == ""


def test_half_precision_dtypes_run(tiny_llama):
    with Engine(model_path=tiny_llama, device="cpu", dtype="bfloat16") as e:
        out = e.generate(input_ids=[5, 6, 7], sampling_params={"max_new_tokens": 4, **GREEDY})
        assert e.get_server_info()["dtype"] == "bfloat16"
    assert len(out["output_ids"]) == 4


def test_kv_cache_that_cannot_fit_fails_with_numbers(tiny_llama):
    with pytest.raises(EngineStartError, match=r"--max-total-tokens \d+ needs [\d.]+ GiB"):
        Engine(model_path=tiny_llama, device="cpu", max_total_tokens=10**12)


def test_abandoned_stream_aborts_and_frees_kv(engine):
    import asyncio

    async def consume_two():
        agen = await engine.async_generate(input_ids=list(range(30, 60)),
                                           sampling_params={"max_new_tokens": 200, **GREEDY}, stream=True)
        got = [chunk async for chunk, _ in zip_count(agen, 2)]
        await agen.aclose()
        return got

    async def zip_count(agen, n):
        i = 0
        async for chunk in agen:
            yield chunk, i
            i += 1
            if i == n:
                return

    before = engine.get_server_info()["num_generated_tokens"]
    got = asyncio.run_coroutine_threadsafe(consume_two(), engine._loop).result()
    assert len(got) == 2
    import time

    deadline = time.time() + 10
    while time.time() < deadline:
        info = engine.get_server_info()
        if info["num_running_reqs"] == 0 and info["kv_protected_tokens"] == 0:
            break
        time.sleep(0.1)
    assert info["num_running_reqs"] == 0 and info["kv_protected_tokens"] == 0
    # The request stopped early instead of running to its 200 tokens.
    assert info["num_generated_tokens"] - before < 200


def test_malformed_input_ids_are_rejected_and_engine_survives(engine):
    with pytest.raises(ValueError, match="input_ids"):
        engine.generate(input_ids=["a", "b"], sampling_params={"max_new_tokens": 2})
    out = engine.generate(input_ids=[10**9], sampling_params={"max_new_tokens": 2})
    assert out["meta_info"]["finish_reason"]["type"] == "abort"
    assert "outside the vocabulary" in out["meta_info"]["finish_reason"]["message"]
    assert engine.generate(input_ids=[5, 6], sampling_params={"max_new_tokens": 2, **GREEDY})["output_ids"]
