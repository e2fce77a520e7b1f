"""Overlap scheduling's logic, forced on for the CPU (`TESSERA_OVERLAP_ON_CPU=1`; it is on by
default only on CUDA, where it pays). Greedy outputs, finish reasons and KV accounting must equal
the in-order scheduler's under retraction, chunked prefill, stop tokens and streaming.

(Named with the GPU engine tests it belongs to; it needs no GPU.)
"""

from __future__ import annotations

import random

import pytest

from engine import Engine
from engine.overlap import CPU_OVERLAP_ENV


def _run(path: str) -> tuple[list, dict]:
    rng = random.Random(0)
    prompts = [[rng.randrange(10, 300) for _ in range(rng.randrange(3, 40))] for _ in range(6)]
    params = [{"max_new_tokens": 20 + 3 * i, "temperature": 0, "ignore_eos": True} for i in range(6)]
    with Engine(model_path=path, device="cpu", random_seed=0, max_total_tokens=200, chunked_prefill_size=32,
                skip_tokenizer_init=True) as engine:
        outs = engine.generate(input_ids=prompts, sampling_params=params)
        stop_id = outs[0]["output_ids"][5]
        stopped = engine.generate(input_ids=prompts[0], sampling_params={
            "max_new_tokens": 30, "temperature": 0, "stop_token_ids": [stop_id]})
        streamed = [c["output_ids"] for c in engine.generate(
            input_ids=prompts[1], sampling_params=params[1], stream=True)]
        info = engine.get_server_info()
    results = [[o["output_ids"], o["meta_info"]["finish_reason"]] for o in outs]
    results.append([stopped["output_ids"], stopped["meta_info"]["finish_reason"]])
    results.append([sum(streamed, []), None])
    return results, info


def test_overlap_matches_in_order(tiny_llama: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CPU_OVERLAP_ENV, "0")
    expected, info_off = _run(tiny_llama)
    monkeypatch.setenv(CPU_OVERLAP_ENV, "1")
    got, info_on = _run(tiny_llama)
    assert info_off["num_overlapped_steps"] == 0
    assert info_on["num_overlapped_steps"] > 0, "overlap never chained a decode step"
    assert info_off["num_prefills_before_commit"] == 0
    assert info_on["num_prefills_before_commit"] > 0, "no prefill was queued behind a running decode step"
    assert info_on["num_retractions"] > 0, "the 200-token pool should force retraction"
    assert got == expected
    assert got[-2][1]["type"] == "stop" and len(got[-2][0]) == 6
    for info in (info_on, info_off):
        assert info["kv_protected_tokens"] == 0
        assert info["kv_free_tokens"] + info["kv_evictable_tokens"] == info["kv_total_tokens"]
