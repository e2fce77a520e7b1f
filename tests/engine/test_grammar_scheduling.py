"""Constrained requests inside the scheduler: they do not disturb unconstrained ones, a slow compile
does not hold up the batch, and outputs stay valid under retraction, chunked prefill, radix on/off,
TP=2 (gloo), overlap scheduling, n > 1, stop strings, logprobs, streaming and jump-forward."""

from __future__ import annotations

import json
import os
import re

import jsonschema
import pytest

from engine import Engine
from engine.grammar.compile_service import DELAY_ENV
from engine.overlap import CPU_OVERLAP_ENV

SLOW = "SLOWCOMPILE"
ITEM = {"type": "object", "properties": {"id": {"type": "integer", "minimum": 0, "maximum": 999},
                                         "ok": {"type": "boolean"}},
        "required": ["id", "ok"], "additionalProperties": False}
PAIR = {"type": "array", "items": ITEM, "minItems": 2, "maxItems": 2}
# Long fixed keys: what jump-forward skips.
RECORD = {"type": "object", "properties": {
    "customer_account_identifier": {"type": "integer", "minimum": 0, "maximum": 9},
    "is_active_premium_subscriber": {"type": "boolean"},
    "preferred_contact_channel_name": {"enum": ["email", "phone"]}},
    "required": ["customer_account_identifier", "is_active_premium_subscriber", "preferred_contact_channel_name"],
    "additionalProperties": False}


@pytest.fixture(scope="module")
def engine(tiny_llama):
    """Radix on, chunked prefill of 16, a KV pool small enough to retract, overlap on the CPU, and a
    fake compiler that takes 20 s for specs containing SLOW (timeout 6 s). The machine running CI may be
    busy, so every test keeps its token counts small."""
    saved = {k: os.environ.get(k) for k in (DELAY_ENV, CPU_OVERLAP_ENV)}
    os.environ[DELAY_ENV] = f"20:{SLOW}"
    os.environ[CPU_OVERLAP_ENV] = "1"
    try:
        with Engine(model_path=tiny_llama, device="cpu", random_seed=0, context_length=512, max_total_tokens=200,
                    chunked_prefill_size=16, grammar_compile_timeout=6.0) as e:
            yield e
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _valid(out: dict, schema: dict) -> None:
    assert out["meta_info"]["finish_reason"]["type"] == "stop", out
    jsonschema.validate(json.loads(out["text"]), schema)


def test_constrained_row_leaves_unconstrained_rows_unchanged(engine):
    prompts = [[10 + i, 20 + 2 * i, 30 + 3 * i] for i in range(32)]
    plain = {"max_new_tokens": 12, "temperature": 0, "ignore_eos": True}
    alone = engine.generate(input_ids=prompts[1:], sampling_params=plain)
    mixed = engine.generate(input_ids=prompts, sampling_params=[
        {"max_new_tokens": 80, "temperature": 1.0, "sampling_seed": 5, "json_schema": json.dumps(ITEM)}]
        + [plain] * 31)
    _valid(mixed[0], ITEM)
    assert [o["output_ids"] for o in mixed[1:]] == [o["output_ids"] for o in alone]


def test_slow_compile_does_not_delay_others_and_times_out_alone(engine):
    slow = {"max_new_tokens": 8, "regex": f"({SLOW})?[0-9]+"}
    plain = {"max_new_tokens": 8, "temperature": 0}
    outs = engine.generate(input_ids=[[5, 6, 7]] * 4, sampling_params=[slow, plain, plain,
                                                                       {**plain, "regex": "[a-c]{4}"}])
    reason = outs[0]["meta_info"]["finish_reason"]
    assert reason["type"] == "abort" and "timed out after 6 s" in reason["message"], reason
    assert reason["status_code"] == 400 and reason["param"] == "regex"
    assert 5.5 < outs[0]["meta_info"]["e2e_latency"] < 15
    for out in outs[1:]:
        assert out["meta_info"]["finish_reason"]["type"] in ("stop", "length")
        # Generous for a busy CI box: these take well under a second when it is idle.
        assert out["meta_info"]["e2e_latency"] < 4.5, "an unrelated request waited for the slow compile"
    assert re.fullmatch("[a-c]{4}", outs[3]["text"])
    assert engine.get_server_info()["num_grammar_queue_reqs"] == 0


def test_valid_under_retraction_chunking_and_n(engine):
    params = {"max_new_tokens": 80, "temperature": 1.0, "json_schema": json.dumps(PAIR)}
    before = engine.get_server_info()["num_retractions"]
    long_prompt = list(range(40, 90))  # several 16-token prefill chunks
    outs = engine.generate(input_ids=[long_prompt] + [[7 + i, 8, 9] for i in range(4)],
                           sampling_params=[{**params, "sampling_seed": i} for i in range(4)]
                           + [{**params, "n": 3}])
    for out in outs:
        _valid(out, PAIR)
    info = engine.get_server_info()
    assert info["num_retractions"] > before, "the 200-token pool should force retraction"
    assert info["kv_protected_tokens"] == 0


def test_stop_strings_logprobs_and_streaming(engine):
    schema = json.dumps(ITEM)
    out = engine.generate(input_ids=[5, 6], sampling_params={"max_new_tokens": 60, "temperature": 0,
                                                             "json_schema": schema, "stop": ['"ok"']})
    assert out["meta_info"]["finish_reason"] == {"type": "stop", "matched": '"ok"'}
    assert out["text"].startswith('{"id": ') and out["text"].endswith(", ")
    out = engine.generate(input_ids=[5, 6], sampling_params={"max_new_tokens": 60, "temperature": 0,
                                                             "json_schema": schema},
                          return_logprob=True, top_logprobs_num=2)
    _valid(out, ITEM)
    lps = out["meta_info"]["output_token_logprobs"]
    assert [t[1] for t in lps] == out["output_ids"] and all(t[0] <= 0 for t in lps)
    chained_before = engine.get_server_info()["num_overlapped_steps"]
    chunks = list(engine.generate(input_ids=[5, 6], sampling_params={"max_new_tokens": 60, "temperature": 0,
                                                                      "json_schema": schema}, stream=True))
    # Logprobs keep a request on the in-order path; without them the overlap scheduler chains the
    # constrained steps (mask filled while the next forward runs): same greedy text either way.
    assert "".join(c["text"] for c in chunks) == out["text"]
    assert engine.get_server_info()["num_overlapped_steps"] > chained_before


@pytest.fixture(scope="module")
def tp2_jump_engine(tiny_llama):
    with Engine(model_path=tiny_llama, device="cpu", random_seed=0, context_length=512, tp_size=2,
                disable_radix_cache=True, enable_jump_forward=True) as e:
        yield e


def _prefix_bias(engine: Engine, words: list[str]) -> dict[str, float]:
    """+30 on every token spelling a prefix of one of `words`: at each choice the grammar leaves
    open, the model then picks the same value whatever context precedes it."""
    tok = engine.tokenizer
    return {str(i): 30.0 for i in range(len(tok)) if (t := tok.decode([i])) and any(w.startswith(t) for w in words)}


def test_tp2_radix_off_jump_forward_valid_and_same_greedy_text(engine, tp2_jump_engine):
    sampled = tp2_jump_engine.generate(input_ids=[[5, 6, 7]] * 3, sampling_params=[
        {"max_new_tokens": 160, "temperature": 1.0, "sampling_seed": i, "json_schema": json.dumps(schema)}
        for i, schema in enumerate([PAIR, RECORD, RECORD])])
    for out, schema in zip(sampled, [PAIR, RECORD, RECORD]):
        _valid(out, schema)
    greedy = {"max_new_tokens": 160, "temperature": 0, "json_schema": json.dumps(RECORD),
              "logit_bias": _prefix_bias(engine, ["7", "false", "phone"])}
    with_jump = tp2_jump_engine.generate(input_ids=[5, 6, 7], sampling_params=greedy)
    without = engine.generate(input_ids=[5, 6, 7], sampling_params=greedy)
    assert with_jump["text"] == without["text"]
    assert json.loads(with_jump["text"]) == {"customer_account_identifier": 7, "is_active_premium_subscriber": False,
                                             "preferred_contact_channel_name": "phone"}
    info = tp2_jump_engine.get_server_info()
    assert info["jump_forward_steps_saved"] > 0 and info["tp_size"] == 2
    assert with_jump["meta_info"]["completion_tokens"] < without["meta_info"]["completion_tokens"]
